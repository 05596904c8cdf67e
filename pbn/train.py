"""Train and validate one stacked-PBN configuration. `fit` is what every search trial runs.

Per epoch: train (joint-weighted MSE over every stack's heatmaps), validate with the flip test, return
one flat dict, checkpoint atomically. Augmentation and shuffling are pure functions of (seed, epoch,
index), so a resumed run reaches the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from pbn.atomic import atomic_write
from pbn.config import Config, ConfigError, add_config_arguments, resolve
from pbn.data.check import require_valid_data
from pbn.data.dataset import PoseDataset, Source, load_source
from pbn.data.records import DataError
from pbn.data.transforms import apply_affine, invert_affine
from pbn.device import resolve_precision, warn_precision_change
from pbn.groups import cached_records_mi, group_names, resolve_groups
from pbn.model import StackedPBN, build_model, count_params, model_flops
from pbn.skeleton import MPII_FLIP_PAIRS

CHECKPOINT = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def pick_device(cfg: Config) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but torch sees no CUDA device")
    return torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")


def groups_for(cfg: Config, train: Source) -> list[tuple[int, ...]]:
    """mi groups come from the training source's pose statistics (`Source.pose_records`, MI cached on disk)
    and cfg.cluster_seed, never the training seed: every seed of a search point trains the same partition."""
    if cfg.grouping != "mi":
        return resolve_groups(cfg.grouping)
    return resolve_groups("mi", cfg.clusters, mi=cached_records_mi(train.pose_records), seed=cfg.cluster_seed)


def group_label(groups) -> str:
    """Readable groups, e.g. 'r_ankle,r_knee | l_knee,l_ankle | ...'."""
    return " | ".join(",".join(names) for names in group_names(groups))


class EpochSampler(Sampler):
    """Yields (epoch, index) in a permutation seeded by (seed, epoch): identical after a resume and in
    every worker, without relying on state inside worker copies of the dataset."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else range(self.n)
        return iter((self.epoch, int(i)) for i in order)


