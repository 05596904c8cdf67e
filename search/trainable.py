"""The only code that runs inside a Ray trial: a flat config -> pbn.train.fit, one report per epoch.

Checkpoints go through Tune (one per epoch, the last two kept on the sweep's storage). Tune deletes an
old checkpoint as soon as a newer one arrives, but records which checkpoint is current only in its
experiment snapshot, taken a moment later. A driver killed in between leaves a snapshot that names a
deleted checkpoint, and Tune's own restore then fails the trial on every retry. So a trial always
resumes from the newest intact checkpoint in its storage directory, whichever one the snapshot names
(if any), and restore is told to skip a named checkpoint that is gone.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import socket
import sys
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray import tune
from ray.tune.trainable.function_trainable import wrap_function

from pbn.data.records import DataError
from pbn.train import CHECKPOINT, NonFiniteLossError, code_version, fit, load_checkpoint
from search.tune_ext import ADOPT, trial_config

NONFINITE = "nonfinite_loss.txt"  # in the trial's storage directory once its loss became NaN/inf
_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")


def stored_checkpoints(fs: pafs.FileSystem, trial_path: str) -> list[tuple[int, str]]:
    """(index, path) of every checkpoint directory under trial_path that holds a checkpoint file,
    newest first."""
    found = []
    for info in fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True)):
        m = _CHECKPOINT_DIR.fullmatch(info.base_name)
        if m and info.type == pafs.FileType.Directory:
            if fs.get_file_info(posixpath.join(info.path, CHECKPOINT)).type == pafs.FileType.File:
                found.append((int(m.group(1)), info.path))
    return sorted(found, reverse=True)


def _fetch_newest(storage, adopt_from: str | None = None) -> dict | None:
    """The contents of this trial's newest readable checkpoint on storage; None if there is none (a new
    trial). Later checkpoints are numbered past every directory already there, so a resumed trial never
    overwrites one it could need after another interruption. A trial adopting an orphan (search/tune_ext.py)
    with no checkpoint of its own starts from the orphan's."""
    fs, trial_path = storage.storage_filesystem, storage.trial_fs_path
    candidates = stored_checkpoints(fs, trial_path)
    if candidates:
        storage.current_checkpoint_index = max(storage.current_checkpoint_index, candidates[0][0] + 1)
    elif adopt_from is not None:
        candidates = stored_checkpoints(fs, posixpath.join(posixpath.dirname(trial_path), trial_dirname(adopt_from)))
    for _, path in candidates:
        with tune.Checkpoint(path, filesystem=fs).as_directory() as d:
            try:
                return load_checkpoint(Path(d) / CHECKPOINT)
            except DataError as e:  # cut short by the interruption; the one before it is whole
                print(f"skipping {path}: {e}", file=sys.stderr)
    return None


def trial_dirname(trial_id: str) -> str:
    """A trial's directory under the experiment: named by its id alone, so an adopter can find it."""
    return f"trial_{trial_id}"


def trial_dirname_of(trial) -> str:
    """TuneConfig.trial_dirname_creator (a module-level function: Tune pickles it into tuner.pkl)."""
    return trial_dirname(trial.trial_id)


def train_trial(config: dict, fixed: dict, ended: frozenset = frozenset(), reported: dict | None = None,
                device_count: float = 1.0) -> None:
    """One trial: `config` = the searched values + seed (+ the driver's bookkeeping keys, tune_ext.META).
    `ended`: sweep trials the Parquet file records as finished. Tune's experiment snapshot can lag behind a
    trial's end; after a driver crash in that window, restore would resume the trial and train past the
    epoch where ASHA stopped it. Such a trial returns at once. `reported`: the last epoch the Parquet file
    holds of each other trial. device_count: GPUs the trial holds (its CPUs on a CPU-only trial), for
    device_seconds."""
    adopt = config.get(ADOPT)
    key = adopt or tune.get_context().get_trial_id()
    if key in ended:
        return
    cfg = trial_config(fixed, config)
    trial_dir = Path(tune.get_context().get_trial_dir())
    run_dir = trial_dir / "run"
    extra = {"node": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(),
             "git_commit": code_version(), "resolved_config": json.dumps(cfg.to_dict())}
    storage = tune.get_context().get_storage()
    fs, nonfinite = storage.storage_filesystem, posixpath.join(storage.trial_fs_path, NONFINITE)
    if fs.get_file_info(nonfinite).type == pafs.FileType.File:
        # Tune retries a failed trial from its last checkpoint, with the same seed: a non-finite loss
        # would come back after the same epochs of training. Fail at once instead.
        with fs.open_input_stream(nonfinite) as f:
            raise NonFiniteLossError(f"{f.read().decode()} (in an earlier attempt of this trial: not retrained)")
    # Not tune.get_checkpoint(): the snapshot may name an older checkpoint, or none (module doc).
    state = _fetch_newest(storage, adopt)
    # device_seconds: this epoch's cost; device_seconds_total: the trial's so far (for the study's user attr)
    total = [0.0]
    for past in state["history"] if state is not None else []:
        # The driver may have lost its last second of results (killed before it wrote them), or never got
        # the checkpoint's epoch: report the checkpoint's epochs the Parquet file lacks again, marked.
        total[0] += past["epoch_seconds"] * device_count
        if past["epoch"] > (reported or {}).get(key, 0):
            tune.report({**past, **extra, "device_seconds": past["epoch_seconds"] * device_count,
                         "device_seconds_total": total[0], "replayed": True})

    def report(metrics: dict, out: Path) -> None:
        ckpt_dir = trial_dir / "to_report"  # only the checkpoint travels to storage, not logs
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir()
        try:
            os.link(out / CHECKPOINT, ckpt_dir / CHECKPOINT)
        except OSError:
            shutil.copy2(out / CHECKPOINT, ckpt_dir / CHECKPOINT)
        seconds = metrics["epoch_seconds"] * device_count
        total[0] += seconds
        tune.report({**metrics, **extra, "device_seconds": seconds, "device_seconds_total": total[0]},
                    checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))

    # Tune's own TensorBoard logger records every reported scalar; no second writer here. The driver
    # checked the data once for every trial.
    try:
        fit(cfg, run_dir, resume_from=state, on_epoch=report, tensorboard=False, progress=False, check_data=False)
    except NonFiniteLossError as e:
        fs.create_dir(storage.trial_fs_path, recursive=True)
        with fs.open_output_stream(nonfinite) as f:
            f.write(str(e).encode())
        raise


def make_trainable(fixed: dict, ended: frozenset, reported: dict, resources: dict) -> type:
    """train_trial as a Tune trainable class whose restore tolerates a deleted checkpoint (module doc)."""
    device_count = resources["gpu"] or resources["cpu"]
    base = wrap_function(tune.with_parameters(train_trial, fixed=fixed, ended=ended, reported=reported,
                                              device_count=device_count), name="train_trial")

    class PBNTrial(base):
        def restore(self, checkpoint_path):
            ckpt = getattr(checkpoint_path, "checkpoint", None)  # Tune passes a _TrainingResult
            if ckpt is not None and ckpt.filesystem.get_file_info(ckpt.path).type == pafs.FileType.NotFound:
                # train_trial finds the newest stored checkpoint itself; Tune's restore would fail here.
                print(f"{ckpt.path} was deleted after the experiment snapshot named it", file=sys.stderr)
                return None
            return super().restore(checkpoint_path)

    return tune.with_resources(PBNTrial, resources)
