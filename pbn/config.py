"""One flat, typed configuration for a training run. A search trial receives exactly this as a dict.

Resolution order: field defaults < preset < explicit overrides. Unknown keys and wrong types raise
ConfigError naming the key, so a typo in a space file or on the command line never runs silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

GROUPINGS = ("shared", "per-part", "human", "mi")
DATASETS = ("synthetic", "mpii", "lsp")
MIN_CLUSTERS, MAX_CLUSTERS = 2, 15


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Config:
    # data
    data: str = "synthetic"
    data_root: str | None = None
    train_limit: int | None = None  # use at most this many training samples (None: all)
    val_limit: int | None = None
    synthetic_train: int = 1024  # synthetic split sizes (samples are a function of (seed, index))
    synthetic_val: int = 256
    synthetic_seed: int = 0  # the synthetic *dataset* seed; fixed across trials so they are comparable
    synthetic_cache_mb: int = 256  # rendered training images kept in memory, per process (0: render each time)
    # model
    preset: str = "small"
    grouping: str = "human"
    clusters: int | None = None  # only for grouping == "mi"
    width: int = 64  # W: branch width
    depth: int = 1  # D: residual blocks per branch (0 = none)
    stacks: int = 2
    input_size: int = 64
    channels: int = 64
    hg_depth: int = 2  # pooling levels of each hourglass
    # optimization
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"  # rmsprop (the paper preset) | adam (small preset: learns in fewer steps)
    lr_steps: tuple[int, ...] = ()  # epochs at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    seed: int = 0
    workers: int = 0
    # augmentation (paper section 4.1)
    scale_factor: float = 0.25
    rotation: float = 30.0
    flip: bool = True
    color_jitter: float = 0.2
    sigma: float = 1.0  # heatmap Gaussian std in output pixels
    # evaluation
    flip_test: bool = True
    # device
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # autocast on CUDA only
    channels_last: bool = True  # every device: grouped branch convs run ~3x faster so on CPU too
    cudnn_benchmark: bool = True
    threads: int | None = None  # torch CPU threads (None: torch default)

    def __post_init__(self):
        _check_types(self)
        if self.data not in DATASETS:
            raise ConfigError(f"data: expected one of {DATASETS}, got {self.data!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {tuple(PRESETS)}, got {self.preset!r}")
        if self.grouping not in GROUPINGS:
            raise ConfigError(f"grouping: expected one of {GROUPINGS}, got {self.grouping!r}")
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
            raise ConfigError(f"data_root: data {self.data!r} needs a data root (see README, 'Data layout')")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: expected auto, cpu or cuda, got {self.device!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("rmsprop", "adam"):
            raise ConfigError(f"optimizer: expected rmsprop or adam, got {self.optimizer!r}")
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
    # The field defaults above: 64x64 input, ~120 img/s on 2 cores, PCKh 25% after 8 epochs of 1024
    # synthetic images (~75 s), 82% within 10 minutes.
    "small": {},
    "paper": dict(
        input_size=256, channels=256, hg_depth=4, stacks=8, epochs=250, batch_size=16, lr=2.5e-4,
        optimizer="rmsprop", lr_steps=(170, 220), synthetic_train=22246, synthetic_val=2958,
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
