"""Which precision a run computes in: `Config.precision` ("auto", "bf16", "fp32") -> "bf16" or "fp32".

"auto" means bf16 autocast on a CUDA device that computes bf16 natively (`torch.cuda.is_bf16_supported()`),
and fp32 on every CPU. Why not bf16 on CPUs that compute it natively (AMX-BF16 or AVX512-BF16 on x86, the BF16
extension on aarch64, detected below from the kernel's CPU flags): the project's own verdict did not find bf16
training equivalent to fp32 within the declared margin of 1 PCKh point (search/spaces/precision.py: 20 paired
seeds, bf16 - fp32 = -0.2 [-1.2, +0.8], undecided: a design the planner gives 27% power, docs/development.md,
"Precision"), and at the default study's size it is only ~1.1x faster on such a CPU. `precision = "bf16"` opts
in on any device; where bf16 is not native it is emulated by conversions and slower than fp32, and says so.
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")
# x86: AMX with bf16 tiles (Sapphire Rapids and later), AVX512-BF16 (Cooper Lake, Zen 4 and later);
# aarch64: FEAT_BF16 ("bf16" in the Features line, Neoverse V1/N2, Graviton 3 and later).
X86_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
ARM_BF16_FLAGS = frozenset({"bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU feature flags of the first processor in a /proc/cpuinfo text (x86 'flags', aarch64
    'Features'); None where the file does not exist (not Linux)."""
    path = Path(cpuinfo)
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None, machine: str | None = None) -> bool:
    """True if this CPU computes bf16 natively. `flags`/`machine` default to this machine's (tests pass
    their own). Without /proc/cpuinfo (macOS, Windows) torch's own x86 probe is asked, else False."""
    machine = (machine or platform.machine()).lower()
    if flags is None:
        flags = cpu_flags()
    if flags is None:  # no /proc/cpuinfo: torch's cpuinfo probe (private API, hence guarded)
        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        try:
            return bool(probe()) if probe is not None and machine in ("x86_64", "amd64") else False
        except Exception:
            return False
    if machine in ("aarch64", "arm64"):
        return bool(flags & ARM_BF16_FLAGS)
    return bool(flags & X86_BF16_FLAGS)


@functools.cache
def _native_cpu() -> bool:
    return cpu_has_native_bf16()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (cached per process for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _native_cpu()


_warned: set[str] = set()


def resolve_precision(precision: str, device: torch.device) -> str:
    """Config.precision on `device` -> the precision the run uses: "bf16" or "fp32". A forced "bf16"
    where it is not native warns once per process (it runs, emulated and slower)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    native = native_bf16(device)
    if precision == "auto":  # bf16 on CUDA only: on CPUs it is not shown equivalent (module doc)
        return "bf16" if native and device.type == "cuda" else "fp32"
    if not native and device.type not in _warned:
        _warned.add(device.type)
        warnings.warn(f"precision bf16 forced on a {device.type} without native bf16: emulated, likely slower "
                      "than fp32 (precision 'auto' would pick fp32 here)", RuntimeWarning, stacklevel=2)
    return "bf16"


def warn_precision_change(before: str | None, now: str, setting: str) -> None:
    """A resumed run whose checkpoint trained in another precision (precision 'auto' on another machine):
    it continues, in `now`, and says so. Pin the precision (bf16 or fp32) to resume exactly as trained."""
    if before is not None and before != now:
        warnings.warn(f"resuming a run that trained in {before} in {now} (precision {setting!r} resolves per "
                      f"device); pass precision {before} to continue in {before}", RuntimeWarning, stacklevel=2)
