"""Run (or resume) a sweep: `python search/run.py --space search/spaces/branches.py`.

Two stages in one sweep, one Parquet file, one Optuna study:
1. search: Optuna proposes points (a GRID file: every point once), ASHA stops the weak ones early except an
   audited random fraction;
2. confirm: the best point of each grouping strategy plus the overall top-k are retrained to MAX_EPOCHS with
   paired seeds, never stopped early, so the report can say which differences are real.
A trial's config is the study's FIXED (+ --set and explicit command-line values) overlaid by its point; a
key both fixed and searched is refused before Ray starts. The sweep's state is the study and the Parquet
file: every run of this command, fresh or --resume, reads them and gives Tune the work they leave.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from pbn.config import ConfigError, resolve
from pbn.data.check import require_valid_data
from pbn.data.records import DataError
from search.mirror import Mirror, mirrored
from search.results import CONFIRM, SEARCH, ResultsError, read_results
from search.space import SpaceError, check_fixed, load_space
from search.study import StudyError
from search.sweep import Paths, Plan, SweepError, lock_sweep


class SweepInterrupted(RuntimeError):
    """A batch ended with trials unfinished (Ctrl-C / SIGTERM reached Tune)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python search/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--space", required=True, help="study file, e.g. search/spaces/branches.py")
    p.add_argument("--name", help="sweep name (default: the space file's name)")
    p.add_argument("--num-samples", type=int, help="search-stage trials (default: the space's NUM_SAMPLES)")
    p.add_argument("--max-epochs", type=int, help="epochs of a trial that is not stopped early (default: MAX_EPOCHS)")
    p.add_argument("--data", choices=("synthetic", "mpii", "lsp"),
                   help="dataset (default: the space's, else synthetic)")
    p.add_argument("--data-root", help="root holding mpii/ or lsp/ (docs/data.md)")
    p.add_argument("--preset", choices=("small", "paper"), help="model/optimizer preset (default: the space's)")
    p.add_argument("--confirm-top", type=int, help="confirm the overall top-K points besides the best point of "
                   "each grouping strategy (default: the space's CONFIRM_TOP)")
    p.add_argument("--confirm-max-seeds", type=int, help="cap on the paired seeds the confirmation race gives a point; "
                   "0 skips the confirmation stage (default: the space's CONFIRM_MAX_SEEDS)")
    p.add_argument("--margin", type=float, help="equivalence margin of the verdict, in metric points (default: the "
                   "space's MARGIN)")
    p.add_argument("--audit-fraction", type=float, help="fraction of search trials exempt from early stopping, to "
                   "audit it (default: the space's AUDIT_FRACTION)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs one trial holds (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs one trial holds; fractions share one "
                   "GPU (default: 0)")
    p.add_argument("--concurrency", type=int, help="trials at once (default: as many as resources allow)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="join the Ray cluster at this address "
                   "(default: $RAY_ADDRESS, else a live local cluster, else a new one)")
    p.add_argument("--storage", default=os.environ.get("PBN_STORAGE"),
                   help="URI or shared path for checkpoints and Tune's files (default: $PBN_STORAGE, else "
                   "<results>/tune)")
    p.add_argument("--results", default="results", help="directory of <name>.parquet (default: results)")
    p.add_argument("--optuna-storage", help="Optuna storage of the sweep's study: a .log file path (JournalStorage) "
                   "or a database URL (postgresql://..., sqlite:///...) (default: <results>/<name>.optuna.log)")
    p.add_argument("--seed", type=int, help="Optuna sampler seed, also placing the audited trials (default: 0; a "
                   "resume keeps the sweep's)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix one config value, e.g. --set synthetic_train=64 (JSON values); refused for a key "
                   "the space searches")
    p.add_argument("--verbose", action="store_true", help="also print Ray Tune's own progress tables")
    return p


def fixed_config(space, args) -> dict:
    """What every trial shares, as the user wrote it: FIXED, then --set, then the command-line values given
    explicitly. Unresolved, so each trial resolves it with its point (presets apply per trial)."""
    fixed = dict(space.fixed)
    if "epochs" in fixed:
        raise SpaceError(f"{space.path}: FIXED sets epochs, which is MAX_EPOCHS (or --max-epochs)")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpaceError(f"--set {item!r}: expected KEY=VALUE")
        try:
            fixed[key] = json.loads(value)
        except json.JSONDecodeError:
            fixed[key] = value
    if "epochs" in fixed:
        raise SpaceError("--set epochs: the epochs of a trial are MAX_EPOCHS (--max-epochs)")
    check_fixed(fixed, space.searched, "--set")
    given = {"data": args.data, "data_root": args.data_root, "preset": args.preset}
    cli = {k: v for k, v in given.items() if v is not None}
    check_fixed(cli, space.searched, "the command line")
    fixed.update(cli)
    fixed["epochs"] = args.max_epochs or space.max_epochs
    fixed.setdefault("threads", max(1, int(args.cpus_per_trial)))
    try:
        resolve({**fixed, **(space.initial[0] if space.initial else {})})
    except ConfigError as e:
        raise SpaceError(f"the fixed config (FIXED + --set + command line) is not valid: {e}") from None
    return fixed


