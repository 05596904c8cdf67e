import json

import numpy as np
import pytest

from pbn.data import readers
from pbn.data.records import flags_from
from pbn.evaluate import lsp_pck, mpii_pckh
from pbn.skeleton import ANNOTATED, MISSING, OCCLUDED, VISIBLE

from .conftest import LSP_JSON, VALID, run_cli


def people(n=4):
    gt = np.tile(np.arange(32, dtype=float).reshape(16, 2) * 10, (n, 1, 1))
    return gt, np.full((n, 16), VISIBLE), np.full(n, 10.0)


def test_perfect_predictions_score_100():
    gt, flags, head = people()
    r = mpii_pckh(gt.copy(), gt, flags, head)
    assert all(r[k] == 100 for k in ("head", "shoulder", "ankle", "mean", "mean@0.1", "visible"))
    assert r["occluded"] != r["occluded"]  # NaN: there are no occluded joints


def test_error_exactly_at_threshold_pins_le_vs_lt():
    gt, flags, head = people()
    pred = gt.copy()
    pred[..., 0] += 5.0  # e = 5 / 10 = 0.5 exactly
    assert mpii_pckh(pred, gt, flags, head, "hrnet")["mean"] == 100
    assert mpii_pckh(pred, gt, flags, head, "pytorch-pose")["mean"] == 0
    pred[..., 0] = gt[..., 0] + 1.0  # 0.1 exactly: Mean@0.1 sits at 0.10, not 0.11
    assert mpii_pckh(pred, gt, flags, head, "hrnet")["mean@0.1"] == 100
    pred[..., 0] = gt[..., 0] + 1.05
    assert mpii_pckh(pred, gt, flags, head, "hrnet")["mean@0.1"] == 0


def test_missing_joints_ignored_and_pelvis_thorax_excluded():
    gt, flags, head = people()
    pred = gt.copy()
    pred[:, 0] += 100  # r ankle wrong ...
    flags[:, 0] = MISSING  # ... but not annotated: ignored
    pred[:, 6] += 100  # pelvis wrong: excluded from the Mean
    r = mpii_pckh(pred, gt, flags, head)
    assert r["mean"] == 100 and r["ankle"] == 100 and r["counts"]["joints"] == 4 * 13


def test_weighted_vs_unweighted_mean_and_occluded_subset():
    gt, flags, head = people(4)
    pred = gt.copy()
    flags[1:, 9] = MISSING  # head top annotated once
    pred[0, 9] += 100  # and wrong: per-joint 0 on 1 sample
    flags[:2, 15] = OCCLUDED
    pred[0, 15] += 100  # one of two occluded l wrists wrong
    hr = mpii_pckh(pred, gt, flags, head, "hrnet")
    pp = mpii_pckh(pred, gt, flags, head, "pytorch-pose")
    n = 13 * 4 + 1
    assert hr["mean"] == pytest.approx(100 * (n - 2) / n)
    assert pp["mean"] == pytest.approx((12 * 100 + 0 + 75) / 14)
    assert hr["occluded"] == 50 and hr["visible"] == pytest.approx(100 * (n - 3) / (n - 2))
    assert hr["counts"]["occluded"] == 2


def test_no_visibility_source_reports_nan_with_one_warning():
    gt, flags, head = people()
    flags[:] = ANNOTATED
    with pytest.warns(UserWarning, match="no visibility"):
        r = mpii_pckh(gt, gt, flags, head)
    assert np.isnan(r["visible"]) and np.isnan(r["occluded"]) and r["mean"] == 100


def test_nan_predictions_are_misses():
    gt, flags, head = people()
    pred = gt.copy()
    pred[0, 12] = np.nan
    with pytest.warns(UserWarning, match="1 annotated joint prediction"):
        r = mpii_pckh(pred, gt, flags, head)
    assert r["shoulder"] == pytest.approx((75 + 100) / 2)


def test_lsp_pck_torso_normalized():
    gt = np.tile(np.arange(28, dtype=float).reshape(14, 2) * 3, (5, 1, 1))
    gt[:, 2], gt[:, 9] = (6.0, 8.0), (0.0, 0.0)  # r-hip to l-shoulder: exactly 10 px
    flags = np.full((5, 14), VISIBLE)
    flags[:, 3] = OCCLUDED  # LSP scores every joint, occluded or not
    pred = gt.copy()
    pred[:, :, 0] += 2.0  # e = 0.2 exactly: a hit (<=)
    assert lsp_pck(pred, gt, flags)["mean"] == 100
    pred[:, 13, 0] += 0.01  # head top just past it; Head = mean(neck, head top)
    r = lsp_pck(pred, gt, flags)
    assert r["head"] == 50 and r["mean"] == pytest.approx(100 * 13 / 14) and r["occluded"] == 100


