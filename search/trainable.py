"""The only code that runs inside a Ray trial: a flat config -> pbn.train.fit, one report per epoch."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import ray
from ray import tune

from pbn.config import resolve
from pbn.train import CHECKPOINT, code_version, fit


def train_trial(config: dict, fixed: dict, ended: frozenset = frozenset()) -> None:
    """`ended`: trials the sweep's Parquet file records as finished. Tune's experiment snapshot can lag
    behind a trial's end (it is taken every second); after a driver crash in that window, restore would
    resume the trial and train past the epoch where ASHA stopped it. Such a trial returns at once."""
    if tune.get_context().get_trial_id() in ended:
        return
    cfg = resolve({**fixed, **config})
    trial_dir = Path(tune.get_context().get_trial_dir())
    run_dir = trial_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # restarted after a failure or a resumed sweep: continue, don't redo
        with checkpoint.as_directory() as d:
            shutil.copy2(Path(d) / CHECKPOINT, run_dir / CHECKPOINT)
        resume = run_dir / CHECKPOINT
    extra = {"node": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(),
             "git_commit": code_version(), "resolved_config": json.dumps(cfg.to_dict())}

    def report(metrics: dict, out: Path) -> None:
        ckpt_dir = trial_dir / "to_report"  # only the checkpoint travels to storage, not logs
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir()
        try:
            os.link(out / CHECKPOINT, ckpt_dir / CHECKPOINT)
        except OSError:
            shutil.copy2(out / CHECKPOINT, ckpt_dir / CHECKPOINT)
        tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))

    # Tune's own TensorBoard logger records every reported scalar; no second writer here.
    fit(cfg, run_dir, resume_from=resume, on_epoch=report, tensorboard=False, progress=False)
