"""Driver cost at cluster scale, measured with a load generator: `python benchmarks/driver_scale.py
[--rows N ...] [--json] [--snapshot-trials 100 1000 5000]`.

SIMULATED results (no training) go through the real driver-side code a sweep runs: ParquetCallback and
its ResultsTable, ReplayASHA and StudySearcher with its Optuna journal. For each size, a sweep with N rows
already in it (short trials of EPOCHS epochs, packed several per GPU) is built first, then:
- resume: what --resume does before the first new trial: the study opened and settled with the Parquet
  file (settle), the callback's table loaded, the searcher's first proposal (search), ASHA's rungs replayed;
- per result: RESULTS further results from CONCURRENCY trials in flight, each timed from its arrival to
  the end of its processing (the callback's Parquet write when due, ASHA's decision, the study's update,
  and the trial end and the next trial's suggestion it triggers).
With --snapshot-trials, also Tune's own experiment snapshot: real Tune on a simulated cluster
(ray.cluster_utils.Cluster) runs that many short trials (a stub trainable reporting this project's
metrics), and every snapshot is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPOCHS = 50  # epochs per trial: the small, packed trials that make results arrive fastest
CONCURRENCY = 64  # trials in flight (e.g. 16 GPUs x 4 packed trials)
RESULTS = 3000  # results timed per size
CONCURRENT_STUBS = 32  # stub trials in flight when timing Tune's snapshot (8: 139 s for 100 trials, 32: 79 s)
GRACE, RF = 5, 3  # ASHA rungs at epochs 5, 15, 45
POINTS = [{"grouping": g, "width": w, "depth": d} for g in ("shared", "per-part", "human") for w in (16, 32, 64)
          for d in (0, 1, 2)]


def space(trial):
    grouping = trial.suggest_categorical("grouping", ["shared", "per-part", "human", "mi"])
    if grouping == "mi":
        trial.suggest_int("clusters", 2, 8)
    trial.suggest_int("width", 16, 64, step=16)
    trial.suggest_int("depth", 0, 2)


def metrics(rng, epoch: int, quality: float) -> dict:
    """A result dict shaped like the trainable's (every pbn.metrics key), values simulated."""
    from pbn.metrics import METRICS

    out = {m.key: float(rng.random()) for m in METRICS}
    pckh = 100 * (1 - np.exp(-epoch / 20)) * quality + rng.normal(0, 1)
    out.update(epoch=epoch, pckh=pckh, pckh_lo=pckh - 1, pckh_hi=pckh + 1, params=123456, groups="a | b",
               resolved_config=json.dumps({"grouping": "human", "clusters": None, "width": 64, "depth": 1,
                                           "stacks": 2, "seed": 0}), device_seconds_total=epoch * 1.0,
               node="sim", node_id="sim", git_commit="sim")
    return out


class FakeTrial:
    """What the callback, ASHA and the searcher read of a Tune trial."""

    class _Meta:
        num_failures = 0

    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.run_metadata = trial_id, config, self._Meta()