def test_lsp_pck_on_real_labels_is_perfect_for_gt():
    recs = readers.read_lsp_json(LSP_JSON)
    gt = np.stack([r.joints[:, :2] for r in recs])
    assert lsp_pck(gt, gt, np.stack([r.joints[:, 2] for r in recs]))["mean"] == 100


def test_real_validation_subset_with_jittered_predictions(tmp_path):
    import scipy.io

    g = readers.read_gt_mat(VALID / "gt_valid_first200.mat")
    vis = readers.read_visibility(VALID / "valid_first200.h5")
    flags = flags_from(g["annotated"], vis)
    assert (flags == OCCLUDED).sum() > 300
    pred = g["joints"] + np.random.default_rng(0).normal(0, 5, g["joints"].shape)
    scipy.io.savemat(tmp_path / "preds.mat", {"preds": pred + 1})  # published files are 1-based
    r = run_cli("pbn.evaluate", "--preds", str(tmp_path / "preds.mat"), "--gt", str(VALID / "gt_valid_first200.mat"),
                "--visibility", str(VALID / "valid_first200.h5"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    direct = mpii_pckh(pred, g["joints"], flags, g["head_size"])
    assert out["mean"] == pytest.approx(direct["mean"]) and out["occluded"] == pytest.approx(direct["occluded"])
    assert set(out) >= {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "mean", "mean@0.1",
                        "visible", "occluded", "convention"}
    table = run_cli("pbn.evaluate", "--preds", str(tmp_path / "preds.mat"), "--gt",
                    str(VALID / "gt_valid_first200.mat"), "--convention", "pytorch-pose")
    assert table.returncode == 0 and "Mean@0.1" in table.stdout and "pytorch-pose" in table.stdout
    assert "no visibility" in table.stderr


def test_evaluate_cli_bad_inputs(tmp_path):
    gt = str(VALID / "gt_valid_first200.mat")
    np.save(tmp_path / "short.npy", np.zeros((10, 16, 2)))
    np.save(tmp_path / "k14.npy", np.zeros((200, 14, 2)))
    import scipy.io

    scipy.io.savemat(tmp_path / "nokey.mat", {"pred": np.zeros((200, 16, 2))})
    cases = [(tmp_path / "missing.npy", "file not found"), (tmp_path / "short.npy", "10 predictions but"),
             (tmp_path / "k14.npy", "N x 16 x 2"), (tmp_path / "nokey.mat", "missing key 'preds'")]
    for path, msg in cases:
        r = run_cli("pbn.evaluate", "--preds", str(path), "--gt", gt)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (path, r.stderr)
    pred = readers.read_gt_mat(gt)["joints"] + 1
    pred[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", pred)
    r = run_cli("pbn.evaluate", "--preds", str(tmp_path / "nan.npy"), "--gt", gt, "--json")
    assert r.returncode == 0 and "NaN" in r.stderr


def test_evaluate_cli_lsp_matlab_layout(tmp_path):
    recs = readers.read_lsp_json(LSP_JSON)
    gt = np.stack([r.joints[:, :2] for r in recs]) + 1  # 1-based
    np.save(tmp_path / "p.npy", gt.transpose(2, 1, 0))  # 2 x 14 x N
    r = run_cli("pbn.evaluate", "--dataset", "lsp", "--preds", str(tmp_path / "p.npy"), "--gt", str(LSP_JSON), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mean"] == 100


def test_h5_predictions_and_missing_dataset(tmp_path):
    import h5py

    from pbn.evaluate import score_files

    gt = VALID / "gt_valid_first200.mat"
    g = readers.read_gt_mat(gt)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["preds"] = g["joints"] + 1
    with pytest.warns(UserWarning, match="no visibility"):  # gt_valid.mat alone carries no is_visible
        assert score_files(tmp_path / "p.h5", gt)["mean"] == 100
    with h5py.File(tmp_path / "q.h5", "w") as f:
        f["other"] = g["joints"]
    r = run_cli("pbn.evaluate", "--preds", str(tmp_path / "q.h5"), "--gt", str(gt))
    assert r.returncode == 2 and "missing dataset 'preds'" in r.stderr
