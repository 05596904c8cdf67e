"""Config.precision: native-bf16 detection, its resolution, what fit reports, and bf16 determinism/resume."""

import json
import platform
import warnings
from pathlib import Path

import pytest
import torch

import pbn.device as device
from pbn.config import ConfigError, resolve
from pbn.device import cpu_flags, cpu_has_native_bf16, resolve_precision
from pbn.metrics import METRICS
from pbn.train import CHECKPOINT, build_parser, fit

from .conftest import TINY

CPUINFO = Path("/proc/cpuinfo")
TIMING = {"images_per_second", "epoch_seconds", "train_seconds", "val_seconds", "setup_seconds"}

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw {extra}
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid {extra}
CPU implementer\t: 0x41
"""


def test_detection_agrees_with_this_machines_cpuinfo():
    """Whatever this machine is: native bf16 iff its cpuinfo flags name a bf16 feature (this project's CPU
    machine has amx_bf16 and avx512_bf16, so there it is True); `auto` is fp32 on any CPU all the same (bf16
    was not shown equivalent: pbn/device.py)."""
    if not CPUINFO.exists():  # not Linux: nothing to read, and detection falls back to torch's probe
        assert cpu_flags() is None
        return
    words = set()
    for line in CPUINFO.read_text().splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            words |= set(line.split(":", 1)[1].split())
    arm = platform.machine().lower() in ("aarch64", "arm64")
    expected = "bf16" in words if arm else bool({"amx_bf16", "avx512_bf16"} & words)
    assert cpu_has_native_bf16() is expected
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_cpuinfo_parsing_x86_and_arm(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(X86_CPUINFO.format(extra="avx512_bf16 amx_tile amx_bf16"))
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= cpu_flags(f)
    assert cpu_has_native_bf16(cpu_flags(f), "x86_64")
    f.write_text(X86_CPUINFO.format(extra="avx512_vnni"))
    assert not cpu_has_native_bf16(cpu_flags(f), "x86_64")
    f.write_text(X86_CPUINFO.format(extra="avx512_bf16"))  # Cooper Lake / Zen 4: no AMX, still native
    assert cpu_has_native_bf16(cpu_flags(f), "x86_64")
    f.write_text(ARM_CPUINFO.format(extra="bf16 i8mm sve"))
    assert cpu_has_native_bf16(cpu_flags(f), "aarch64")
    f.write_text(ARM_CPUINFO.format(extra="sve"))
    assert not cpu_has_native_bf16(cpu_flags(f), "aarch64")
    assert cpu_flags(tmp_path / "missing") is None


def test_a_cpu_without_bf16_flags_runs_auto_in_fp32(monkeypatch):
    """The machine's real flags minus every bf16 feature: auto is fp32, a forced bf16 warns once."""
    real = cpu_flags() or frozenset({"avx2"})
    monkeypatch.setattr(device, "cpu_flags", lambda *a: real - {"amx_bf16", "avx512_bf16", "bf16"})
    device._native_cpu.cache_clear()
    monkeypatch.setattr(device, "_warned", set())
    try:
        cpu = torch.device("cpu")
        assert not cpu_has_native_bf16()
        assert resolve_precision("auto", cpu) == "fp32"
        assert resolve_precision("fp32", cpu) == "fp32"
        with pytest.warns(RuntimeWarning, match="without native bf16"):
            assert resolve_precision("bf16", cpu) == "bf16"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert resolve_precision("bf16", cpu) == "bf16"  # once per process
    finally:
        device._native_cpu.cache_clear()


def test_fp32_is_always_available_and_auto_is_fp32_on_a_native_bf16_cpu(monkeypatch):
    monkeypatch.setattr(device, "_native_cpu", lambda: True)
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # not shown equivalent on CPUs
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # the opt-in
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", torch.device("cpu"))