def heatmap_loss(outputs: list[torch.Tensor], target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Joint-weighted MSE summed over stacks (intermediate supervision); missing joints weigh 0. Always fp32:
    bf16 heatmaps are widened before the difference, the mean and the sum (outside any autocast region)."""
    w = weight[:, :, None, None]
    return sum(((o.float() - target) ** 2 * w).mean() for o in outputs)


def train_one_epoch(model, loader, optimizer, device, epoch: int, amp: bool, channels_last: bool, progress=None):
    model.train()
    total, n, t0 = 0.0, 0, time.perf_counter()
    for step, batch in enumerate(loader):
        x = batch["image"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target, weight = batch["target"].to(device), batch["weight"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(x)
        loss = heatmap_loss(outputs, target, weight)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss ({loss.item()}) at epoch {epoch}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
        n += len(x)
        if progress is not None:
            progress.update(len(x))
            progress.set_postfix(loss=f"{total / n:.2e}")
    seconds = time.perf_counter() - t0
    return {"train_loss": total / max(n, 1), "images_per_second": n / seconds, "train_seconds": seconds}


@torch.no_grad()
def validate(model, loader, source: Source, device, amp: bool, channels_last: bool, flip_test: bool) -> dict:
    """Flip-test heatmaps -> argmax -> original-image pixels -> the source's own score.

    amp: the forward passes run under bf16 autocast: a run validates in the precision it trains in. The
    flip merge, the loss and the argmax decoding are fp32 either way (bf16 heatmaps are widened first). The
    same checkpoint validated both ways differs by about a tenth of the validation interval's half-width,
    and bf16 validation is faster (measured: docs/development.md, "Precision").
    """
    model.eval()
    codec = loader.dataset.codec
    preds = np.zeros((len(loader.dataset), 16, 2))
    total, n = 0.0, 0
    for batch in loader:
        x = batch["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(x)
            flipped = model(x.flip(-1))[-1] if flip_test else None
        heatmaps = outputs[-1].float()
        if flipped is not None:
            heatmaps = codec.flip_merge(heatmaps, flipped.float(), MPII_FLIP_PAIRS)
        total += heatmap_loss(outputs, batch["target"].to(device), batch["weight"].to(device)).item() * len(x)
        n += len(x)
        coords, _ = codec.decode(heatmaps)
        crop_xy = codec.to_input(coords.cpu().numpy().astype(np.float64))
        for j, i in enumerate(batch["index"].tolist()):
            preds[i] = apply_affine(crop_xy[j], invert_affine(batch["matrix"][j].numpy()))
    return {"val_loss": total / max(n, 1), **source.score(preds)}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def save_checkpoint(path: Path, run: Run, epoch: int, history: list) -> None:
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "epoch": epoch, "rng": _rng_state(),
             "config": run.cfg.to_dict(), "code_version": code_version(), "history": history}
    atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise DataError(f"{path}: unreadable checkpoint ({e})") from None


@dataclass
class Run:
    """Everything one training run holds between epochs."""

    cfg: Config
    device: torch.device
    precision: str  # what cfg.precision resolved to on this device: "bf16" (autocast) or "fp32"
    groups: list[tuple[int, ...]]
    model: StackedPBN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    val_source: Source
    sampler: EpochSampler
    loader: DataLoader
    val_loader: DataLoader
    cost: dict  # params, gflops

    @property
    def amp(self) -> bool:
        return self.precision == "bf16"


def setup(cfg: Config, check_data: bool = True) -> Run:
    """Device, data (checked first, unless a sweep driver already did), groups, model, optimizer."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda and cfg.cudnn_benchmark
    if check_data:
        require_valid_data(cfg)
    train_src, val_src = load_source(cfg, "train"), load_source(cfg, "valid")
    if len(train_src.records) < cfg.batch_size:
        raise DataError(f"{cfg.data} train split has {len(train_src.records)} people, fewer than one batch "
                        f"(batch_size {cfg.batch_size}): nothing would be trained")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    groups = groups_for(cfg, train_src)
    model: StackedPBN = build_model(cfg, groups).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.optimizer == "adam":  # one fused kernel over all parameters: the per-parameter ops of the default
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # cost ~8 ms a step at 64 px
    else:
        optimizer = torch.optim.RMSprop(model.parameters(), lr=cfg.lr)
    if cfg.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.lr_steps), cfg.lr_gamma)
    train_set, val_set = PoseDataset(train_src, cfg, train=True), PoseDataset(val_src, cfg, train=False)
    sampler = EpochSampler(len(train_set), cfg.seed, shuffle=True)
    loader = DataLoader(_Indexed(train_set), batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, pin_memory=cuda, persistent_workers=cfg.workers > 0)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False)
    cost = {"params": count_params(model), "gflops": model_flops(cfg, groups) / 1e9}
    precision = resolve_precision(cfg.precision, device)
    return Run(cfg, device, precision, groups, model, optimizer, scheduler, val_src, sampler, loader, val_loader, cost)


def restore(run: Run, resume_from: str | os.PathLike | dict | None) -> tuple[int, list[dict]]:
    """(first epoch to train, history so far) from a checkpoint file or the contents load_checkpoint read.
    A checkpoint of another config is refused; only a larger epoch count may differ (train longer), and the
    precision setting where the checkpoint trained in what the new setting resolves to (a sweep pins "auto" to
    its first trial's resolution, so a trial started before the pin resumes under it)."""
    state = resume_from if isinstance(resume_from, dict) else None
    if resume_from is not None and state is None and Path(resume_from).exists():
        state = load_checkpoint(Path(resume_from))
    if state is None:
        return 0, []
    now = run.cfg.to_dict()
    diff = sorted(k for k in now if state["config"].get(k) != now[k])
    trained_in = state["history"][-1].get("precision") if state["history"] else None
    if "precision" in diff and trained_in == run.precision:  # "auto" that resolved to what is now pinned
        diff.remove("precision")
    if diff and diff != ["epochs"]:
        where = f"checkpoint of epoch {state['epoch']}" if state is resume_from else str(resume_from)
        raise ConfigError(f"{where}: checkpoint was written with a different config ({diff})")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    warn_precision_change(trained_in, run.precision, run.cfg.precision)  # "auto" resolves per machine
    return state["epoch"], list(state["history"])