def check_data(plan: Plan, space) -> None:
    """pbn.data.check on the data every trial reads (fixed values + the first point), once, before Ray starts."""
    require_valid_data(resolve({**plan.fixed, **(space.initial[0] if space.initial else {})}))


def new_plan(args, space, paths: Paths) -> Plan:
    """A new sweep's plan, every refusal made before anything is written or Ray starts."""
    if paths.plan.exists() or paths.parquet.exists():
        raise SweepError(f"sweep {paths.name!r} already exists ({paths.plan}); pass --resume to continue it, or "
                         "--name for a new sweep")
    fixed = fixed_config(space, args)
    if args.num_samples is not None and (space.grid or args.num_samples < 1):
        raise SweepError("--num-samples: a GRID study trains exactly its points" if space.grid else
                         f"--num-samples must be >= 1, got {args.num_samples}")
    num_samples = args.num_samples or space.num_samples
    audit = space.audit_fraction if args.audit_fraction is None else args.audit_fraction
    if not 0 <= audit <= 1:
        raise SweepError(f"--audit-fraction must be in [0, 1], got {audit}")
    confirm_top = space.confirm_top if args.confirm_top is None else args.confirm_top
    cap = space.confirm_max_seeds if args.confirm_max_seeds is None else args.confirm_max_seeds
    if confirm_top < 0 or cap < 0:
        raise SweepError("--confirm-top and --confirm-max-seeds must be >= 0")
    verdict = dict(space.verdict)
    if cap and not verdict:
        raise SweepError(f"{space.path}: a confirmation stage needs MARGIN in the study file (the equivalence margin "
                         "of the verdict, with its reason)")
    if args.margin is not None:
        verdict["margin"] = args.margin
    if cap:
        from search.space import verdict_design

        try:
            verdict_design(verdict, cap)
        except ValueError as e:
            raise SweepError(f"--confirm-max-seeds / --margin: {e}") from None
    grace, max_epochs = space.grace_period, fixed["epochs"]
    if grace is not None and grace >= max_epochs:
        print(f"note: --max-epochs {max_epochs} leaves no rung before the last epoch (GRACE_PERIOD {grace}): no "
              "early stopping in this sweep", file=sys.stderr)
        grace = None
    plan = Plan(name=paths.name, space=str(space.path), space_digest=space.digest, metric=space.metric,
                mode=space.mode, num_samples=num_samples, max_epochs=max_epochs, grace_period=grace,
                reduction_factor=space.reduction_factor if grace else None, fixed=fixed,
                seed=0 if args.seed is None else args.seed, audit_fraction=audit, confirm_top=confirm_top,
                confirm_max_seeds=cap, verdict=verdict, storage=args.storage, optuna_storage=args.optuna_storage,
                created=time.time(), argv=sys.argv[1:])
    check_data(plan, space)
    from search.study import refuse_existing

    refuse_existing(paths.optuna, paths.name)
    return plan


def resumed_plan(args, space, paths: Paths) -> Plan:
    """The sweep's plan, refusing a command line that would change it."""
    plan = paths.read_plan()
    if plan.space_digest != space.digest:
        raise SweepError(f"{args.space} changed since sweep {paths.name!r} started: a changed space is a new sweep "
                         "(use another --name)")
    given = {"--num-samples": (args.num_samples, plan.num_samples), "--audit-fraction": (args.audit_fraction,
             plan.audit_fraction), "--confirm-top": (args.confirm_top, plan.confirm_top), "--confirm-max-seeds":
             (args.confirm_max_seeds, plan.confirm_max_seeds), "--margin": (args.margin, plan.verdict.get("margin")),
             "--optuna-storage": (args.optuna_storage, plan.optuna_storage),
             "--storage": (args.storage, plan.storage), "--seed": (args.seed, plan.seed)}
    if args.storage is None and plan.storage is not None:  # PBN_STORAGE unset on a head that should have it
        raise SweepError(f"sweep {paths.name!r} keeps its state on {plan.storage}: resume with --storage "
                         f"{plan.storage} (or PBN_STORAGE set)")
    for flag, (value, have) in given.items():
        if value is not None and value != have:
            raise SweepError(f"{flag} {value} differs from sweep {paths.name!r}'s {have}: a changed sweep is a new "
                             "sweep (resume without it, or use another --name)")
    fixed = fixed_config(space, args)
    changed = sorted(k for k in {*fixed, *plan.fixed} if fixed.get(k) != plan.fixed.get(k))
    if changed:
        raise SweepError(f"the command line gives sweep {paths.name!r} a different fixed config ({changed}): a "
                         "changed sweep is a new sweep (resume with the same command plus --resume)")
    check_data(plan, space)
    return plan