def build_history(root: Path, rows: int, rng) -> tuple[int, str]:
    """A sweep with `rows` rows of finished trials: Parquet parts and the Optuna journal, the latter in the
    live format (one line per operation, as a sweep writes it), via Optuna's own JournalStorage."""
    import optuna
    from optuna.storages.journal import BaseJournalBackend, JournalStorage
    from optuna.trial import TrialState

    from search.results import ResultsTable

    class Lines(BaseJournalBackend):
        def __init__(self):
            self.logs = []

        def read_logs(self, log_number_from):
            return self.logs[log_number_from:]

        def append_logs(self, logs):
            self.logs.extend(logs)

    backend = Lines()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=JournalStorage(backend), study_name="scale", direction="maximize")
    study.set_user_attr("metric", "pckh")
    table = ResultsTable(root / "scale.parquet", "scale", EPOCHS)
    n = 0
    trial_no = 0
    while n < rows:
        point = POINTS[trial_no % len(POINTS)]
        quality = 0.5 + 0.4 * rng.random()
        reach = min(EPOCHS, rows - n, int(rng.choice([GRACE, GRACE * RF, EPOCHS, EPOCHS])))
        t = study.ask()
        t._fixed_params = dict(point)  # as StudySearcher pins a point (optuna 5.0)
        space(t)
        tid = f"h{trial_no:06d}"
        for k, v in {"trial_id": tid, "stage": "search", "seed": 0, "point": point, "audited": False,
                     "params": 1, "gflops": 0.1}.items():
            t.set_user_attr(k, v)
        meta = {"stage": "search", "seed": 0, "point": json.dumps(point, sort_keys=True), "audited": False}
        for e in range(1, reach + 1):
            m = metrics(rng, e, quality)
            t.report(m["pckh"], e)
            table.add(tid, m, meta=meta)
        t.set_user_attr("device_seconds", float(reach))
        study.tell(t, m["pckh"] if reach == EPOCHS else None,
                   state=TrialState.COMPLETE if reach == EPOCHS else TrialState.PRUNED)
        table.end(tid, "TERMINATED")
        table.flush(force=False)
        n += reach
        trial_no += 1
    table.flush()
    journal = root / "scale.optuna.log"
    with open(journal, "w") as f:
        for log in backend.logs:
            f.write(json.dumps(log, separators=(",", ":")) + "\n")
    # The snapshot a live driver keeps beside the journal (JournalStorage saves one every 100 trials).
    from search.study import AppendJournal

    storage = JournalStorage(AppendJournal(str(journal)))
    storage._backend.save_snapshot(pickle.dumps(storage._replay_result))
    return trial_no, str(journal)


