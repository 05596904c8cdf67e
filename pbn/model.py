"""Stacked Part-based Branching Network (Tang & Wu, CVPR 2019, sections 3.2-3.3).

stem -> [hourglass -> shared features -> one branch per part group -> heatmaps] x stacks,
stacks fused by identity + 1x1(heatmaps) + 1x1(shared features).

The G branches of a stack are evaluated as ONE bank of grouped convolutions: branch g owns the channel
slice [g*W, (g+1)*W) of every layer, and a grouped convolution never mixes slices, so the branches are
independent (no gradient crosses groups; tests/test_model.py proves it) while the GPU runs one kernel
per layer instead of G small ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch
from torch import nn

from pbn.skeleton import MPII_JOINTS, NUM_JOINTS


class Residual(nn.Module):
    """Pre-activation bottleneck residual module of Newell et al.; `groups` makes G independent copies."""

    def __init__(self, cin: int, cout: int, groups: int = 1):
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1, groups=groups, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, groups=groups),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, groups=groups)

    def forward(self, x):
        return self.body(x) + self.skip(x)


def conv_bn_relu(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Hourglass(nn.Module):
    """Recursive hourglass: skip residual at each scale, pool down `depth` times, nearest-upsample back."""

    def __init__(self, depth: int, channels: int):
        super().__init__()
        self.skip = Residual(channels, channels)
        self.down = Residual(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.up = Residual(channels, channels)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        return self.skip(x) + self.upsample(self.up(self.inner(self.down(self.pool(x)))))


class BranchBank(nn.Module):
    """All part-group branches of one stack: 1x1 conv C->W, D residual blocks of width W, 1x1 conv to the
    group's heatmaps; output reassembled into the 16 MPII joints in the standard order."""

    def __init__(self, channels: int, groups: Sequence[Sequence[int]], width: int, depth: int):
        super().__init__()
        g = len(groups)
        kmax = max(len(grp) for grp in groups)
        self.num_groups = g
        self.inp = conv_bn_relu(channels, g * width, 1)  # dense in, but output slice g is branch g
        self.blocks = nn.Sequential(*[Residual(g * width, g * width, groups=g) for _ in range(depth)])
        # Groups differ in size: each gets kmax output channels, the unused ones are never read.
        self.out = nn.Conv2d(g * width, g * kmax, 1, groups=g)
        if sorted(j for grp in groups for j in grp) != list(range(NUM_JOINTS)):
            raise ValueError(f"groups must partition the {NUM_JOINTS} joints, got {groups}")
        order = [0] * NUM_JOINTS
        for gi, grp in enumerate(groups):
            for pos, joint in enumerate(grp):
                order[joint] = gi * kmax + pos
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(self, shared):
        return self.out(self.blocks(self.inp(shared))).index_select(1, self.order)


