"""Run (or resume) a sweep: `python search/run.py --space search/spaces/branches.py`.

Loads and checks the space file before Ray starts, builds an OptunaSearch (define-by-run) and an ASHA
scheduler keyed on the reported `epoch`, runs the trials, and keeps results/<name>.parquet current.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

import pandas as pd

from pbn.config import ConfigError, resolve
from search.results import ResultsTable, final_rows
from search.space import SpaceError, load_space

# Snapshot the experiment state every second: a SIGKILLed driver then loses at most ~1 s of it, and
# in-flight trials resume from their last checkpoint instead of epoch 0 (see docs/ray-tune.md).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
SEARCHED = ("grouping", "clusters", "width", "depth")


class SweepError(RuntimeError):
    """The sweep cannot start or resume as asked."""


class SweepInterrupted(RuntimeError):
    """fit() returned with trials unfinished (Ctrl-C / SIGINT / SIGUSR1 reached Tune)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python search/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--space", required=True, help="search-space file, e.g. search/spaces/branches.py")
    p.add_argument("--name", help="sweep name (default: the space file's name)")
    p.add_argument("--num-samples", type=int, help="trials in all (default: the space's NUM_SAMPLES)")
    p.add_argument("--max-epochs", type=int, help="epochs of a trial that ASHA never stops")
    p.add_argument("--data", choices=("synthetic", "mpii", "lsp"), default="synthetic")
    p.add_argument("--data-root", help="root holding mpii/ or lsp/ (README, 'Data layout')")
    p.add_argument("--preset", choices=("small", "paper"), help="model/optimizer preset (default: the space's)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share one GPU")
    p.add_argument("--concurrency", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="join a running Ray cluster")
    p.add_argument("--storage", default=os.environ.get("PBN_STORAGE"),
                   help="URI or shared path for trial checkpoints and sweep state (default: $PBN_STORAGE, "
                   "else <results>/tune)")
    p.add_argument("--results", default="results", help="directory of <name>.parquet")
    p.add_argument("--seed", type=int, default=0, help="Optuna sampler seed")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one fixed config value, e.g. --set synthetic_train=64 (JSON values)")
    return p


def _fixed_config(space, args) -> dict:
    fixed = dict(space.FIXED)
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            fixed[key] = json.loads(value)
        except json.JSONDecodeError:
            fixed[key] = value
    fixed.update(data=args.data, data_root=args.data_root, epochs=args.max_epochs or space.MAX_EPOCHS)
    if args.preset:
        fixed["preset"] = args.preset
    fixed["threads"] = max(1, int(args.cpus_per_trial))
    cfg = resolve({**fixed, "grouping": "shared"}).to_dict()
    return {k: v for k, v in cfg.items() if k not in SEARCHED}


def _sweep_paths(args, name: str):
    results = Path(args.results).resolve()
    storage = args.storage or str(results / "tune")
    return results / f"{name}.parquet", results / f"{name}.sweep.json", storage


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


