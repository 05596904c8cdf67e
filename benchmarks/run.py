"""Throughput and overhead benchmarks, printed as tables: `python benchmarks/run.py [--quick] [--skip-sweep]`.

0. Precision (`--precision-only` runs just this table, small preset: a few minutes): fp32 vs bf16 autocast per
   preset and grouping, the train step and the validation forward pass, PBN and the plain stacked hourglass of
   about equal FLOPs, 1 thread, each configuration in its own subprocess, fp32/bf16 interleaved, best of 3.

1. Train step (images/s, peak memory) of the PBN vs a plain stacked hourglass of (nearly) equal FLOPs,
   written straightforwardly below, measured in the same run. Each configuration runs in its own
   subprocess so peak RSS belongs to it alone. On CUDA also bf16 autocast and channels_last on/off.
2. Data pipeline per worker: real JPEG decode + crop + augmentation + heatmaps, and synthetic generation,
   against the train step's consumption (headroom = pipeline img/s / train img/s).
3. Sweep efficiency: a short sweep (or --sweep-parquet of an existing one): share of trial wall time spent
   training and validating, time from the command to the first reported epoch, per-epoch overhead.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "samples" / "mpii"


# ------------------------------------------------------------------ the plain stacked hourglass
class PlainResidual(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn1, self.c1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.bn2, self.c2 = nn.BatchNorm2d(cout // 2), nn.Conv2d(cout // 2, cout // 2, 3, padding=1, bias=False)
        self.bn3, self.c3 = nn.BatchNorm2d(cout // 2), nn.Conv2d(cout // 2, cout, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        y = self.c1(torch.relu(self.bn1(x)))
        y = self.c2(torch.relu(self.bn2(y)))
        y = self.c3(torch.relu(self.bn3(y)))
        return y + (x if self.skip is None else self.skip(x))


class PlainHourglassNet(nn.Module):
    """Newell's stacked hourglass with one dense head per stack (1x1 C->Wp, D residuals, 1x1 -> 16)."""

    def __init__(self, stacks, channels, depth_levels, head_width, head_depth):
        super().__init__()
        c, s = channels, max(channels // 4, 8)
        self.stem = nn.Sequential(
            nn.Conv2d(3, s, 3, padding=1), nn.BatchNorm2d(s), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(s, s, 3, padding=1), nn.BatchNorm2d(s), nn.ReLU(),
            nn.Conv2d(s, s, 3, padding=1), nn.BatchNorm2d(s), nn.ReLU(),
            PlainResidual(s, c // 2), nn.MaxPool2d(2), PlainResidual(c // 2, c // 2), PlainResidual(c // 2, c))
        self.levels = depth_levels
        self.hg = nn.ModuleList()
        for _ in range(stacks):
            self.hg.append(nn.ModuleList(
                [nn.ModuleList([PlainResidual(c, c) for _ in range(3)]) for _ in range(depth_levels)]
                + [PlainResidual(c, c)]))
        self.post = nn.ModuleList(
            nn.Sequential(PlainResidual(c, c), nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU()) for _ in range(stacks))
        self.heads = nn.ModuleList(nn.Sequential(
            nn.Conv2d(c, head_width, 1), nn.BatchNorm2d(head_width), nn.ReLU(),
            *[PlainResidual(head_width, head_width) for _ in range(head_depth)], nn.Conv2d(head_width, 16, 1))
            for _ in range(stacks))
        self.merge_f = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(stacks - 1))
        self.merge_h = nn.ModuleList(nn.Conv2d(16, c, 1) for _ in range(stacks - 1))

    def hourglass(self, blocks, x, level=0):
        skip_r, down_r, up_r = blocks[level]
        y = down_r(nn.functional.max_pool2d(x, 2))
        y = self.hourglass(blocks, y, level + 1) if level + 1 < self.levels else blocks[-1](y)
        return skip_r(x) + nn.functional.interpolate(up_r(y), scale_factor=2, mode="nearest")

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i in range(len(self.hg)):
            f = self.post[i](self.hourglass(self.hg[i], x))
            h = self.heads[i](f)
            outs.append(h)
            if i < len(self.merge_f):
                x = x + self.merge_f[i](f) + self.merge_h[i](h)
        return outs


class SerialBranches(nn.Module):
    """The straightforward branch implementation: G separate modules run one after another (what the
    grouped-convolution BranchBank in pbn/model.py replaces)."""

    def __init__(self, channels, groups, width, depth):
        super().__init__()
        self.groups = [list(g) for g in groups]
        self.branches = nn.ModuleList(nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            *[PlainResidual(width, width) for _ in range(depth)], nn.Conv2d(width, len(g), 1)) for g in groups)
        order = [j for g in self.groups for j in g]
        self.register_buffer("inverse", torch.tensor([order.index(j) for j in range(16)]), persistent=False)

    def forward(self, shared):
        return torch.cat([b(shared) for b in self.branches], 1).index_select(1, self.inverse)


# ------------------------------------------------------------------------------- measurements
PRESETS = {"small": dict(input_size=64, channels=64, hg_depth=2, stacks=2, batch=16),
           "paper": dict(input_size=256, channels=256, hg_depth=4, stacks=8, batch=16)}


def build(kind: str, preset: str, grouping: str, width: int, depth: int):
    from pbn.groups import resolve_groups
    from pbn.model import StackedPBN

    p = PRESETS[preset]
    groups = resolve_groups(grouping, 5 if grouping == "mi" else None)

    def make_pbn():
        return StackedPBN(groups, width, depth, p["stacks"], p["channels"], p["hg_depth"])

    if kind == "plain":
        return PlainHourglassNet(p["stacks"], p["channels"], p["hg_depth"], plain_head_width(make_pbn, preset, depth),
                                 depth)
    pbn = make_pbn()
    if kind == "serial":
        for i in range(len(pbn.branches)):
            pbn.branches[i] = SerialBranches(p["channels"], pbn.groups, width, depth)
    return pbn


def plain_head_width(make_pbn, preset: str, depth: int) -> int:
    """The dense head width (a multiple of 16) whose plain network's FLOPs are closest to the PBN's. FLOPs grow
    with the width: bisection, counted on the meta device (shapes only: fast even at the paper size)."""
    from pbn.model import count_flops

    p = PRESETS[preset]
    with torch.device("meta"):
        target = count_flops(make_pbn(), p["input_size"])
        flops = functools.cache(lambda wp: count_flops(
            PlainHourglassNet(p["stacks"], p["channels"], p["hg_depth"], wp, depth), p["input_size"]))
        lo, hi = 1, 64  # widths 16 * k
        while lo < hi:  # the smallest k whose FLOPs reach the target
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if flops(16 * mid) < target else (lo, mid)
        return 16 * min({lo, max(lo - 1, 1)}, key=lambda k: abs(flops(16 * k) - target))


def one(spec: dict) -> dict:
    """Train-step throughput of one configuration (runs in a fresh subprocess); with spec["val_steps"] also the
    validation forward pass (eval mode, no_grad, the same autocast) of the trained model."""
    from pbn.model import count_flops

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    p = PRESETS[spec["preset"]]
    dev = torch.device(spec["device"])
    model = build(spec["kind"], spec["preset"], spec["grouping"], spec["width"], spec["depth"])
    flops = count_flops(model, p["input_size"])
    model = model.to(dev)
    cl = spec["channels_last"]
    if cl:
        model = model.to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    opt = torch.optim.RMSprop(model.parameters(), lr=2.5e-4)
    b = spec.get("batch", p["batch"])
    x = torch.randn(b, 3, p["input_size"], p["input_size"], device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.rand(b, 16, p["input_size"] // 4, p["input_size"] // 4, device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=spec["bf16"]):
            outs = model(x)
        loss = sum(((o.float() - t) ** 2).mean() for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(spec["warmup"]):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    out = {"images_per_second": b * spec["steps"] / dt, "peak_mib": mem / 2**20, "gflops": flops / 1e9}
    if spec.get("val_steps"):
        model.eval()

        @torch.no_grad()
        def forward():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=spec["bf16"]):
                return model(x)[-1].float()

        for _ in range(spec["warmup"]):
            forward()
        t0 = time.perf_counter()
        for _ in range(spec["val_steps"]):
            forward().sum().item()  # .item(): a CUDA sync
        out["val_images_per_second"] = b * spec["val_steps"] / (time.perf_counter() - t0)
    return out


def run_one(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def train_step_table(quick: bool) -> list[dict]:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    rows = []
    cases = [("small", "shared", 64, 1), ("small", "mi", 32, 1), ("small", "per-part", 16, 1),
             ("paper", "shared", 256, 1), ("paper", "mi", 64, 1)]
    for preset, grouping, width, depth in cases:
        slow = preset == "paper" and not cuda
        steps = (3 if quick else 5) if slow else (10 if quick else 20)
        repeats = 1 if slow or quick else 3  # a 2-core VM drifts between processes: interleave, keep the best
        if cuda:
            precisions = [(False, False), (False, True), (True, False), (True, True)]
        else:  # 8 stacks at 256x256 take ~8 s a step on 2 cores: measure only the default layout there
            precisions = [(False, False), (False, True)] if preset == "small" else [(False, True)]
        for bf16, cl in precisions:
            base = dict(preset=preset, grouping=grouping, width=width, depth=depth, device=device, bf16=bf16,
                        channels_last=cl, steps=steps, warmup=2)
            if preset == "paper" and not cuda:
                base["batch"] = 4  # 8 stacks at 256x256 on 2 CPU cores: keep the run short
            kinds = ["pbn", "plain"] + (["serial"] if grouping != "shared" else [])
            runs = {k: [] for k in kinds}
            for _ in range(repeats):
                for k in kinds:
                    runs[k].append(run_one({**base, "kind": k}))
            best = {k: max(v, key=lambda r: r["images_per_second"]) for k, v in runs.items()}
            pbn, plain, serial = best["pbn"], best["plain"], best.get("serial", best["pbn"])
            rows.append({"preset": preset, "grouping": grouping, "W": width, "D": depth,
                         "precision": ("bf16" if bf16 else "fp32") + ("+cl" if cl else ""),
                         "pbn_img_s": pbn["images_per_second"], "serial_branches_img_s": serial["images_per_second"],
                         "plain_img_s": plain["images_per_second"],
                         "pbn_gflops": pbn["gflops"], "plain_gflops": plain["gflops"],
                         "ratio_per_flop": (pbn["images_per_second"] * pbn["gflops"])
                         / (plain["images_per_second"] * plain["gflops"]),
                         "pbn_peak_mib": pbn["peak_mib"], "plain_peak_mib": plain["peak_mib"]})
    return rows


PRECISION_CASES = {"small": [("shared", 64), ("per-part", 16), ("human", 64), ("mi", 32)],
                   "paper": [("shared", 256), ("per-part", 32), ("human", 64)]}


def precision_table(presets: list[str], quick: bool, repeats: int = 3) -> list[dict]:
    """fp32 vs bf16 autocast per preset and grouping: train step and validation forward pass of the PBN, train
    step of the plain stacked hourglass of about equal FLOPs, and the PBN's train FLOP/s over the plain net's in
    each precision (per_flop). 1 thread (one trial per core is the sweep's layout); each configuration in its own
    subprocess; fp32 and bf16 interleaved (A/B/A/B) `repeats` times, the best of each kept: another process
    loading the machine slows a run down, never speeds it up. Batch: the preset's training batch (paper on a CPU: 4)."""
    from pbn.config import resolve

    cuda = torch.cuda.is_available()
    rows = []
    for preset in presets:
        slow = preset == "paper" and not cuda
        batch = 4 if slow else resolve({"preset": preset}).batch_size
        steps = (2 if quick else 3) if slow else (10 if quick else 20)
        runs: dict[tuple, list[dict]] = {}
        for _ in range(1 if quick else repeats):
            for grouping, width in PRECISION_CASES[preset]:
                for kind in ("pbn", "plain"):
                    for bf16 in (False, True):
                        spec = dict(preset=preset, grouping=grouping, width=width, depth=1, kind=kind, bf16=bf16,
                                    device="cuda" if cuda else "cpu", channels_last=True, batch=batch, threads=1,
                                    steps=steps, warmup=1 if slow else 2, val_steps=steps if kind == "pbn" else 0)
                        runs.setdefault((grouping, kind, bf16), []).append(run_one(spec))
        for grouping, width in PRECISION_CASES[preset]:
            keys = ("images_per_second", "val_images_per_second")
            best = {k[1:]: {key: max(r.get(key, 0.0) for r in v) for key in keys} | {"gflops": v[0]["gflops"]}
                    for k, v in runs.items() if k[0] == grouping}
            pf, pb, qf, qb = best["pbn", False], best["pbn", True], best["plain", False], best["plain", True]
            rows.append({"preset": preset, "grouping": grouping, "W": width, "batch": batch,
                         "pbn_train_fp32": pf["images_per_second"], "pbn_train_bf16": pb["images_per_second"],
                         "train_x": pb["images_per_second"] / pf["images_per_second"],
                         "pbn_val_fp32": pf["val_images_per_second"], "pbn_val_bf16": pb["val_images_per_second"],
                         "val_x": pb["val_images_per_second"] / pf["val_images_per_second"],
                         "plain_train_fp32": qf["images_per_second"], "plain_train_bf16": qb["images_per_second"],
                         "plain_x": qb["images_per_second"] / qf["images_per_second"],
                         "per_flop_fp32": _per_flop(pf, qf), "per_flop_bf16": _per_flop(pb, qb)})
    return rows


def _per_flop(pbn: dict, plain: dict) -> float:
    return pbn["images_per_second"] * pbn["gflops"] / (plain["images_per_second"] * plain["gflops"])


def print_precision_table(presets: list[str], quick: bool) -> None:
    from pbn.device import cpu_flags, native_bf16, resolve_precision

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    flags = sorted((cpu_flags() or set()) & {"amx_bf16", "avx512_bf16", "bf16"}) if dev.type == "cpu" else []
    print(f"## precision: fp32 vs bf16 autocast, 1 thread, img/s (best of {1 if quick else 3} interleaved runs; "
          f"x = bf16/fp32). precision auto -> {resolve_precision('auto', dev)} here (native bf16: "
          f"{native_bf16(dev)}{', ' + ' '.join(flags) if flags else ''})")
    print("## per_flop = PBN train FLOP/s over the plain stacked hourglass's, same precision")
    print(fmt(precision_table(presets, quick)) + "\n")


def _per_second(n: int, work) -> float:
    """Calls of work(0), ..., work(n - 1) per second."""
    t0 = time.perf_counter()
    for k in range(n):
        work(k)
    return n / (time.perf_counter() - t0)


def pipeline_table(train_rates: dict[int, float], quick: bool) -> list[dict]:
    import cv2

    from pbn.config import resolve
    from pbn.data import readers
    from pbn.data.dataset import PoseDataset, Source, _file_loader, pckh_scorer
    from pbn.data.synthetic import SyntheticPoses

    torch.set_num_threads(1)
    rows = []
    records = readers.read_mpii_json(SAMPLES / "test_mpii.json", SAMPLES)
    n = 20 if quick else 60
    for size in (256, 64):
        cfg = resolve({"input_size": size, "hg_depth": 2 if size == 64 else 4})
        score = pckh_scorer(records)  # not used: the pipeline benchmark only loads
        jpeg = Source("mpii", records, lambda i, r=1: cv2.imread(records[i].image), score)
        reduced = Source("mpii", records, _file_loader(records), score, max_reduction=8)
        ds, rds = PoseDataset(jpeg, cfg, train=True), PoseDataset(reduced, cfg, train=True)
        jpeg_rate = _per_second(n, lambda k, d=ds: d.item(k % len(records), k))
        reduced_rate = _per_second(n, lambda k, d=rds: d.item(k % len(records), k))
        syn = SyntheticPoses(0, "train", size, n)
        sds = PoseDataset(Source("synthetic", syn.records, syn.load_image, score), cfg, train=True)
        syn_rate = _per_second(n, lambda k, d=sds: d.item(k, 0))
        gen_rate = _per_second(n, syn.load_image)
        cached = SyntheticPoses(0, "train", size, n, cache_bytes=cfg.synthetic_cache_mb << 20)
        cds = PoseDataset(Source("synthetic", cached.records, cached.load_image, score), cfg, train=True)
        _per_second(n, lambda k, d=cds: d.item(k, 1))  # epoch 1 renders and caches; later ones only crop and encode
        cached_rate = _per_second(n, lambda k, d=cds: d.item(k, 2))
        train = train_rates.get(size, float("nan"))
        rows.append({"size": size, "jpeg_full_decode_img_s": jpeg_rate, "jpeg_reduced_decode_img_s": reduced_rate,
                     "synthetic_pipeline_img_s": syn_rate, "synthetic_render_only_img_s": gen_rate,
                     "synthetic_cached_img_s": cached_rate, "train_step_img_s": train,
                     "headroom_jpeg": reduced_rate / train, "headroom_synthetic": syn_rate / train,
                     "headroom_synthetic_cached": cached_rate / train})
    return rows


def sweep_table(parquet: str | None, quick: bool) -> dict:
    """Where a sweep's time goes. slot_share: train+val seconds over command wall x concurrency (what the
    cluster bought); trial_share: train+val over the trials' own wall time (start-up, reporting and
    checkpointing are the rest); startup: controller start -> first epoch begins, per trial."""
    import pandas as pd

    t_cmd = time.time()
    ran_here = parquet is None
    if ran_here:
        out = Path(tempfile.mkdtemp(prefix="pbn-bench-"))
        cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
               "--results", str(out), "--name", "bench", "--num-samples", "4", "--max-epochs", "2" if quick else "4",
               "--confirm-max-seeds", "0", "--set", "synthetic_train=256", "--set", "synthetic_val=64"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        parquet = str(out / "bench.parquet")
    state = json.loads(Path(parquet).with_suffix(".sweep.json").read_text())
    start = t_cmd if ran_here else state["created"]  # an existing sweep: from its state file (~2 s after the command)
    df = pd.read_parquet(parquet).sort_values(["trial_id", "epoch"])
    end = df["reported_at"].max()
    concurrency = os.cpu_count() // max(1, int(state["fixed"].get("threads") or 1))
    overhead = (df.groupby("trial_id")["reported_at"].diff() - df["epoch_seconds"]).dropna()
    busy = (df["train_seconds"] + df["val_seconds"]).sum()
    per_trial = df.groupby("trial_id").agg(first=("reported_at", "min"), last=("reported_at", "max"),
                                           started=("trial_started_at", "first"),
                                           first_epoch=("epoch_seconds", "first"))
    trial_wall = (per_trial["last"] - per_trial["started"]).sum()
    startup = per_trial["first"] - per_trial["first_epoch"] - per_trial["started"]
    return {"trials": df.trial_id.nunique(), "epochs": len(df), "wall_s": end - start,
            "slot_share": busy / ((end - start) * concurrency), "trial_share": busy / trial_wall,
            "startup_s_median": float(startup.median()),
            "setup_in_trial_s_median": float(df["setup_seconds"].median()),
            "per_epoch_overhead_s": float(overhead.median()),
            "command_to_first_epoch_s": df["reported_at"].min() - start}


def fmt(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(keys), line(["-" * w for w in widths]), *map(line, cells)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--sweep-parquet", help="analyse this sweep instead of running a short one")
    ap.add_argument("--precision-only", action="store_true",
                    help="only the fp32 vs bf16 table (default presets: small, ~4 min on 2 cores)")
    ap.add_argument("--presets", nargs="+", choices=tuple(PRECISION_CASES),
                    help="presets of the precision table (default: small with --precision-only, else small paper)")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(json.loads(a.one))))
        return 0
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'}, " \
        f"{torch.get_num_threads()} threads)"
    print(f"# benchmarks {date.today()} on {dev}, torch {torch.__version__}\n")
    t0 = time.time()
    if a.precision_only:
        print_precision_table(a.presets or ["small"], a.quick)
        print(f"total benchmark time {time.time() - t0:.0f} s")
        return 0
    steps = train_step_table(a.quick)
    print("## train step: PBN (grouped branch bank) vs the same PBN with serial branches vs a plain stacked")
    print("## hourglass of about equal FLOPs (ratio_per_flop = PBN FLOP/s over plain FLOP/s)")
    print(fmt(steps) + "\n")
    print_precision_table(a.presets or list(PRECISION_CASES), a.quick)
    rates = {size: max(r["pbn_img_s"] for r in steps if r["preset"] == preset and r["grouping"] == "mi")
             for size, preset in ((64, "small"), (256, "paper"))}
    print("## data pipeline per worker (1 thread) vs the train step (mi grouping) consuming it")
    print(fmt(pipeline_table(rates, a.quick)) + "\n")
    if not a.skip_sweep:
        s = sweep_table(a.sweep_parquet, a.quick)
        print("## sweep efficiency")
        print(fmt([{k: v for k, v in s.items() if k != "parquet"}]))
        print(f"(from {a.sweep_parquet or 'a short sweep run here'})\n")
    print(f"total benchmark time {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
