"""One flat, typed configuration for a training run. A search trial receives exactly this as a dict.

Resolution order: field defaults < preset < explicit overrides. Unknown keys and wrong types raise
ConfigError naming the key, so a typo in a space file or on the command line never runs silently.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

GROUPINGS = ("shared", "per-part", "human", "mi")
DATASETS = ("synthetic", "mpii", "lsp")
MIN_CLUSTERS, MAX_CLUSTERS = 2, 15


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


def _f(default, help: str, choices: tuple | None = None):
    """A Config field with its command-line help (and allowed values): the CLIs are generated from these."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class Config:
    # data
    data: str = _f("synthetic", "dataset: embedded synthetic figures, or MPII/LSP under data_root", DATASETS)
    data_root: str | None = _f(None, "directory holding mpii/ or lsp/ (docs/data.md)")
    train_limit: int | None = _f(None, "use at most this many training people (default: all)")
    val_limit: int | None = _f(None, "use at most this many validation people (default: all)")
    synthetic_train: int = _f(512, "synthetic training images per epoch (a sample is a function of seed and index)")
    synthetic_val: int = _f(768, "synthetic validation images (768: a bootstrap half-width under 1 PCKh point)")
    synthetic_seed: int = _f(0, "seed of the synthetic *dataset*, fixed across trials so they are comparable")
    synthetic_cache_mb: int = _f(256, "rendered synthetic training images kept in memory, per process (0: off)")
    # model
    preset: str = _f("small", "size preset (small: CPU minutes; paper: section 4.1 of the paper)", ("small", "paper"))
    grouping: str = _f("human", "part grouping of the branches", GROUPINGS)
    clusters: int | None = _f(None, f"cluster count k of grouping mi ({MIN_CLUSTERS}..{MAX_CLUSTERS})")
    cluster_seed: int = _f(0, "seed of the spectral clustering that makes the mi partition: a study-level "
                           "constant, never the training seed")
    width: int = _f(64, "W: channels of each branch")
    depth: int = _f(1, "D: residual blocks per branch (0: 1x1 convolutions only)")
    stacks: int = _f(2, "stacked PBNs (each supervised)")
    input_size: int = _f(64, "input crop side in pixels (heatmaps are a quarter of it)")
    channels: int = _f(64, "channels of the hourglass trunk")
    hg_depth: int = _f(2, "pooling levels of each hourglass")
    # optimization
    epochs: int = _f(8, "epochs to train")
    batch_size: int = _f(8, "images per training step")
    lr: float = _f(2e-3, "learning rate")
    optimizer: str = _f("adam", "rmsprop (the paper) or adam (the small preset: learns in fewer steps)",
                        ("rmsprop", "adam"))
    lr_schedule: str = _f("step", "step: lr x lr_gamma after each of lr_steps (the paper); cosine: annealed to 0 over "
                          "`epochs` (the last epoch's weights average over a shrinking step: less seed noise)",
                          ("step", "cosine"))
    lr_steps: tuple[int, ...] = _f((), "epochs after which the learning rate is multiplied by lr_gamma (schedule step)")
    lr_gamma: float = _f(0.1, "learning-rate factor at each of lr_steps (schedule step)")
    seed: int = _f(0, "training seed: initialisation, shuffling and augmentation")
    workers: int = _f(0, "DataLoader worker processes (0: load in the training process)")
    # augmentation (paper section 4.1)
    scale_factor: float = _f(0.25, "random crop scale in 1 +- scale_factor")
    rotation: float = _f(30.0, "random rotation in +- degrees")
    flip: bool = _f(True, "random horizontal flips (left/right joints swapped)")
    color_jitter: float = _f(0.2, "random per-channel colour gain in 1 +- color_jitter")
    sigma: float = _f(1.0, "heatmap Gaussian std in output pixels")
    # evaluation
    flip_test: bool = _f(False, "validate on the average of the image's and its mirror's heatmaps (the paper "
                            "protocol; doubles validation cost)")
    # device
    device: str = _f("auto", "auto: CUDA if available, else CPU", ("auto", "cpu", "cuda"))
    precision: str = _f("auto", "auto: bf16 autocast on CUDA devices with native bf16, fp32 on CPUs (bf16 training was "
                        "not shown equivalent to fp32 there: pbn/device.py); bf16: always (emulated where not "
                        "native); fp32: never", ("auto", "bf16", "fp32"))
    channels_last: bool = _f(True, "channels_last memory format (grouped branch convolutions are much faster in it, on "
                            "CPU too: benchmarks/run.py)")
    cudnn_benchmark: bool = _f(True, "let cuDNN pick the fastest kernels (CUDA)")
    threads: int | None = _f(None, "torch CPU threads (default: torch's choice)")

    def __post_init__(self):
        _check_types(self)
        for f in fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{f.name}: expected one of {choices}, got {getattr(self, f.name)!r}")
        if self.grouping == "mi":
            if self.clusters is None or not MIN_CLUSTERS <= self.clusters <= MAX_CLUSTERS:
                raise ConfigError(
                    f"clusters: grouping 'mi' needs {MIN_CLUSTERS} <= clusters <= {MAX_CLUSTERS}, "
                    f"got {self.clusters}"
                )
        elif self.clusters is not None:
            raise ConfigError(f"clusters: only grouping 'mi' takes a cluster count, got {self.grouping!r}")
        if self.width < 2 or self.width % 2:
            raise ConfigError(f"width: expected an even number >= 2, got {self.width}")
        for name in ("depth", "workers", "synthetic_cache_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.stacks < 1:
            raise ConfigError(f"stacks: expected >= 1, got {self.stacks}")
        if self.input_size % 4 or (self.input_size // 4) % (2**self.hg_depth):
            raise ConfigError(
                f"input_size: {self.input_size}/4 must be divisible by 2**hg_depth = {2**self.hg_depth}"
            )
        if self.data != "synthetic" and not self.data_root:
            raise ConfigError(f"data_root: data {self.data!r} needs a data root (docs/data.md)")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr: expected > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        return d

    def replace(self, **changes) -> Config:
        return resolve({**self.to_dict(), **changes})


# Presets: "paper" is section 4.1 of the paper; "small" learns something real in minutes on 2 CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    # The field defaults above: 64x64 input, 512 training images per epoch at batch 8, Adam 2e-3 at a constant
    # rate, validation without the flip test (it doubles validation time). Batch 16 and a cosine schedule were
    # measured and learn less in 5 epochs (benchmarks/seed_variance.py; docs/development.md, "Precision").
    "small": {},
    "paper": dict(
        input_size=256, channels=256, hg_depth=4, stacks=8, epochs=250, batch_size=16, lr=2.5e-4,
        optimizer="rmsprop", lr_steps=(170, 220), synthetic_train=22246, synthetic_val=2958, flip_test=True,
    ),
}

_FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def _check_types(cfg: Config) -> None:
    for name, typ in _FIELD_TYPES.items():
        v = getattr(cfg, name)
        ok = {
            "str": isinstance(v, str),
            "str | None": v is None or isinstance(v, str),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "int | None": v is None or (isinstance(v, int) and not isinstance(v, bool)),
            "float": isinstance(v, int | float) and not isinstance(v, bool),
            "bool": isinstance(v, bool),
            "tuple[int, ...]": isinstance(v, tuple) and all(isinstance(x, int) for x in v),
        }[typ]
        if not ok:
            raise ConfigError(f"{name}: expected {typ}, got {v!r} ({type(v).__name__})")


def resolve(overrides: dict[str, Any] | None = None) -> Config:
    """Defaults < preset < overrides. Accepts the flat dict a search trial or a checkpoint holds."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known keys: {sorted(_FIELD_TYPES)}")
    preset = overrides.get("preset", Config.preset)
    if preset not in PRESETS:
        raise ConfigError(f"preset: expected one of {tuple(PRESETS)}, got {preset!r}")
    values = {**PRESETS[preset], **overrides}
    # numpy scalars / floats-that-are-ints arrive from search spaces and pandas: normalize them here.
    for name, v in list(values.items()):
        typ = _FIELD_TYPES[name]
        if typ.startswith("int") and hasattr(v, "item") and not isinstance(v, bool):
            values[name] = v.item()
        if typ.startswith("int") and isinstance(values[name], float) and values[name].is_integer():
            values[name] = int(values[name])
        if typ == "float" and hasattr(v, "item"):
            values[name] = float(v)
        if typ == "tuple[int, ...]" and isinstance(v, list | tuple):
            values[name] = tuple(int(x) for x in v)
    return Config(**values)


def add_config_arguments(parser: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """One --flag per Config field (or per name in `names`), named and documented by the field: every
    command spells a concept the same way. Defaults are None (= not given), so presets still apply."""
    by_name = {f.name: f for f in fields(Config)}
    for name in names or list(by_name):
        f = by_name[name]
        flag, typ = "--" + name.replace("_", "-"), _FIELD_TYPES[name]
        text = f.metadata["help"]  # a field whose None means something says so in its own help
        text = text if "(default:" in text else f"{text} (default: {_default_text(name)})"
        kw = {"help": text, "default": None, "dest": name}
        if typ == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typ == "tuple[int, ...]":
            parser.add_argument(flag, type=int, nargs="*", metavar="EPOCH", **kw)
        else:
            conv = {"str": str, "str | None": str, "int": int, "int | None": int, "float": float}[typ]
            parser.add_argument(flag, type=conv, choices=f.metadata["choices"], **kw)


def _default_text(name: str) -> str:
    small = getattr(Config, name)
    paper = PRESETS["paper"].get(name, small)
    return f"{small!r}" if paper == small else f"{small!r}, paper preset {paper!r}"


# Units of the keys that have one (the reference table below; the rest are counts, names, switches or factors).
UNITS = {"width": "channels", "channels": "channels", "input_size": "pixels", "epochs": "epochs", "lr_steps": "epochs",
         "batch_size": "images", "synthetic_train": "images per epoch", "synthetic_val": "images",
         "train_limit": "people", "val_limit": "people", "synthetic_cache_mb": "MiB", "rotation": "degrees",
         "sigma": "heatmap pixels", "scale_factor": "fraction", "color_jitter": "fraction", "lr": "per step",
         "threads": "threads", "workers": "processes", "depth": "residual blocks", "stacks": "stacks"}


def reference_markdown() -> str:
    """docs/config.md: every Config key with its flag, type, default, unit, the preset that changes it, and
    meaning, from the dataclass itself (a test keeps the page current)."""
    lines = ["# Every config key", "",
             "The flags of `python -m pbn.train`, and the keys a study file's `FIXED` and `--set KEY=VALUE` take. "
             "Resolution: defaults < the preset's values < what is given. Generated by `python -m pbn.config "
             "--markdown`.", "",
             "| key | flag | type | default | unit | paper preset | meaning |", "|---|---|---|---|---|---|---|"]
    for f in fields(Config):
        paper = PRESETS["paper"].get(f.name)
        choices = f.metadata["choices"]
        meaning = f.metadata["help"] + (f" (one of {', '.join(map(str, choices))})" if choices else "")
        flag = f"--{f.name.replace('_', '-')}"
        flag = f"`{flag}`, `--no-{flag[2:]}`" if _FIELD_TYPES[f.name] == "bool" else f"`{flag}`"
        lines.append(f"| `{f.name}` | {flag} | {_FIELD_TYPES[f.name].replace(' | ', ' or ')} | "
                     f"`{getattr(Config, f.name)!r}` | {UNITS.get(f.name, '')} | "
                     f"{'' if paper is None else f'`{paper!r}`'} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--markdown"]:
        print("usage: python -m pbn.config --markdown   (print docs/config.md)", file=sys.stderr)
        sys.exit(2)
    print(reference_markdown(), end="")
