"""Driver cost at cluster scale, measured with a load generator: `python benchmarks/driver_scale.py
[--rows N ...] [--json]`.

SIMULATED results (no training) go through the real driver-side code a sweep runs (search/executor.py): the
Recorder with its ResultsTable and the study's journal, the RungScheduler (ASHA) and the JobSearcher with
its TrialMaker. For each size, a sweep with N rows already in it (short trials of EPOCHS epochs, packed
several per GPU) is built first, then:
- resume: what a driver does before its first new trial: the study opened and reconciled with the Parquet
  file, the results table loaded, ASHA's rungs replayed from the history, the trial maker's first proposal;
- per result: RESULTS further results from CONCURRENCY trials in flight, each timed from its arrival to the
  end of its processing (ASHA's decision, the Parquet row and the study's copy, a Parquet write when due,
  and the trial's end and the next trial's proposal it triggers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

    out = {m.key: float(rng.random()) if m.dtype.startswith("float") else "bf16" if m.dtype == "string" else 1
           for m in METRICS}
    pckh = 100 * (1 - np.exp(-epoch / 20)) * quality + rng.normal(0, 1)
    out.update(epoch=epoch, pckh=pckh, pckh_lo=pckh - 1, pckh_hi=pckh + 1, params=123456, groups="a | b",
               resolved_config=json.dumps({"grouping": "human", "clusters": None, "width": 64, "depth": 1,
                                           "stacks": 2, "seed": 0}), device_seconds_total=epoch * 1.0,
               node="sim", node_id="sim", git_commit="sim")
    return out


class FakeTrial:
    """What the scheduler and the recorder read of a Tune trial: its config (the searcher's suggestion)."""

    def __init__(self, config: dict):
        self.config = config


def build_history(root: Path, rows: int, rng) -> tuple[int, str]:
    """A sweep with `rows` rows of finished trials: Parquet parts and the Optuna journal, the latter in the
    live format (one line per operation, as a sweep writes it), via Optuna's own JournalStorage."""
    import optuna
    from optuna.storages.journal import BaseJournalBackend, JournalStorage
    from optuna.trial import TrialState

    from search import compat
    from search.results import ResultsTable
    from search.study import AppendJournal, trial_id_of

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
    n = trial_no = 0
    while n < rows:
        point = POINTS[trial_no % len(POINTS)]
        quality = 0.5 + 0.4 * rng.random()
        reach = min(EPOCHS, rows - n, int(rng.choice([GRACE, GRACE * RF, EPOCHS, EPOCHS])))
        study.enqueue_trial(point)
        t = study.ask()
        space(t)
        tid = trial_id_of(t.number)
        for k, v in {"trial_id": tid, "point": point, "seed": 0, "audited": False, "params": 1, "gflops": 0.1,
                     "stage": "search"}.items():
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
        for entry in backend.logs:
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")
    # The snapshot a live driver keeps beside the journal (search/compat.py: every 1,000 trials).
    compat.save_journal_snapshot(JournalStorage(AppendJournal(str(journal))))
    return trial_no, str(journal)


def measure(rows: int, seed: int = 0, keep: Path | None = None) -> dict:
    """keep: build the history once into keep/<rows>/ and copy it from there (the build takes minutes)."""
    from search import asha
    from search import study as study_mod
    from search.executor import Batch, JobSearcher, Recorder, RungScheduler
    from search.results import ResultsTable, read_results
    from search.study import TrialMaker, load_study, reconcile

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

        # ---- resume: what a driver does before its first new trial (search/run.py, Driver.stage)
        t0 = time.perf_counter()
        study = load_study(journal, "scale")
        df = read_results(root / "scale.parquet", ["trial_id", "epoch", "status", "stage", "pckh", "device_seconds",
                                                   "params", "gflops", "reported_at"])
        reconcile(study, df, "pckh", EPOCHS)
        table = ResultsTable(root / "scale.parquet", "scale", EPOCHS)
        t_state = time.perf_counter() - t0
        rungs = asha.Rungs(GRACE, RF, EPOCHS)
        asha.replay_frame(rungs, df, "pckh", "max")
        t_asha = time.perf_counter() - t0 - t_state
        maker = TrialMaker(study, space, "search", seed=0)
        batch = Batch("search", study, table, "pckh", "max", EPOCHS, [], maker.ask, {}, rungs)
        searcher, scheduler, recorder = JobSearcher(batch), RungScheduler(batch), Recorder(batch)
        first = FakeTrial(searcher.suggest("n0"))
        resume_s = time.perf_counter() - t0
        t_study = resume_s - t_state - t_asha

        # ---- per result
        recorder.on_trial_start(0, [], first)
        live = {first.config["_trial"]: [first, 0, 0.5 + 0.4 * rng.random()]}
        while len(live) < CONCURRENCY:
            tr = FakeTrial(searcher.suggest("n"))
            recorder.on_trial_start(0, [], tr)
            live[tr.config["_trial"]] = [tr, 0, 0.5 + 0.4 * rng.random()]
        order = list(live)
        times = []
        for i in range(RESULTS):
            tid = order[i % len(order)]
            tr, epoch, quality = live[tid]
            result = metrics(rng, epoch + 1, quality)
            t0 = time.perf_counter()
            decision = scheduler.on_trial_result(None, tr, result)
            recorder.on_trial_result(0, [], tr, result)
            if decision == "STOP" or epoch + 1 >= EPOCHS:
                recorder.on_trial_complete(0, [], tr)
                del live[tid]
                nt = FakeTrial(searcher.suggest("n"))
                recorder.on_trial_start(0, [], nt)
                new = nt.config["_trial"]
                live[new] = [nt, 0, 0.5 + 0.4 * rng.random()]
                order[order.index(tid)] = new
            else:
                live[tid][1] = epoch + 1
            recorder.on_step_end(0, [])  # the controller's step after the event: a Parquet write when due
            times.append(1000 * (time.perf_counter() - t0))
        recorder.on_experiment_end([])
    return {"rows": rows, "trials": n_trials, "median_ms": statistics.median(times),
            "p99_ms": float(np.percentile(times, 99)), "max_ms": max(times), "mean_ms": statistics.fmean(times),
            "resume_s": resume_s, "resume_state_s": t_state, "resume_asha_s": t_asha, "resume_first_trial_s": t_study,
            "build_s": build_s, "results": len(times), "simulated": True}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/driver_scale.py", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--json", action="store_true", help="one JSON object per size")
    p.add_argument("--keep", type=Path, help="build each size's history once into this directory and reuse it")
    a = p.parse_args(argv)
    if not a.json:
        print("SIMULATED results through the real driver code (recorder + results table + study + ASHA + "
              f"searcher); {EPOCHS} epochs per trial, {CONCURRENCY} in flight, {RESULTS} results timed per size")
        print(f"{'rows':>9} {'trials':>7} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'resume s':>9} "
              f"{'(state':>8} {'asha':>6} {'first)':>7}")
    for rows in a.rows:
        with contextlib.redirect_stdout(sys.stderr):  # the driver's own messages: stdout stays one JSON per line
            r = measure(rows, keep=a.keep)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['rows']:>9} {r['trials']:>7} {r['median_ms']:>10.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} "
                  f"{r['resume_s']:>9.2f} {r['resume_state_s']:>8.2f} {r['resume_asha_s']:>6.2f} "
                  f"{r['resume_first_trial_s']:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
