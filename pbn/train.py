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
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from pbn.config import PRESETS, Config, ConfigError, resolve
from pbn.data.dataset import PoseDataset, Source, load_source
from pbn.data.records import DataError
from pbn.data.transforms import apply_affine, invert_affine
from pbn.evaluate import lsp_pck, mpii_pckh
from pbn.groups import cached_records_mi, group_names, resolve_groups
from pbn.model import StackedPBN, build_model
from pbn.skeleton import LSP_TO_MPII, MPII_FLIP_PAIRS

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
    """mi groups come from this dataset's own training poses (cached on disk per data source)."""
    if cfg.grouping != "mi":
        return resolve_groups(cfg.grouping)
    return resolve_groups("mi", cfg.clusters, mi=cached_records_mi(train.records), seed=cfg.seed)


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
    """Joint-weighted MSE summed over stacks (intermediate supervision); missing joints weigh 0."""
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
    """Flip-test heatmaps -> argmax -> original-image pixels -> the dataset's score."""
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
            heatmaps = outputs[-1].float()
            if flip_test:
                heatmaps = codec.flip_merge(heatmaps, model(x.flip(-1))[-1].float(), MPII_FLIP_PAIRS)
        total += heatmap_loss(outputs, batch["target"].to(device), batch["weight"].to(device)).item() * len(x)
        n += len(x)
        coords, _ = codec.decode(heatmaps)
        crop_xy = codec.to_input(coords.cpu().numpy().astype(np.float64))
        for j, i in enumerate(batch["index"].tolist()):
            preds[i] = apply_affine(crop_xy[j], invert_affine(batch["matrix"][j].numpy()))
    if source.name == "lsp":
        gt = np.stack([r.joints for r in source.original])
        score = lsp_pck(preds[:, list(LSP_TO_MPII)], gt[..., :2], gt[..., 2])
    else:
        gt = np.stack([r.joints for r in source.records])
        head = np.array([r.head_size for r in source.records], dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing visibility is reported as NaN columns
            score = mpii_pckh(preds, gt[..., :2], gt[..., 2], head)
    out = {"val_loss": total / max(n, 1), "pckh": score["mean"], "pckh_0_1": score["mean@0.1"],
           "pckh_auc": score["auc"], "pckh_visible": score["visible"], "pckh_occluded": score["occluded"]}
    out.update({f"pckh_{k}": score[k] for k in ("head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")})
    return out


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, cfg: Config, history: list) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "rng": _rng_state(), "config": cfg.to_dict(), "code_version": code_version(),
             "history": history}
    atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise DataError(f"{path}: unreadable checkpoint ({e})") from None


def fit(
    cfg: Config,
    out_dir: str | os.PathLike,
    resume_from: str | os.PathLike | dict | None = None,
    on_epoch: Callable[[dict, Path], None] | None = None,
    tensorboard: bool = True,
    progress: bool | None = None,
) -> list[dict]:
    """Train cfg.epochs epochs, continuing from `resume_from` if given: a checkpoint file, or one that
    load_checkpoint already read. on_epoch(metrics, out_dir) is called after each epoch's checkpoint is
    on disk. Returns the per-epoch metrics."""
    t_setup = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "code_version": code_version()}, indent=2))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg)
    cuda = device.type == "cuda"
    amp, channels_last = cuda and cfg.bf16, cfg.channels_last
    torch.backends.cudnn.benchmark = cuda and cfg.cudnn_benchmark
    train_src, val_src = load_source(cfg, "train"), load_source(cfg, "valid")
    if val_src.name == "mpii" and any(r.head_size is None for r in val_src.records):
        raise DataError("MPII validation needs head boxes: put gt_valid.mat in <data_root>/mpii/annotations/")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    groups = groups_for(cfg, train_src)
    model: StackedPBN = build_model(cfg, groups).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt_class = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[cfg.optimizer]
    optimizer = opt_class(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.lr_steps), cfg.lr_gamma)
    start, history = 0, []
    state = resume_from if isinstance(resume_from, dict) else None
    if resume_from is not None and state is None and Path(resume_from).exists():
        state = load_checkpoint(Path(resume_from))
    if state is not None:
        if state["config"] != cfg.to_dict():
            diff = sorted(k for k in cfg.to_dict() if state["config"].get(k) != cfg.to_dict()[k])
            # epochs may grow on resume (train longer); anything else is a different experiment
            if diff != ["epochs"]:
                where = f"checkpoint of epoch {state['epoch']}" if state is resume_from else str(resume_from)
                raise ConfigError(f"{where}: checkpoint was written with a different config ({diff})")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start, history = state["epoch"], list(state["history"])
    train_set, val_set = PoseDataset(train_src, cfg, train=True), PoseDataset(val_src, cfg, train=False)
    sampler = EpochSampler(len(train_set), cfg.seed, shuffle=True)
    loader = DataLoader(_Indexed(train_set), batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, pin_memory=cuda, persistent_workers=cfg.workers > 0)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False)
    writer = None
    if tensorboard:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    show = sys.stderr.isatty() if progress is None else progress
    setup_seconds = time.perf_counter() - t_setup  # data sources, MI groups, model, checkpoint load
    try:
        for epoch in range(start, cfg.epochs):
            sampler.epoch = epoch
            t0 = time.perf_counter()
            bar = _bar(show, len(loader) * cfg.batch_size, f"epoch {epoch + 1}/{cfg.epochs}")
            metrics = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "groups": group_label(groups),
                       "setup_seconds": setup_seconds}
            metrics.update(train_one_epoch(model, loader, optimizer, device, epoch + 1, amp, channels_last, bar))
            if bar is not None:
                bar.close()
            scheduler.step()
            v0 = time.perf_counter()
            metrics.update(validate(model, val_loader, val_src, device, amp, channels_last, cfg.flip_test))
            metrics["val_seconds"] = time.perf_counter() - v0
            metrics["epoch_seconds"] = time.perf_counter() - t0
            history.append(metrics)
            save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, epoch + 1, cfg, history)
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
    p = argparse.ArgumentParser(prog="python -m pbn.train", description="Train one stacked PBN (no Ray).")
    p.add_argument("--data", choices=("synthetic", "mpii", "lsp"))
    p.add_argument("--data-root")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--grouping", choices=("shared", "per-part", "human", "mi"))
    p.add_argument("--clusters", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--stacks", type=int)
    p.add_argument("--input-size", type=int)
    p.add_argument("--channels", type=int)
    p.add_argument("--hg-depth", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=("rmsprop", "adam"))
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-bf16", dest="bf16", action="store_false", default=None)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false", default=None)
    p.add_argument("--train-limit", type=int)
    p.add_argument("--val-limit", type=int)
    p.add_argument("--synthetic-train", type=int)
    p.add_argument("--synthetic-val", type=int)
    p.add_argument("--synthetic-cache-mb", type=int, help="rendered training images kept in memory (0: off)")
    p.add_argument("--out", default="runs/train", help="output directory (checkpoint, config, metrics, tb/)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    over = {k: v for k, v in vars(a).items() if v is not None and k not in ("out", "resume")}
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
              f"{m['images_per_second']:6.1f} img/s  {m['epoch_seconds']:6.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