def run(args) -> Path:
    from search.connect import check_cluster, connect
    from search.console import Console, TensorBoard
    from search.study import create_study, enqueue_points, load_study, study_exists

    space = load_space(args.space)
    paths = Paths(args.results, args.name or space.path.stem, args.storage, args.optuna_storage)
    lock = lock_sweep(paths.lock, paths.name)
    try:
        if args.resume and mirrored(paths) and Mirror(paths).behind():  # a fresh (or outdated) head
            Mirror(paths).restore()
        plan = resumed_plan(args, space, paths) if args.resume else new_plan(args, space, paths)
        paths = Paths(args.results, plan.name, plan.storage, plan.optuna_storage)
        mirror = Mirror(paths) if mirrored(paths) else None
        t0 = time.time()
        connect(args.address)  # a cluster that refuses this driver leaves no sweep behind
        _sigterm_as_interrupt()  # after ray.init, which installs a SIGTERM handler of its own (it aborts)
        waiting = check_cluster(args.cpus_per_trial, args.gpus_per_trial, paths.storage)
        if not args.resume:
            paths.write_plan(plan)  # first: a sweep whose study is missing is resumable (created below)
            if mirror is not None:
                mirror.put_plan()
        if not study_exists(paths.optuna, plan.name):
            study = create_study(paths.optuna, plan.name, plan.mode, plan.metric, plan.space_digest)
            # the study's INITIAL (or GRID) points first, as many as the search stage trains
            enqueue_points(study, space.initial[:plan.num_samples], plan.base_seed, plan.audit_fraction, plan.seed)
            if mirror is not None:
                mirror.sync()
        load_study(paths.optuna, plan.name, plan.mode, plan.metric, plan.space_digest)  # refuses a changed study
        console = Console(plan, verbose=args.verbose, concurrency=args.concurrency)
        measured = None
        if paths.parquet.exists():
            seconds = read_results(paths.parquet, ["epoch_seconds"])["epoch_seconds"].dropna()
            measured = float(seconds.median()) if len(seconds) else None
        console.plan_lines(space, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}, args.resume, measured)
        if waiting:
            console.line(waiting)
        Driver(plan, space, paths, args, [console, TensorBoard(paths.tensorboard, plan.metric)], mirror).run()
        console.closing(paths, time.time() - t0)
        return paths.parquet
    finally:
        os.close(lock)


