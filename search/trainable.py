"""The only code that runs inside a Ray trial: a flat config -> pbn.train.fit, one report per epoch.

A trial keeps its own checkpoints on the sweep's storage (a path every node reaches, or an S3/GCS URI):
`<storage>/<sweep>/checkpoints/<trial_id>/epoch-0003.pt`, each written whole before the epoch is reported,
the last two kept. Tune reports metrics only; it holds no checkpoint, so nothing Tune records (or loses)
decides where a trial resumes: a trial restarted on another node after a node loss, or continued by a new
driver after an interruption, loads the newest readable checkpoint under its own name.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import socket
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray import tune

from pbn.config import resolve
from pbn.data.records import DataError
from pbn.train import CHECKPOINT, NonFiniteLossError, code_version, fit, load_checkpoint

log = logging.getLogger(__name__)
# trial config keys of the driver: the sweep's trial id; exempt from ASHA; the sweep's precision (where the
# study says "auto", the first trial's resolved precision is pinned for every later one: a point never mixes)
TRIAL, AUDIT, PRECISION = "_trial", "_audit", "_precision"
META = (TRIAL, AUDIT, PRECISION, "seed")
KEEP = 2  # checkpoints kept per trial
NONFINITE = "nonfinite_loss.txt"  # beside a trial's checkpoints once its loss became NaN/inf
_EPOCH = re.compile(r"epoch-(\d+)\.pt")


def point_of(config: dict) -> dict:
    """The searched values of a trial config (without the seed and the driver's keys)."""
    return {k: v for k, v in config.items() if k not in META}


def trial_config(fixed: dict, config: dict):
    """A trial's resolved pbn Config: the sweep's fixed values overlaid by the trial's point and seed (and the
    sweep's pinned precision)."""
    pinned = {"precision": config[PRECISION]} if config.get(PRECISION) else {}
    return resolve({**fixed, **point_of(config), "seed": config.get("seed", fixed.get("seed", 0)), **pinned})


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI (s3://, gs://, ...)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def put_file(fs: pafs.FileSystem, local: Path, path: str) -> None:
    """Copy a local file to `path`, whole or not at all: a rename on a local filesystem, a single PUT (which
    an object store makes visible only once complete) on a URI."""
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp"
        fs.create_dir(posixpath.dirname(path), recursive=True)
        pafs.copy_files(str(local), tmp, destination_filesystem=fs)
        fs.move(tmp, path)
    else:
        pafs.copy_files(str(local), path, destination_filesystem=fs)


class CheckpointStore:
    """One trial's checkpoints on the sweep's storage."""

    def __init__(self, root: str, trial_id: str):
        self.fs, base = filesystem(root)
        self.dir = posixpath.join(base, trial_id)

    def epochs(self) -> list[int]:
        found = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.dir, allow_not_found=True)):
            m = _EPOCH.fullmatch(info.base_name)
            if m and info.type == pafs.FileType.File:
                found.append(int(m.group(1)))
        return sorted(found, reverse=True)

    def path(self, epoch: int) -> str:
        return posixpath.join(self.dir, f"epoch-{epoch:04d}.pt")

    def save(self, local: Path, epoch: int) -> None:
        put_file(self.fs, local, self.path(epoch))
        for old in self.epochs()[KEEP:]:
            self.fs.delete_file(self.path(old))

    def newest(self) -> dict | None:
        """The newest readable checkpoint's contents (one cut short by a kill is skipped), or None."""
        for epoch in self.epochs():
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / CHECKPOINT
                pafs.copy_files(self.path(epoch), str(local), source_filesystem=self.fs)
                try:
                    return load_checkpoint(local)
                except DataError as e:
                    log.warning("skipping %s: %s", self.path(epoch), e)
        return None

    def mark_nonfinite(self, message: str) -> None:
        self.fs.create_dir(self.dir, recursive=True)
        with self.fs.open_output_stream(posixpath.join(self.dir, NONFINITE)) as f:
            f.write(message.encode())

    def nonfinite(self) -> str | None:
        path = posixpath.join(self.dir, NONFINITE)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read().decode()


def train_trial(config: dict, fixed: dict, checkpoints: str, reported: dict, device_count: float) -> None:
    """One trial. `config`: the searched values, the seed and the driver's keys (META). `reported`: the last
    epoch the Parquet file holds of each trial this batch continues; epochs of the checkpoint beyond it (the
    driver was killed before it recorded them) are reported again, marked `replayed`. device_count: GPUs the
    trial holds (its CPUs on a CPU-only trial), for device_seconds."""
    trial_id = config[TRIAL]
    cfg = trial_config(fixed, config)
    store = CheckpointStore(checkpoints, trial_id)
    earlier = store.nonfinite()
    if earlier is not None:
        # Tune retries a failed trial with the same seed: a non-finite loss would come back after the same
        # epochs. Fail at once instead.
        raise NonFiniteLossError(f"{earlier} (in an earlier attempt of this trial: not retrained)")
    extra = {"node": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(),
             "git_commit": code_version(), "resolved_config": json.dumps(cfg.to_dict())}
    state = store.newest()
    total = 0.0  # device seconds so far, for the study's user attr
    for past in state["history"] if state is not None else []:
        total += past["epoch_seconds"] * device_count
        if past["epoch"] > reported.get(trial_id, 0):
            tune.report({**past, **extra, "device_seconds": past["epoch_seconds"] * device_count,
                         "device_seconds_total": total, "replayed": True})

    def report(metrics: dict, out: Path) -> None:
        nonlocal total
        store.save(out / CHECKPOINT, metrics["epoch"])  # on storage before the epoch is reported
        seconds = metrics["epoch_seconds"] * device_count
        total += seconds
        tune.report({**metrics, **extra, "device_seconds": seconds, "device_seconds_total": total})

    with tempfile.TemporaryDirectory(prefix=f"pbn-{trial_id}-") as run_dir:
        try:  # the driver checked the data once for every trial; it writes TensorBoard runs itself
            fit(cfg, run_dir, resume_from=state, on_epoch=report, tensorboard=False, progress=False,
                check_data=False)
        except NonFiniteLossError as e:
            store.mark_nonfinite(str(e))
            raise


def make_trainable(fixed: dict, checkpoints: str, reported: dict, resources: dict):
    """train_trial with the sweep's constants bound, and the resources of one trial."""
    device_count = resources["gpu"] or resources["cpu"]
    fn = tune.with_parameters(train_trial, fixed=fixed, checkpoints=checkpoints, reported=reported,
                              device_count=device_count)
    return tune.with_resources(fn, resources)