def measure(rows: int, seed: int = 0, keep: Path | None = None) -> dict:
    """keep: build the history once into keep/<rows>/ and copy it from there (the build takes minutes)."""
    from search import study as study_mod
    from search.callbacks import ParquetCallback
    from search.run import Sweep, settle
    from search.study import load_study
    from search.tune_ext import ReplayASHA, StudySearcher

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        pristine = keep / str(rows) if keep else None
        if pristine and (pristine / "trials.txt").exists():
            shutil.copytree(pristine, root, dirs_exist_ok=True)
            n_trials, journal = int((root / "trials.txt").read_text()), str(root / "scale.optuna.log")
        else:
            n_trials, journal = build_history(root, rows, rng)
            (root / "trials.txt").write_text(str(n_trials))
            if pristine:
                shutil.copytree(root, pristine, dirs_exist_ok=True)
        build_s = time.perf_counter() - t0
        study_mod._STORAGES.clear()  # a resumed driver is a new process: nothing cached

        # ---- resume: what --resume does before the first new trial
        t0 = time.perf_counter()
        sweep = Sweep(str(root), "scale", None, journal)
        sweep.state = {"metric": "pckh", "max_epochs": EPOCHS, "fixed": {}}
        settle(load_study(journal, "scale"), sweep, "search")  # the study and the Parquet file made to agree
        callback = ParquetCallback(str(root / "scale.parquet"), "scale", EPOCHS, {}, "search")
        callback.setup()
        t_parquet = time.perf_counter() - t0
        asha = ReplayASHA(str(root / "scale.parquet"), time_attr="epoch", max_t=EPOCHS, grace_period=GRACE,
                          reduction_factor=RF, metric="pckh", mode="max")
        searcher = StudySearcher(space=space, metric="pckh", mode="max", max_epochs=EPOCHS, storage_url=journal,
                                 study_name="scale", stage="search", results=str(root / "scale.parquet"), seed=0)
        first = FakeTrial("n000000", searcher.suggest("n000000"))  # opens the study: the journal replay
        t_study = time.perf_counter() - t0 - t_parquet
        asha.on_trial_add(None, first)  # replays the Parquet history into the rungs
        resume_s = time.perf_counter() - t0
        t_asha = resume_s - t_parquet - t_study

        # ---- per result
        live = {first.trial_id: [first, 0, 0.5 + 0.4 * rng.random()]}
        callback.on_trial_start(0, [], first)
        made, times, flush_ms = 1, [], []
        while len(live) < CONCURRENCY:
            tid = f"n{made:06d}"
            tr = FakeTrial(tid, searcher.suggest(tid))
            asha.on_trial_add(None, tr)
            callback.on_trial_start(0, [], tr)
            live[tid] = [tr, 0, 0.5 + 0.4 * rng.random()]
            made += 1
        order = list(live)
        for i in range(RESULTS):
            tid = order[i % len(order)]
            if tid not in live:
                continue
            tr, epoch, quality = live[tid]
            result = metrics(rng, epoch + 1, quality)
            t0 = time.perf_counter()
            decision = asha.on_trial_result(None, tr, result)
            if decision == "CONTINUE":
                searcher.on_trial_result(tid, result)
            callback.on_trial_result(0, [], tr, result)
            if decision == "STOP":
                searcher.on_trial_complete(tid, result)
                callback.on_trial_complete(0, [], tr)
                del live[tid]
                new = f"n{made:06d}"
                made += 1
                nt = FakeTrial(new, searcher.suggest(new))
                asha.on_trial_add(None, nt)
                callback.on_trial_start(0, [], nt)
                live[new] = [nt, 0, 0.5 + 0.4 * rng.random()]
                order[order.index(tid)] = new
            else:
                live[tid][1] = epoch + 1
            f0 = time.perf_counter()
            callback.on_step_end(0, [])  # the controller's step after the event: a Parquet write when due
            end = time.perf_counter()
            flush_ms.append(1000 * (end - f0))
            times.append(1000 * (end - t0))
        callback.on_experiment_end([])
    return {"rows": rows, "trials": n_trials, "median_ms": statistics.median(times),
            "p99_ms": float(np.percentile(times, 99)), "max_ms": max(times), "mean_ms": statistics.fmean(times),
            "resume_s": resume_s, "resume_settle_s": t_parquet, "resume_searcher_s": t_study, "resume_asha_s": t_asha,
            "build_s": build_s, "results": len(times), "simulated": True}