def _has_snapshot(exp_dir: str) -> bool:
    """An experiment_state-*.json exists (local path or URI). Tuner.can_restore only checks tuner.pkl, which
    is written before any trial: restoring from it alone silently starts an empty sweep."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(exp_dir) if "://" in exp_dir else (pafs.LocalFileSystem(), exp_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError):
        return False
    return any(os.path.basename(i.path).startswith("experiment_state-") for i in infos)


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


def run(args) -> Path:
    space = load_space(args.space)
    name = args.name or space.path.stem
    parquet, state_path, storage = _sweep_paths(args, name)
    lock = lock_sweep(parquet.with_suffix(".lock"), name)
    try:
        return _run(args, space, name, parquet, state_path, storage)
    finally:
        os.close(lock)


def _run(args, space, name: str, parquet: Path, state_path: Path, storage: str) -> Path:
    from ray.tune import CheckpointConfig, ExperimentAnalysis, FailureConfig, RunConfig, TuneConfig, Tuner

    from search.callbacks import ParquetCallback
    from search.trainable import make_trainable
    from search.tune_ext import PruneAwareOptuna, ReplayASHA

    exp_dir = os.path.join(storage, name)
    if args.resume:
        if not state_path.exists():
            raise SweepError(f"no sweep named {name!r} to resume ({state_path} not found)")
        state = json.loads(state_path.read_text())
        if state["space_digest"] != space.digest:
            raise SweepError(f"{args.space} changed since sweep {name!r} started: a changed space is a new sweep "
                             "(use another --name)")
        num_samples, fixed = state["num_samples"], state["fixed"]
    else:
        if state_path.exists() or parquet.exists():
            raise SweepError(f"sweep {name!r} already exists ({state_path}); pass --resume to continue it, "
                             "or --name for a new sweep")
        num_samples, fixed = args.num_samples or space.NUM_SAMPLES, _fixed_config(space, args)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state = {"name": name, "space": str(space.path), "space_digest": space.digest, "num_samples": num_samples,
                 "fixed": fixed, "storage": storage, "created": time.time(), "argv": sys.argv[1:]}
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, state_path)
    max_epochs = fixed["epochs"]

    ended = frozenset(ResultsTable(parquet, name, max_epochs).ended()) if args.resume else frozenset()

    import ray

    t0 = time.time()
    ray.init(address=args.address, include_dashboard=False, configure_logging=False, log_to_driver=True)
    _check_cluster(args.cpus_per_trial, args.gpus_per_trial, storage)
    trainable = make_trainable(fixed, ended, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    if args.resume and _has_snapshot(exp_dir) and Tuner.can_restore(exp_dir):
        print(f"resuming sweep {name!r} from {exp_dir}", flush=True)
        # resume_errored: a trial the interruption itself left errored continues. Trials the Parquet file
        # records as ERROR (retries used up before the interruption) are in `ended` and stay as they are.
        tuner = Tuner.restore(exp_dir, trainable, resume_unfinished=True, resume_errored=True)
    else:
        searcher = PruneAwareOptuna(space=space.space, metric=space.METRIC, mode=space.MODE, seed=args.seed,
                                    points_to_evaluate=list(getattr(space, "INITIAL", [])), max_epochs=max_epochs)
        scheduler = ReplayASHA(str(parquet), time_attr="epoch", max_t=max_epochs, grace_period=space.GRACE_PERIOD,
                               reduction_factor=space.REDUCTION_FACTOR)
        tuner = Tuner(
            trainable,
            tune_config=TuneConfig(metric=space.METRIC, mode=space.MODE, search_alg=searcher, scheduler=scheduler,
                                   num_samples=num_samples, max_concurrent_trials=args.concurrency,
                                   reuse_actors=True),
            run_config=RunConfig(
                name=name, storage_path=storage, verbose=1,
                callbacks=[ParquetCallback(str(parquet), name, max_epochs, fixed)],
                failure_config=FailureConfig(max_failures=3),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
    grid = tuner.fit()
    # Each trial's status as Tune's final snapshot records it. Not the ResultGrid's: after a Ctrl-C,
    # fit() returns normally and its clean-up has marked the interrupted trials TERMINATED in memory
    # (the snapshot, written before that clean-up, keeps them RUNNING, which is what resume needs).
    saved = ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
    status = {t.trial_id: t.status for t in saved.trials}
    table = ResultsTable(parquet, name, max_epochs)
    for tid, st in status.items():  # trials restored as finished get no callback: settle them here
        if st in ("TERMINATED", "ERROR") and tid in table.trial_status and tid not in ended:
            table.end(tid, st, table.trial_status[tid][1])
    table.write()
    _print_summary(table, parquet, time.time() - t0, max_epochs)
    unfinished = num_samples - sum(st in ("TERMINATED", "ERROR") for st in status.values())
    if unfinished:
        raise SweepInterrupted(f"{unfinished} of {num_samples} trials unfinished")
    return parquet


def _print_summary(table: ResultsTable, parquet: Path, seconds: float, max_epochs: int) -> None:
    df = table.frame()
    last = final_rows(df)
    print(f"\nSweep {table.sweep!r}: {len(last)} trials, {len(df)} epoch rows, {seconds:.0f} s wall")
    print(f"{'rank':>4} {'grouping':<9} {'k':>2} {'W':>4} {'D':>2} {'PCKh':>6} {'occl.':>6} {'epochs':>6}  status")
    for i, r in last.iterrows():
        k = "" if pd.isna(r["clusters"]) else int(r["clusters"])
        state = "stopped early" if r["stopped_early"] else str(r["status"]).lower()
        print(f"{i + 1:>4} {r['grouping']:<9} {k!s:>2} {r['width']:>4} {r['depth']:>2} {r['pckh']:6.2f} "
              f"{r['pckh_occluded']:6.2f} {r['epoch']:>3}/{max_epochs:<2}  {state}")
    print(f"\nresults: {parquet}\n  pandas.read_parquet({str(parquet)!r})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (SpaceError, SweepError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SweepInterrupted) as e:
        print(f"\ninterrupted{': ' + str(e) if str(e) else ''}: resume with the same command plus --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
