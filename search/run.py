"""Run (or resume) a sweep: `python search/run.py --space search/spaces/branches.py`.

Two stages in one sweep, one Parquet file, one Optuna study:
1. search: Optuna proposes points (a GRID file: every point once), ASHA stops the weak ones early except
   an audited random fraction;
2. confirm: the best point of each grouping strategy plus the overall top-k are retrained to MAX_EPOCHS
   with the same seeds (paired), never stopped early, so the report can say which differences are real.
The driver knows nothing about which names a study searches: a trial's config is the study's FIXED
(+ --set and explicit command-line values) overlaid by the sampled point; a key both fixed and searched
is refused before Ray starts. Re-running with --resume continues an interrupted sweep in either stage.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import posixpath
import socket
import sys
import time
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from pbn.atomic import atomic_write_text
from pbn.config import ConfigError, resolve
from pbn.data.check import require_valid_data
from pbn.data.records import DataError
from search.results import CONFIRM, ENDED, SEARCH, ResultsError, read_results
from search.space import SpaceError, check_fixed, load_space
from search.study import StudyError

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
# Tune's experiment snapshot on an adaptive period: at least 10 s and 39 x the last snapshot's duration
# (search/tune_ext.limit_snapshot_share, applied before each stage).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "auto")
CONFIRM_SEED_BASE = 1000  # confirmation seeds: base+1000, +1001, ... never a seed the search stage trained


class SweepError(RuntimeError):
    """The sweep cannot start or resume as asked."""


class SweepInterrupted(RuntimeError):
    """fit() returned with trials unfinished (Ctrl-C / SIGINT / SIGUSR1 reached Tune)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python search/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--space", required=True, help="study file, e.g. search/spaces/branches.py")
    p.add_argument("--name", help="sweep name (default: the space file's name)")
    p.add_argument("--num-samples", type=int, help="search-stage trials (default: the space's NUM_SAMPLES)")
    p.add_argument("--max-epochs", type=int, help="epochs of a trial that is not stopped early (default: MAX_EPOCHS)")
    p.add_argument("--data", choices=("synthetic", "mpii", "lsp"),
                   help="dataset (default: the space's, else synthetic)")
    p.add_argument("--data-root", help="root holding mpii/ or lsp/ (README, 'Data layout')")
    p.add_argument("--preset", choices=("small", "paper"), help="model/optimizer preset (default: the space's)")
    p.add_argument("--confirm-top", type=int, help="confirm the overall top-K points besides the best point of "
                   "each grouping strategy (default: the space's CONFIRM_TOP)")
    p.add_argument("--confirm-seeds", type=int, help="paired seeds per confirmed point; 0 skips the confirmation "
                   "stage (default: the space's CONFIRM_SEEDS)")
    p.add_argument("--audit-fraction", type=float, help="fraction of search trials exempt from early stopping, to "
                   "audit it (default: the space's AUDIT_FRACTION)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share one GPU")
    p.add_argument("--concurrency", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="join a running Ray cluster")
    p.add_argument("--storage", default=os.environ.get("PBN_STORAGE"),
                   help="URI or shared path for trial checkpoints and sweep state (default: $PBN_STORAGE, "
                   "else <results>/tune)")
    p.add_argument("--results", default="results", help="directory of <name>.parquet")
    p.add_argument("--optuna-storage", help="Optuna storage of the sweep's study: a .log file path (JournalStorage) "
                   "or a database URL (postgresql://..., sqlite:///...) (default: <results>/<name>.optuna.log)")
    p.add_argument("--seed", type=int, default=0, help="Optuna sampler seed (also places the audited trials)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix one config value, e.g. --set synthetic_train=64 (JSON values); refused for a key "
                   "the space searches")
    return p


def fixed_config(space, args) -> dict:
    """What every trial shares, as the user wrote it: FIXED, then --set, then the command-line values
    given explicitly. Unresolved, so each trial resolves it with its point (presets apply per trial)."""
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