class StackedPBN(nn.Module):
    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        width: int = 64,
        depth: int = 1,
        stacks: int = 2,
        channels: int = 256,
        hg_depth: int = 4,
    ):
        super().__init__()
        self.groups = [tuple(int(j) for j in grp) for grp in groups]
        c = channels
        s = max(c // 4, 8)
        self.stem = nn.Sequential(
            conv_bn_relu(3, s, 3), nn.MaxPool2d(2), conv_bn_relu(s, s, 3), conv_bn_relu(s, s, 3),
            Residual(s, c // 2), nn.MaxPool2d(2), Residual(c // 2, c // 2), Residual(c // 2, c),
        )
        # Shared features of a stack: hourglass, then Newell's residual + 1x1 "lin" layer.
        self.hourglasses = nn.ModuleList(
            nn.Sequential(Hourglass(hg_depth, c), Residual(c, c), conv_bn_relu(c, c, 1)) for _ in range(stacks)
        )
        self.branches = nn.ModuleList(BranchBank(c, self.groups, width, depth) for _ in range(stacks))
        self.fuse_features = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(stacks - 1))
        self.fuse_heatmaps = nn.ModuleList(nn.Conv2d(NUM_JOINTS, c, 1) for _ in range(stacks - 1))

    def forward(self, x) -> list[torch.Tensor]:
        """x [B, 3, H, W] -> one heatmap tensor [B, 16, H/4, W/4] per stack (intermediate supervision)."""
        x = self.stem(x)
        outputs = []
        for i, (hourglass, branches) in enumerate(zip(self.hourglasses, self.branches)):
            shared = hourglass(x)
            heatmaps = branches(shared)
            outputs.append(heatmaps)
            if i < len(self.fuse_features):
                x = x + self.fuse_features[i](shared) + self.fuse_heatmaps[i](heatmaps)
        return outputs


def build_model(cfg, groups: Sequence[Sequence[int]]) -> StackedPBN:
    return StackedPBN(groups, cfg.width, cfg.depth, cfg.stacks, cfg.channels, cfg.hg_depth)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(model: nn.Module, input_size: int) -> int:
    """FLOPs (2 x multiply-adds of convolutions and matmuls, torch's FlopCounterMode; BN, ReLU and pooling
    not counted) of one forward pass of one image. Works on a meta-device model too."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device))
    model.train(was_training)
    return int(counter.get_total_flops())


def model_flops(cfg, groups: Sequence[Sequence[int]]) -> int:
    """count_flops of the model cfg describes, built on the meta device: shapes only, no memory or
    compute, milliseconds at any size (a trial counts its cost before training)."""
    with torch.device("meta"):
        return count_flops(build_model(cfg, groups), cfg.input_size)


def summary(model: StackedPBN, input_size: int) -> dict:
    with torch.no_grad():
        was_training = model.training
        model.eval()
        outs = model(torch.zeros(1, 3, input_size, input_size))
        model.train(was_training)
    return {
        "params": count_params(model),
        "params_by_part": {
            "stem": count_params(model.stem),
            "hourglasses": count_params(model.hourglasses),
            "branches": count_params(model.branches),
            "fusion": count_params(model.fuse_features) + count_params(model.fuse_heatmaps),
        },
        "flops": count_flops(model, input_size),
        "input_shape": [1, 3, input_size, input_size],
        "output_shape": list(outs[-1].shape),
        "num_outputs": len(outs),
        "groups": [[MPII_JOINTS[j] for j in grp] for grp in model.groups],
    }


MODEL_KEYS = ["preset", "grouping", "clusters", "cluster_seed", "width", "depth", "stacks", "input_size", "channels",
              "hg_depth"]


def main(argv: list[str] | None = None) -> int:
    from pbn.config import ConfigError, add_config_arguments, resolve
    from pbn.groups import GroupingError, resolve_groups

    p = argparse.ArgumentParser(prog="python -m pbn.model", description="Summarize a stacked PBN: groups, "
                                "parameters, FLOPs. The flags are pbn.train's; the preset defaults to paper here.")
    add_config_arguments(p, MODEL_KEYS)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    over = {k: getattr(a, k) for k in MODEL_KEYS if getattr(a, k) is not None}
    over.setdefault("preset", "paper")
    try:
        cfg = resolve(over)
        groups = resolve_groups(cfg.grouping, cfg.clusters, seed=cfg.cluster_seed)
    except (ConfigError, GroupingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = summary(build_model(cfg, groups), cfg.input_size)
    info.update(grouping=cfg.grouping, clusters=cfg.clusters, width=cfg.width, depth=cfg.depth, stacks=cfg.stacks)
    if a.json:
        print(json.dumps(info))
        return 0
    print(f"Stacked PBN  grouping={cfg.grouping}" + (f"(k={cfg.clusters})" if cfg.clusters else ""))
    print(f"  W={cfg.width} D={cfg.depth} stacks={cfg.stacks} channels={cfg.channels} hg_depth={cfg.hg_depth}")
    for i, grp in enumerate(info["groups"]):
        print(f"  group {i + 1}: {', '.join(grp)}")
    print(f"  parameters: {info['params'] / 1e6:.3f} M")
    for part, n in info["params_by_part"].items():
        print(f"    {part:<12} {n / 1e6:9.3f} M")
    print(f"  FLOPs/image at {cfg.input_size}x{cfg.input_size}: {info['flops'] / 1e9:.2f} G")
    print(f"  outputs: {info['num_outputs']} x {info['output_shape']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
