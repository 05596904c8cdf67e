import json
import math

import pytest
import torch

from pbn.config import ConfigError, resolve
from pbn.data.records import DataError
from pbn.train import CHECKPOINT, NonFiniteLossError, fit, load_checkpoint, train_one_epoch

from .conftest import TINY, run_cli

KEYS = {"epoch", "train_loss", "val_loss", "pckh", "pckh_visible", "pckh_occluded", "pckh_0_1", "pckh_head",
        "pckh_shoulder", "pckh_elbow", "pckh_wrist", "pckh_hip", "pckh_knee", "pckh_ankle", "images_per_second",
        "epoch_seconds", "lr", "precision"}


def test_two_short_epochs_finite_decreasing_loss(tmp_path):
    hist = fit(resolve({**TINY, "grouping": "mi", "clusters": 3}), tmp_path, tensorboard=True)
    assert [m["epoch"] for m in hist] == [1, 2]
    assert KEYS <= set(hist[0])
    assert all(math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"]) for m in hist)
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    assert 0 <= hist[1]["pckh"] <= 100
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["history"][-1]["epoch"] == 2 and saved["config"]["clusters"] == 3 and saved["code_version"]
    assert json.loads((tmp_path / "config.json").read_text())["grouping"] == "mi"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_resume_reaches_the_same_epoch_2_metrics(tmp_path):
    cfg = resolve(TINY)
    straight = fit(cfg, tmp_path / "a", tensorboard=False)
    fit(cfg.replace(epochs=1), tmp_path / "b", tensorboard=False)
    resumed = fit(cfg, tmp_path / "b", resume_from=tmp_path / "b" / CHECKPOINT, tensorboard=False)
    assert [m["epoch"] for m in resumed] == [1, 2]
    for key in ("train_loss", "val_loss", "pckh", "pckh_0_1"):
        assert resumed[1][key] == pytest.approx(straight[1][key], rel=1e-5, abs=1e-9), key


def test_resume_with_a_different_config_is_refused(tmp_path):
    cfg = resolve({**TINY, "epochs": 1})
    fit(cfg, tmp_path, tensorboard=False)
    with pytest.raises(ConfigError, match="different config"):
        fit(cfg.replace(width=32), tmp_path, resume_from=tmp_path / CHECKPOINT, tensorboard=False)
    loaded = load_checkpoint(tmp_path / CHECKPOINT)  # what a resumed search trial passes
    with pytest.raises(ConfigError, match=r"checkpoint of epoch 1: .*different config \(\['width'\]\)"):
        fit(cfg.replace(width=32), tmp_path, resume_from=loaded, tensorboard=False)


def test_nan_input_stops_with_epoch_and_step():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1))

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return [torch.nn.functional.avg_pool2d(self.m(x), 4)]

    good = {"image": torch.zeros(2, 3, 16, 16), "target": torch.zeros(2, 16, 4, 4), "weight": torch.ones(2, 16)}
    bad = {**good, "image": torch.full((2, 3, 16, 16), float("nan"))}
    net = Wrap()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match="epoch 3, step 1"):
        train_one_epoch(net, [good, bad], opt, torch.device("cpu"), 3, False, False)


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve({"widht": 3})
    with pytest.raises(ConfigError, match="width: expected int"):
        resolve({"width": "64"})
    with pytest.raises(ConfigError, match="data_root"):
        resolve({"data": "mpii"})
    for key in ("depth", "workers", "synthetic_cache_mb"):
        with pytest.raises(ConfigError, match=f"{key}: expected >= 0, got -1"):
            resolve({key: -1})


def test_missing_data_root_fails_before_training(tmp_path):
    with pytest.raises(DataError, match="directory not found"):
        fit(resolve({**TINY, "data": "mpii", "data_root": str(tmp_path / "nope")}), tmp_path / "o")
    (tmp_path / "root" / "mpii").mkdir(parents=True)
    with pytest.raises(DataError, match="image directory not found"):
        fit(resolve({**TINY, "data": "mpii", "data_root": str(tmp_path / "root")}), tmp_path / "o")


def test_train_cli_end_to_end_and_resume(tmp_path):
    args = ["pbn.train", "--input-size", "64", "--channels", "32", "--hg-depth", "2", "--width", "16",
            "--synthetic-train", "32", "--synthetic-val", "16", "--batch-size", "8", "--threads", "1",
            "--grouping", "per-part", "--out", str(tmp_path)]
    r = run_cli(*args, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "epoch   1" in r.stdout and "PCKh" in r.stdout
    r = run_cli(*args, "--epochs", "2")
    assert r.returncode == 2 and "--resume" in r.stderr
    r = run_cli(*args, "--epochs", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert "epoch   2" in r.stdout and "epoch   1" not in r.stdout
    assert [m["epoch"] for m in json.loads((tmp_path / "metrics.json").read_text())["history"]] == [1, 2]


def test_bf16_autocast_matches_fp32_on_a_short_run():
    """The bf16 path (autocast region, float() before loss and decoding) trains to the same PCKh as
    fp32 within noise. `fit` uses the same two functions on CPU and CUDA (precision bf16 or auto)."""
    from torch.utils.data import DataLoader

    from pbn.data.dataset import PoseDataset, load_source
    from pbn.groups import resolve_groups
    from pbn.model import build_model
    from pbn.train import validate

    cfg = resolve({**TINY, "synthetic_train": 96, "synthetic_val": 48})
    train_src, val_src = load_source(cfg, "train"), load_source(cfg, "valid")
    results = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, resolve_groups("human"))
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        train = DataLoader([PoseDataset(train_src, cfg, True).item(i, 0) for i in range(96)], batch_size=8)
        val = DataLoader(PoseDataset(val_src, cfg, False), batch_size=16)
        for epoch in range(4):
            train_one_epoch(model, train, opt, torch.device("cpu"), epoch + 1, amp, False)
        results[amp] = validate(model, val, val_src, torch.device("cpu"), amp, False, True)
    assert results[True]["val_loss"] == pytest.approx(results[False]["val_loss"], rel=0.1)
    assert abs(results[True]["pckh"] - results[False]["pckh"]) < 10