class Driver:
    """A sweep's stages, each run as batches built from the study and the Parquet file."""

    def __init__(self, plan: Plan, space, paths: Paths, args, listeners: list, mirror=None):
        self.plan, self.space, self.paths, self.args = plan, space, paths, args
        self.listeners, self.console = listeners, listeners[0]
        self.mirror = mirror
        self.resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}

    def sync(self, force: bool = True) -> None:
        if self.mirror is not None:
            self.mirror.sync(force)

    def run(self) -> None:
        self.stage(SEARCH)
        if self.plan.confirm_max_seeds:
            self.race()

    def rows(self, columns: list[str] | None = None) -> pd.DataFrame:
        if not self.paths.parquet.exists():
            from search.results import SCHEMA

            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in SCHEMA.items() if columns is None or c in columns})
        return read_results(self.paths.parquet, columns)

    def race(self) -> None:
        """The confirmation race (search/verdict.py): paired seeds in rounds, each round every active point trained
        with the same seeds up to the next look; decisions recomputed from the Parquet rows after each round."""
        from search.analysis import race_state

        p = self.plan
        while True:
            state, points, reference = race_state(self.rows(), p)
            if state is None:
                self.console.line(f"no confirmation race: {len(points)} point(s) to confirm" + (
                    f", none matching the reference {p.verdict['reference']}" if len(points) > 1 else ""))
                return
            self.console.race_look(state, points, reference)
            if state.finished:
                return
            seeds = sorted({i for idx in state.next_seeds.values() for i in idx})
            self.enqueue_confirmation([(json.loads(pt), p.confirm_seed_base + i) for i in seeds
                                       for pt, idx in state.next_seeds.items() if i in idx])
            self.stage(CONFIRM)

    def enqueue_confirmation(self, jobs: list[tuple[dict, int]]) -> None:
        """Enqueue the (point, seed) jobs the study does not hold yet (seed-major: each seed pairs every point)."""
        from search.study import enqueue_job, load_study, point_key

        study = load_study(self.paths.optuna, self.plan.name)
        have = {(point_key(t.user_attrs["point"]), t.user_attrs["seed"]) for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("stage") == CONFIRM}
        for point, seed in jobs:
            if (point_key(point), seed) not in have:
                enqueue_job(study, CONFIRM, point, seed)
        self.sync()

    def stage(self, stage: str) -> None:
        """Run a stage's remaining work (nothing if it is done); SweepInterrupted if it ends unfinished."""
        from optuna.trial import TrialState

        from search import asha
        from search.executor import Batch, run_batch
        from search.results import ResultsTable
        from search.study import TrialMaker, complete_attrs, job_of, load_study, reconcile, tell_final
        from search.trainable import make_trainable

        p = self.plan
        study = load_study(self.paths.optuna, p.name)
        complete_attrs(study, self.space.space, p.base_seed, p.audit_fraction, p.seed)
        columns = ["trial_id", "epoch", "status", "stage", p.metric, "device_seconds", "params", "gflops",
                   "reported_at", "audited"]
        df = self.rows(columns)
        reconcile(study, df, p.metric, p.max_epochs)
        table = ResultsTable(self.paths.parquet, p.name, p.max_epochs,
                             on_write=self.mirror.put_part if self.mirror else None)
        mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("stage") == stage]
        continuing = [job_of(t) for t in mine if t.state == TrialState.RUNNING]
        rungs = None
        if stage == SEARCH and p.grace_period:
            rungs = asha.Rungs(p.grace_period, p.reduction_factor, p.max_epochs)
            stops = asha.replay_frame(rungs, df[df["stage"] == SEARCH], p.metric, p.mode)
            for job in [j for j in continuing if not j.audited and j.trial_id in stops]:
                # ASHA stopped it before the driver died, between the decision and the end reaching the disk
                table.end(job.trial_id, "TERMINATED")
                table.flush_trial(job.trial_id)
                info = table.trials[job.trial_id]
                value = table.rows.get(job.trial_id, {}).get(info.last, {}).get(p.metric)
                tell_final(study, job.number, "TERMINATED", value, info.last, p.max_epochs, stage)
                continuing.remove(job)
        self.sync()  # what complete_attrs, reconcile and the rejudging told the study
        maker = TrialMaker(study, self.space.space, stage, p.base_seed, p.audit_fraction, p.seed)
        new = max(0, p.num_samples - maker.made) if stage == SEARCH else maker.waiting
        if not continuing and not new:
            return
        reported = {j.trial_id: table.trials[j.trial_id].last for j in continuing if j.trial_id in table.trials}
        remaining = {"n": new}

        def ask():
            if remaining["n"] <= 0:
                return None
            remaining["n"] -= 1
            return maker.ask()

        # "auto" resolves per machine: the first trial pins it (unless the study compares precisions)
        auto = p.fixed.get("precision", "auto") == "auto" and "precision" not in self.space.searched
        batch = Batch(stage, study, table, p.metric, p.mode, p.max_epochs, continuing, ask, p.fixed, rungs,
                      self.listeners, self.sync, study.user_attrs.get("precision") if auto else None, auto)
        batch.emit("batch_started", stage, continuing, new, table)
        trainable = make_trainable(p.fixed, self.paths.checkpoints, reported, self.resources)
        run_batch(batch, trainable, num_samples=len(continuing) + new, storage_path=self.paths.tune,
                  name=f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}", concurrency=self.args.concurrency,
                  verbose=self.args.verbose)
        left = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
                if t.user_attrs.get("stage") == stage]
        if left or (stage == SEARCH and maker.made < p.num_samples):
            raise SweepInterrupted(f"{max(len(left), p.num_samples - maker.made)} {stage}-stage trials unfinished")


def _sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler's or `kill`'s) ends the sweep as Ctrl-C does: Tune stops its trials, the driver records
    nothing as finished that is not, and --resume continues. It is handed to whatever handles SIGINT then (Tune's
    handler while trials run)."""
    def forward(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forward)


def main(argv: list[str] | None = None) -> int:
    from search.connect import ConnectError

    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (SpaceError, SweepError, ConfigError, DataError, StudyError, ResultsError, ConnectError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SweepInterrupted) as e:
        print(f"\ninterrupted{': ' + str(e) if str(e) else ''}: resume with the same command plus --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