def run_epoch(run: Run, epoch: int, bar=None) -> dict:
    """Train and validate epoch `epoch` (0-based); the flat metrics dict of pbn.metrics plus epoch and groups."""
    cfg, t0 = run.cfg, time.perf_counter()
    run.sampler.epoch = epoch
    metrics = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], "groups": group_label(run.groups),
               "precision": run.precision, **run.cost}
    metrics.update(train_one_epoch(run.model, run.loader, run.optimizer, run.device, epoch + 1, run.amp,
                                   cfg.channels_last, bar))
    run.scheduler.step()
    v0 = time.perf_counter()
    metrics.update(validate(run.model, run.val_loader, run.val_source, run.device, run.amp, cfg.channels_last,
                            cfg.flip_test))
    metrics["val_seconds"] = time.perf_counter() - v0
    metrics["epoch_seconds"] = time.perf_counter() - t0
    return metrics


def fit(
    cfg: Config,
    out_dir: str | os.PathLike,
    resume_from: str | os.PathLike | dict | None = None,
    on_epoch: Callable[[dict, Path], None] | None = None,
    tensorboard: bool = True,
    progress: bool | None = None,
    check_data: bool = True,
) -> list[dict]:
    """Train cfg.epochs epochs, continuing from `resume_from` if given: a checkpoint file, or one that
    load_checkpoint already read. on_epoch(metrics, out_dir) is called after each epoch's checkpoint is
    on disk. check_data=False skips the data check (a sweep driver ran it once for all trials).
    Returns the per-epoch metrics."""
    t_setup = time.perf_counter()
    out = Path(out_dir)
    run = setup(cfg, check_data)
    start, history = restore(run, resume_from)  # a refusal above writes nothing
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(
        {**cfg.to_dict(), "code_version": code_version()}, indent=2)))
    setup_seconds = time.perf_counter() - t_setup
    writer = None
    if tensorboard:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    show = sys.stderr.isatty() if progress is None else progress
    try:
        for epoch in range(start, cfg.epochs):
            bar = _bar(show, len(run.loader) * cfg.batch_size, f"epoch {epoch + 1}/{cfg.epochs}")
            metrics = {**run_epoch(run, epoch, bar), "setup_seconds": setup_seconds}
            if bar is not None:
                bar.close()
            history.append(metrics)
            save_checkpoint(out / CHECKPOINT, run, epoch + 1, history)
            if writer is not None:
                for k, v in metrics.items():
                    if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
            if on_epoch is not None:
                on_epoch(metrics, out)
    finally:
        if writer is not None:
            writer.close()
    atomic_write(out / "metrics.json", lambda p: p.write_text(json.dumps(
        {"config": cfg.to_dict(), "code_version": code_version(), "history": history}, indent=2)))
    return history


class _Indexed(torch.utils.data.Dataset):
    """Adapts PoseDataset to (epoch, index) keys from EpochSampler."""

    def __init__(self, ds: PoseDataset):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        epoch, i = key
        return self.ds.item(i, epoch)


def _bar(show: bool, total: int, desc: str):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


# ------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pbn.train", description="Train one stacked PBN (no Ray). "
                                "Every option is a pbn.config.Config field; unset options take the preset's value.")
    add_config_arguments(p)
    p.add_argument("--out", default="runs/train", help="output directory (checkpoint, config, metrics, tb/)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    over = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(a).items()
            if v is not None and k not in ("out", "resume")}
    out = Path(a.out)
    try:
        cfg = resolve(over)
        if (out / CHECKPOINT).exists() and not a.resume:
            raise ConfigError(f"{out / CHECKPOINT} exists: pass --resume to continue it, or choose another --out")
        fit(cfg, out, resume_from=out / CHECKPOINT if a.resume else None, on_epoch=_print_epoch)
    except (ConfigError, DataError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out / CHECKPOINT}, {out / 'metrics.json'}, {out / 'tb'}")
    return 0


def _print_epoch(m: dict, _out) -> None:
    print(f"epoch {m['epoch']:3d}  loss {m['train_loss']:.3e}/{m['val_loss']:.3e}  PCKh {m['pckh']:6.2f}  "
              f"vis {m['pckh_visible']:6.2f}  occ {m['pckh_occluded']:6.2f}  @0.1 {m['pckh_0_1']:6.2f}  "
              f"{m['images_per_second']:6.1f} img/s {m.get('precision', '')}  {m['epoch_seconds']:6.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