# --------------------------------------------------------------------------- Tune's experiment snapshot
def snapshot_cost(trials: int) -> dict:
    """Real Tune, a simulated 4-node cluster, `trials` short trials (CONCURRENT_STUBS at a time, actors
    reused) of a stub trainable reporting this project's metrics three times, under the driver's snapshot
    period (tune_ext.limit_snapshot_share): every experiment snapshot timed (TuneController.checkpoint),
    wall and CPU, against the driver's wall time."""
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster
    from ray.tune.execution import tune_controller

    timings, driver = [], [time.perf_counter()]
    original = tune_controller.TuneController.checkpoint

    def timed(self, force: bool = False, wait: bool = False):
        t0, c0 = time.perf_counter(), time.thread_time()
        before = self._checkpoint_manager._last_save_time
        original(self, force=force, wait=wait)
        if self._checkpoint_manager._last_save_time != before:  # a snapshot was taken
            # wall time (what the driver waits, on 2 cores shared with the stub trials) and the driver thread's
            # CPU time (the snapshot's own work, free of that contention)
            timings.append((time.perf_counter() - t0, len(self._trials), force, time.thread_time() - c0))

    tune_controller.TuneController.checkpoint = timed
    from search.tune_ext import limit_snapshot_share

    limit_snapshot_share()  # the driver's period policy (search/run.py)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(4):
        cluster.add_node(num_cpus=8, num_gpus=1)
    try:
        ray.init(address=cluster.address, include_dashboard=False, configure_logging=False, log_to_driver=False)
        rng = np.random.default_rng(0)
        template = {k: v for k, v in metrics(rng, 1, 0.5).items() if k != "resolved_config"}

        def stub(config):
            for e in range(1, 4):
                tune.report({**template, "epoch": e, "pckh": e * config["q"]})

        with tempfile.TemporaryDirectory() as tmp:
            driver[0] = time.perf_counter()
            tune.Tuner(tune.with_resources(stub, {"cpu": 0.25}),
                       param_space={"q": tune.uniform(0, 1)},
                       tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True,
                                                   max_concurrent_trials=CONCURRENT_STUBS),
                       run_config=tune.RunConfig(storage_path=tmp, name="snap", verbose=0)).fit()
            wall = time.perf_counter() - driver[0]
    finally:
        tune_controller.TuneController.checkpoint = original
        ray.shutdown()
        cluster.shutdown()
    secs = [t for t, _, _, _ in timings]
    periodic = [(t, n, cpu) for t, n, force, cpu in timings if not force]  # on the period, while trials run
    final = sum(t for t, _, force, _ in timings if force)  # Tune's forced snapshot as the experiment ends
    return {"trials": trials, "snapshots": len(secs), "snapshot_s_median": statistics.median(secs),
            "snapshot_s_max": max(secs), "snapshot_s_total": sum(secs), "wall_s": wall,
            "share": sum(secs) / wall, "share_periodic": sum(t for t, _, _ in periodic) / wall, "final_s": final,
            "last_periodic_s": periodic[-1][0] if periodic else float("nan"),
            "last_periodic_cpu_s": periodic[-1][2] if periodic else float("nan"),
            "last_periodic_trials": periodic[-1][1] if periodic else 0,
            "cpu_s_per_trial": [round(cpu / n * 1000, 3) for _, n, cpu in periodic if n],  # ms, each snapshot
            "period": os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", "auto")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/driver_scale.py", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--snapshot-trials", type=int, nargs="*", default=[],
                   help="also time Tune's experiment snapshot with this many short trials (e.g. 100 1000 5000)")
    p.add_argument("--json", action="store_true", help="one JSON object per size")
    p.add_argument("--keep", type=Path, help="build each size's history once into this directory and reuse it")
    a = p.parse_args(argv)
    if not a.json:
        print("SIMULATED results through the real driver code (callback + results table + ASHA + searcher); "
              f"{EPOCHS} epochs per trial, {CONCURRENCY} in flight, {RESULTS} results timed per size")
        print(f"{'rows':>9} {'trials':>7} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'resume s':>9} "
              f"{'(settle':>9} {'search':>7} {'asha)':>6}")
    for rows in a.rows:
        with contextlib.redirect_stdout(sys.stderr):  # the driver's own messages: stdout stays one JSON per line
            r = measure(rows, keep=a.keep)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['rows']:>9} {r['trials']:>7} {r['median_ms']:>10.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} "
                  f"{r['resume_s']:>9.2f} {r['resume_settle_s']:>9.2f} {r['resume_searcher_s']:>7.2f} "
                  f"{r['resume_asha_s']:>6.2f}", flush=True)
    for n in a.snapshot_trials:
        with contextlib.redirect_stdout(sys.stderr):
            r = snapshot_cost(n)
        print(json.dumps(r) if a.json else
              f"Tune snapshot, {n} trials: {r['snapshots']} snapshots, median {r['snapshot_s_median']:.3f} s, max "
              f"{r['snapshot_s_max']:.3f} s, {100 * r['share']:.1f}% of {r['wall_s']:.0f} s driver wall "
              f"({100 * r['share_periodic']:.1f}% periodic, final forced one {r['final_s']:.2f} s; the last periodic "
              f"one {r['last_periodic_s']:.2f} s wall, {r['last_periodic_cpu_s']:.2f} s CPU with "
              f"{r['last_periodic_trials']} trials; CPU ms per trial in each periodic snapshot "
              f"{r['cpu_s_per_trial']}) "
              f"(TUNE_GLOBAL_CHECKPOINT_S={r['period']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
