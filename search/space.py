"""Load and check a search-space file before Ray starts."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pbn.config import ConfigError, resolve

# The space function is pickled by reference with the searcher: it must live under a stable name.
MODULE_NAME = "pbn_search_space"
REQUIRED = {"METRIC": str, "MODE": str, "NUM_SAMPLES": int, "MAX_EPOCHS": int, "GRACE_PERIOD": int,
            "REDUCTION_FACTOR": int, "FIXED": dict}
METRICS = ("pckh", "pckh_occluded", "pckh_visible", "pckh_0_1", "val_loss")


class SpaceError(ValueError):
    """The space file is missing, does not import, or lacks/mistypes a required name."""


@dataclass
class Space:
    path: Path
    module: ModuleType
    digest: str

    def __getattr__(self, name):
        return getattr(self.module, name)


def load_space(path: str | Path) -> Space:
    p = Path(path)
    if not p.is_file():
        raise SpaceError(f"{p}: space file not found")
    text = p.read_bytes()
    spec = importlib.util.spec_from_file_location(MODULE_NAME, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[MODULE_NAME]
        raise SpaceError(f"{p}: cannot import the space file ({type(e).__name__}: {e})") from None
    missing = [n for n in ["space", *REQUIRED] if not hasattr(module, n)]
    if missing:
        raise SpaceError(f"{p}: missing {', '.join(missing)} (see search/spaces/branches.py for the layout)")
    if not callable(module.space):
        raise SpaceError(f"{p}: `space` must be a function space(trial) using trial.suggest_*")
    for name, typ in REQUIRED.items():
        if not isinstance(getattr(module, name), typ):
            raise SpaceError(f"{p}: {name} must be {typ.__name__}, got {getattr(module, name)!r}")
    if module.METRIC not in METRICS:
        raise SpaceError(f"{p}: METRIC must be one of {METRICS}, got {module.METRIC!r}")
    if module.MODE not in ("max", "min"):
        raise SpaceError(f"{p}: MODE must be 'max' or 'min', got {module.MODE!r}")
    if module.MAX_EPOCHS < module.GRACE_PERIOD or module.GRACE_PERIOD < 1 or module.REDUCTION_FACTOR < 2:
        raise SpaceError(f"{p}: need 1 <= GRACE_PERIOD <= MAX_EPOCHS and REDUCTION_FACTOR >= 2")
    try:
        resolve(module.FIXED)
        for point in getattr(module, "INITIAL", []):
            resolve({**module.FIXED, **point})
    except ConfigError as e:
        raise SpaceError(f"{p}: FIXED/INITIAL: {e}") from None
    return Space(p.resolve(), module, hashlib.sha256(text).hexdigest())