def test_precision_is_a_config_field_and_a_flag():
    assert resolve({}).precision == "auto"
    assert resolve({"precision": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match="precision: expected one of"):
        resolve({"precision": "fp16"})
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve({"bf16": True})  # the field it replaced
    p = build_parser()
    assert p.parse_args(["--precision", "fp32"]).precision == "fp32"
    assert "--precision" in p.format_help() and "--bf16" not in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args(["--bf16"])


def test_precision_metric_is_declared_for_the_parquet_schema():
    m = {m.key: m for m in METRICS}["precision"]
    assert (m.dtype, m.origin, m.mode) == ("string", "fit", None)


def _strip(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def test_bf16_run_is_deterministic_and_reports_its_precision(tmp_path):
    """Two runs of the same config and seed in bf16 give identical metrics (1 thread, one machine)."""
    cfg = resolve({**TINY, "epochs": 1, "precision": "bf16"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CPU without native bf16 still runs (emulated)
        a = fit(cfg, tmp_path / "a", tensorboard=False)
        b = fit(cfg, tmp_path / "b", tensorboard=False)
    assert a[0]["precision"] == "bf16"
    assert _strip(a) == _strip(b)
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["history"][0]["precision"] == "bf16" and saved["config"]["precision"] == "bf16"


def test_fp32_run_reports_fp32(tmp_path):
    hist = fit(resolve({**TINY, "epochs": 1, "precision": "fp32"}), tmp_path, tensorboard=False)
    assert hist[0]["precision"] == "fp32"


def test_bf16_checkpoint_resumes_as_bf16(tmp_path):
    cfg = resolve({**TINY, "precision": "bf16"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        straight = fit(cfg, tmp_path / "a", tensorboard=False)
        fit(cfg.replace(epochs=1), tmp_path / "b", tensorboard=False)
        resumed = fit(cfg, tmp_path / "b", resume_from=tmp_path / "b" / CHECKPOINT, tensorboard=False)
    assert [m["precision"] for m in resumed] == ["bf16", "bf16"]
    assert _strip(resumed) == _strip(straight)
    with pytest.raises(ConfigError, match=r"different config \(\['precision'\]\)"):
        fit(cfg.replace(precision="fp32"), tmp_path / "b", resume_from=tmp_path / "b" / CHECKPOINT,
            tensorboard=False)


def test_auto_resumed_in_another_precision_says_so(tmp_path, monkeypatch):
    """precision auto resolves per device: a checkpoint trained in bf16 (auto on a CUDA node, played here by the
    resolution itself) resumed where auto means fp32 (a CPU) continues in fp32 and says so."""
    import pbn.train

    cfg = resolve({**TINY, "precision": "auto"})
    monkeypatch.setattr(pbn.train, "resolve_precision", lambda precision, dev: "bf16")
    fit(cfg.replace(epochs=1), tmp_path, tensorboard=False)
    monkeypatch.setattr(pbn.train, "resolve_precision", lambda precision, dev: "fp32")
    with pytest.warns(RuntimeWarning, match="trained in bf16 in fp32"):
        resumed = fit(cfg, tmp_path, resume_from=tmp_path / CHECKPOINT, tensorboard=False)
    assert [m["precision"] for m in resumed] == ["bf16", "fp32"]


def test_auto_checkpoint_resumes_under_the_precision_it_resolved_to(tmp_path):
    """A sweep pins "auto" to what its first trial resolved; a trial checkpointed before the pin resumes under
    the pinned setting when that is what it trained in, and is refused under another."""
    cfg = resolve({**TINY, "precision": "auto"})
    first = fit(cfg.replace(epochs=1), tmp_path, tensorboard=False)[0]["precision"]
    resumed = fit(cfg.replace(precision=first), tmp_path, resume_from=tmp_path / CHECKPOINT, tensorboard=False)
    assert [m["precision"] for m in resumed] == [first, first]
    other = {"fp32": "bf16", "bf16": "fp32"}[first]
    with pytest.raises(ConfigError, match=r"different config \(\['precision'\]\)"):
        fit(cfg.replace(precision=other), tmp_path, resume_from=tmp_path / CHECKPOINT, tensorboard=False)