def _check_cluster(cpus: float, gpus: float, storage: str) -> None:
    """Refuse, before any trial starts, what would otherwise fail on workers or pend forever."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    problem = storage_problem({n["NodeManagerAddress"] for n in nodes}, storage)
    if problem:
        raise SweepError(problem)
    if not any(n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus for n in nodes):
        have = [(n["NodeManagerAddress"], n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0)) for n in nodes]
        raise SweepError(f"no node can ever run a trial with {cpus} CPU and {gpus} GPU; nodes (address, CPU, GPU):"
                         f" {have}")


def storage_problem(hosts: set[str], storage: str) -> str | None:
    """Why workers on `hosts` could not reach `storage`, or None. A URI or a network file system is
    shared; a local path is shared only when every node is on one machine (e.g. a simulated cluster)."""
    if len(hosts) <= 1 or "://" in storage or _is_network_fs(storage):
        return None
    return (f"storage {storage!r} is a local path but the cluster spans {len(hosts)} machines: workers cannot "
            "reach it. Use --storage s3://... (or set PBN_STORAGE), or a shared NFS path")


def _is_network_fs(path: str) -> bool:
    """Whether `path` lies on a network file system (per /proc/mounts), which other machines can share."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return False
    target = os.path.realpath(path)
    best = max((m for m in mounts if target == m[0] or target.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is not None and best[1].split(".")[0] in ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs",
                                                           "beegfs", "ceph", "fuse", "glusterfs")


def usable_snapshot(exp_dir: str) -> bool:
    """Whether Tune can restore `exp_dir` (local path or URI) from an intact experiment snapshot.
    Tuner.can_restore only checks tuner.pkl, written before any trial: restoring from it alone silently
    starts an empty run. Tune writes experiment_state-*.json non-atomically and restarts the whole
    experiment from scratch if the newest one does not parse. Then every snapshot file is moved aside (an
    older experiment state would not match the newest searcher state) and the stage starts afresh from the
    study and the Parquet file, which know every trial (_run_stage)."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(exp_dir) if "://" in exp_dir else (pafs.LocalFileSystem(), exp_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError):
        return False
    states = sorted((i.path for i in infos if i.base_name.startswith("experiment_state-")), reverse=True)
    if not states:
        return False
    try:
        with fs.open_input_stream(states[0]) as f:
            json.loads(f.read())
        return True
    except (OSError, ValueError):
        print(f"{states[0]}: unreadable experiment snapshot; the stage restarts from the study", file=sys.stderr)
        for i in infos:
            if i.base_name.startswith(("experiment_state-", "searcher-state-", "search_gen_state-")):
                fs.move(i.path, posixpath.join(posixpath.dirname(i.path), "torn-" + i.base_name))
        return False


def lock_sweep(path: Path, name: str) -> int:
    """Take an exclusive lock on `path` (returns its fd: close it to release); the OS releases it on any
    exit, SIGKILL included. A second driver on the same sweep would run its trials twice and interleave its
    Parquet writes, so it is refused, naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SweepError(f"sweep {name!r} is already running ({holder}; lock {path}): wait for it, or stop it "
                         "and then --resume") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    return fd


class Sweep:
    """A sweep's paths and its state file (results/<name>.sweep.json): everything a resume must reuse."""

    def __init__(self, results: str, name: str, storage: str | None, optuna_storage: str | None):
        results_dir = Path(results).resolve()
        self.name = name
        self.parquet = results_dir / f"{name}.parquet"
        self.state_path = results_dir / f"{name}.sweep.json"
        self.lock_path = results_dir / f"{name}.lock"
        self.storage = storage or str(results_dir / "tune")
        self.optuna = optuna_storage or str(results_dir / f"{name}.optuna.log")
        self.state: dict = {}

    def exp_dir(self, stage: str) -> str:
        return os.path.join(self.storage, self.name if stage == SEARCH else f"{self.name}-{stage}")

    def save(self) -> None:
        atomic_write_text(self.state_path, json.dumps(self.state, indent=2))


def check_data(fixed: dict, space) -> None:
    """pbn.data.check on the data every trial of the sweep reads (fixed values + the first point), once, in
    the driver, before Ray starts."""
    require_valid_data(resolve({**fixed, **(space.initial[0] if space.initial else {})}))


def _plan_sweep(args, space, sweep: Sweep) -> dict:
    """A new sweep's state, every refusal made before anything is written or Ray starts."""
    if sweep.state_path.exists() or sweep.parquet.exists():
        raise SweepError(f"sweep {sweep.name!r} already exists ({sweep.state_path}); pass --resume to continue "
                         "it, or --name for a new sweep")
    fixed = fixed_config(space, args)
    if args.num_samples is not None and (space.grid or args.num_samples < 1):
        raise SweepError("--num-samples: a GRID study trains exactly its points" if space.grid else
                         f"--num-samples must be >= 1, got {args.num_samples}")
    audit = space.audit_fraction if args.audit_fraction is None else args.audit_fraction
    if not 0 <= audit <= 1:
        raise SweepError(f"--audit-fraction must be in [0, 1], got {audit}")
    confirm_top = space.confirm_top if args.confirm_top is None else args.confirm_top
    confirm_seeds = space.confirm_seeds if args.confirm_seeds is None else args.confirm_seeds
    if min(confirm_top, confirm_seeds) < 0:
        raise SweepError("--confirm-top and --confirm-seeds must be >= 0")
    grace, max_epochs = space.grace_period, fixed["epochs"]
    if grace is not None and grace >= max_epochs:
        print(f"note: --max-epochs {max_epochs} leaves no rung before the last epoch (GRACE_PERIOD {grace}): "
              "no early stopping in this sweep", file=sys.stderr)
        grace = None
    check_data(fixed, space)
    from search.study import refuse_existing

    refuse_existing(sweep.optuna, sweep.name)
    return {
        "name": sweep.name, "space": str(space.path), "space_digest": space.digest, "metric": space.metric,
        "mode": space.mode, "num_samples": args.num_samples or space.num_samples, "max_epochs": max_epochs,
        "grace_period": grace, "reduction_factor": space.reduction_factor if grace else None, "fixed": fixed,
        "seed": args.seed, "audit_fraction": audit, "confirm_top": confirm_top, "confirm_seeds": confirm_seeds,
        "storage": sweep.storage, "optuna_storage": sweep.optuna, "created": time.time(), "argv": sys.argv[1:],
        "confirm_jobs": None,
    }


def _resume_sweep(args, space, sweep: Sweep) -> None:
    if not sweep.state_path.exists():
        raise SweepError(f"no sweep named {sweep.name!r} to resume ({sweep.state_path} not found)")
    st = sweep.state = json.loads(sweep.state_path.read_text())
    if st["space_digest"] != space.digest:
        raise SweepError(f"{args.space} changed since sweep {sweep.name!r} started: a changed space is a new sweep "
                         "(use another --name)")
    given = {"--num-samples": (args.num_samples, "num_samples"), "--audit-fraction": (args.audit_fraction,
             "audit_fraction"), "--confirm-top": (args.confirm_top, "confirm_top"), "--confirm-seeds":
             (args.confirm_seeds, "confirm_seeds"), "--optuna-storage": (args.optuna_storage, "optuna_storage"),
             "--storage": (args.storage, "storage"), "--seed": (args.seed, "seed")}
    for flag, (value, key) in given.items():
        if value is not None and value != st[key]:
            raise SweepError(f"{flag} {value} differs from sweep {sweep.name!r}'s {st[key]}: a changed sweep is a "
                             "new sweep (resume without it, or use another --name)")
    fixed = fixed_config(space, args)  # --set, --data, --data-root, --preset, --max-epochs, --cpus-per-trial
    changed = sorted(k for k in {*fixed, *st["fixed"]} if fixed.get(k) != st["fixed"].get(k))
    if changed:
        raise SweepError(f"the command line gives sweep {sweep.name!r} a different fixed config ({changed}): a "
                         "changed sweep is a new sweep (resume with the same command plus --resume)")
    sweep.storage, sweep.optuna = st["storage"], st["optuna_storage"]
    check_data(fixed, space)
    from search.study import create_study, load_study, study_exists

    if not study_exists(sweep.optuna, sweep.name):  # killed between saving the state and creating the study
        create_study(sweep.optuna, sweep.name, space.mode, space.metric, space.digest)
    load_study(sweep.optuna, sweep.name, space.mode, space.metric, space.digest)  # refuses a changed study


def run(args) -> Path:
    from search.connect import connect
    from search.study import create_study

    space = load_space(args.space)
    sweep = Sweep(args.results, args.name or space.path.stem, args.storage, args.optuna_storage)
    lock = lock_sweep(sweep.lock_path, sweep.name)
    try:
        if args.resume:
            _resume_sweep(args, space, sweep)
        else:
            plan = _plan_sweep(args, space, sweep)
        t0 = time.time()
        connect(args.address)  # a cluster that refuses this driver leaves no sweep behind
        _check_cluster(args.cpus_per_trial, args.gpus_per_trial, sweep.storage)
        if not args.resume:
            sweep.state = plan
            sweep.save()  # first: a sweep whose study is missing is resumable (_resume_sweep creates it)
            create_study(sweep.optuna, sweep.name, space.mode, space.metric, space.digest)
        _run(args, space, sweep)
        _print_summary(sweep, time.time() - t0)
        return sweep.parquet
    finally:
        os.close(lock)


def _run(args, space, sweep: Sweep) -> None:
    st = sweep.state
    resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    if st["confirm_jobs"] is None:  # the search stage has not finished
        _run_stage(SEARCH, args, space, sweep, resources)
        st["confirm_jobs"] = confirm_jobs(read_results(sweep.parquet), st)
        sweep.save()
    if st["confirm_jobs"]:
        _run_stage(CONFIRM, args, space, sweep, resources)


def confirm_jobs(df, st: dict) -> list[dict]:
    """(point, seed) pairs of the confirmation stage, seed-major so that every finished seed pairs all points:
    the best point of each grouping strategy plus the overall top-k, with seeds base + CONFIRM_SEED_BASE + i
    (the search stage trains base, and base + n for the n-th repeat of a point)."""
    from search import analysis

    if st["confirm_seeds"] <= 0:
        return []
    ranking = analysis.search_ranking(df, st["metric"], st["mode"], st["grace_period"], st["reduction_factor"],
                                      st["max_epochs"])
    points = analysis.confirm_points(ranking, st["confirm_top"])
    base = int(st["fixed"].get("seed", 0))
    return [{"point": json.loads(p), "seed": base + CONFIRM_SEED_BASE + i} for i in range(st["confirm_seeds"])
            for p in points]


def _run_stage(stage: str, args, space, sweep: Sweep, resources: dict) -> None:
    from ray.tune import CheckpointConfig, ExperimentAnalysis, FailureConfig, RunConfig, TuneConfig, Tuner

    from search.callbacks import ParquetCallback
    from search.results import ResultsTable
    from search.study import load_study
    from search.trainable import make_trainable, trial_dirname_of
    from search.tune_ext import ReplayASHA, StudySearcher, limit_snapshot_share, sweep_trial_id

    limit_snapshot_share()
    st = sweep.state
    exp_dir, max_epochs = sweep.exp_dir(stage), st["max_epochs"]
    num_samples = st["num_samples"] if stage == SEARCH else len(st["confirm_jobs"])
    study = load_study(sweep.optuna, sweep.name)
    ended, reported = settle(study, sweep, stage)
    trainable = make_trainable(st["fixed"], ended, reported, resources)
    if usable_snapshot(exp_dir):
        print(f"resuming the {stage} stage of sweep {sweep.name!r} from {exp_dir}", flush=True)
        # resume_errored: a trial the interruption itself left errored continues. Trials the Parquet file
        # records as ERROR (retries used up before the interruption) are in `ended` and stay as they are.
        tuner = Tuner.restore(exp_dir, trainable, resume_unfinished=True, resume_errored=True)
    else:
        # A new stage, or one whose snapshot never got written: the study knows every trial of the stage
        # (asked before Tune created it); those the Parquet file records as ended stay so, the others are
        # adopted by the new trials (tune_ext.StudySearcher).
        done = sum(t.user_attrs.get("trial_id") in ended for t in study.get_trials(deepcopy=False)
                   if t.user_attrs.get("stage") == stage)
        if done >= num_samples:
            return
        searcher = StudySearcher(
            space=space.space, metric=st["metric"], mode=st["mode"], max_epochs=max_epochs,
            storage_url=sweep.optuna, study_name=sweep.name, stage=stage, results=str(sweep.parquet), seed=st["seed"],
            base_seed=int(st["fixed"].get("seed", 0)), initial=space.initial, jobs=st["confirm_jobs"],
            audit_fraction=st["audit_fraction"])
        scheduler = None
        if stage == SEARCH and st["grace_period"]:
            scheduler = ReplayASHA(str(sweep.parquet), time_attr="epoch", max_t=max_epochs,
                                   grace_period=st["grace_period"], reduction_factor=st["reduction_factor"])
        tuner = Tuner(
            trainable,
            tune_config=TuneConfig(metric=st["metric"], mode=st["mode"], search_alg=searcher, scheduler=scheduler,
                                   num_samples=num_samples - done, max_concurrent_trials=args.concurrency,
                                   reuse_actors=True, trial_dirname_creator=trial_dirname_of),
            run_config=RunConfig(
                name=os.path.basename(exp_dir), storage_path=sweep.storage, verbose=1,
                callbacks=[ParquetCallback(str(sweep.parquet), sweep.name, max_epochs, st["fixed"], stage)],
                failure_config=FailureConfig(max_failures=3),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
    grid = tuner.fit()
    # Each trial's status as Tune's final snapshot records it. Not the ResultGrid's: after a Ctrl-C,
    # fit() returns normally and its clean-up has marked the interrupted trials TERMINATED in memory
    # (the snapshot, written before that clean-up, keeps them RUNNING, which is what resume needs).
    saved = ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
    status = {sweep_trial_id(t): t.status for t in saved.trials}
    table = ResultsTable(sweep.parquet, sweep.name, max_epochs)
    for tid, s in status.items():  # trials restored as finished get no callback: settle them here
        if s in ENDED and tid in table.trials and table.trials[tid].status == "RUNNING":
            table.end(tid, s, table.trials[tid].num_failures)
    table.flush()
    settle(study, sweep, stage)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get("stage") == stage]
    if running:
        raise SweepInterrupted(f"{len(running)} {stage}-stage trials unfinished")


def settle(study, sweep: Sweep, stage: str) -> tuple[frozenset, dict[str, int]]:
    """Make the study agree with the Parquet file after an interruption, and say what the file holds:
    (trials it records as ended, last epoch it holds of each other trial). A study trial that a kill cut
    short while it was being asked (no `stage` attr: tune_ext.StudySearcher._ask) is failed, and recorded in
    the file as an ERROR of this stage, so that the two keep holding the same trials."""
    from search.results import ResultsTable
    from search.study import reconcile, tell_final

    st = sweep.state
    columns = ["trial_id", "epoch", "status", "stage", st["metric"], "device_seconds", "params", "gflops"]
    df = read_results(sweep.parquet, columns) if sweep.parquet.exists() else pd.DataFrame(columns=columns)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    half = [t for t in running if "stage" not in t.user_attrs]
    if half:
        table = ResultsTable(sweep.parquet, sweep.name, st["max_epochs"])
        for t in half:
            tid = t.user_attrs.get("trial_id", f"unasked-{t.number}")
            table.add_unreported(tid, {**st["fixed"], **t.user_attrs.get("point", {})}, 0,
                                 {"stage": stage, "seed": t.user_attrs.get("seed", -1),
                                  "point": json.dumps(t.user_attrs.get("point", {}), sort_keys=True), "audited": False})
            table.end(tid, "ERROR")
            study._storage.set_trial_user_attr(t._trial_id, "stage", stage)
            study._storage.set_trial_user_attr(t._trial_id, "trial_id", tid)
            tell_final(study, t.number, "ERROR", None, 0, st["max_epochs"], stage)
        table.flush()
    if len(running) > len(half):
        reconcile(study, df, st["metric"], st["max_epochs"])
    ended = frozenset(df.loc[df["status"].isin(ENDED), "trial_id"]) | {
        t.user_attrs.get("trial_id", f"unasked-{t.number}") for t in half}
    live = df[~df["trial_id"].isin(ended)]
    return ended, {str(k): int(v) for k, v in live.groupby("trial_id")["epoch"].max().items()}


def _print_summary(sweep: Sweep, seconds: float) -> None:
    from search.report import summary_lines

    df = read_results(sweep.parquet)
    print(f"\nSweep {sweep.name!r}: {df['trial_id'].nunique()} trials, {len(df)} epoch rows, {seconds:.0f} s wall")
    print("\n".join(summary_lines(df, sweep.state)))
    print(f"\nresults: {sweep.parquet}\n  pandas.read_parquet({str(sweep.parquet)!r})")
    print(f"Optuna study {sweep.name!r}: {sweep.optuna}\nreport: python -m search.report {sweep.parquet}")


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
