import json

import numpy as np
import pytest

from pbn import evaluate
from pbn.data import readers
from pbn.data.records import flags_from
from pbn.evaluate import score_files
from pbn.pck import lsp_pck, mpii_pckh
from pbn.skeleton import ANNOTATED, MISSING, OCCLUDED, VISIBLE

from .conftest import LSP_JSON, VALID, run_cli


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`python -m pbn.evaluate <argv>` in-process: (exit code, stdout, stderr). One test runs the real
    subprocess (test_real_validation_subset_with_jittered_predictions)."""
    code = evaluate.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


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


def test_real_validation_subset_with_jittered_predictions(tmp_path, capsys):
    """The subprocess smoke test of `python -m pbn.evaluate`; the other CLI tests call main() in-process."""
    import scipy.io

    g = readers.read_gt_mat(VALID / "gt_valid_first200.mat")
    vis = readers.read_visibility(VALID / "valid_first200.h5")
    flags = flags_from(g["annotated"], vis)
    assert (flags == OCCLUDED).sum() == (g["annotated"] & ~vis).sum() == 579
    pred = g["joints"] + np.random.default_rng(0).normal(0, 5, g["joints"].shape)
    scipy.io.savemat(tmp_path / "preds.mat", {"preds": pred + 1})  # published files are 1-based
    r = run_cli("pbn.evaluate", "--preds", str(tmp_path / "preds.mat"), "--gt", str(VALID / "gt_valid_first200.mat"),
                "--visibility", str(VALID / "valid_first200.h5"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    direct = mpii_pckh(pred, g["joints"], flags, g["head_size"])
    assert {k: out[k] for k in ("mean", "occluded", "visible", "wrist", "auc")} == pytest.approx(
        {k: direct[k] for k in ("mean", "occluded", "visible", "wrist", "auc")})
    assert out["counts"] == direct["counts"] and out["convention"] == "hrnet"
    assert set(out) == {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "mean", "mean@0.1", "auc",
                        "visible", "occluded", "convention", "metric", "counts", "preds_read_as"}
    code, stdout, stderr = cli(capsys, "--preds", tmp_path / "preds.mat", "--gt", VALID / "gt_valid_first200.mat",
                               "--convention", "pytorch-pose")
    assert code == 0 and "Mean@0.1" in stdout and "convention=pytorch-pose" in stdout
    with pytest.warns(UserWarning, match="no visibility"):
        pp = mpii_pckh(pred, g["joints"], flags_from(g["annotated"], None), g["head_size"], "pytorch-pose")
    assert stdout.splitlines()[2].split()[7] == f"{pp['mean']:.2f}"  # the table's Mean column
    assert "warning: ground truth has no visibility flags" in stderr


def test_validation_scorer_resamples_the_images_of_the_real_subset():
    """pckh_scorer (what training validates with) passes each record's image: the 200 people of the subset
    are 188 images (10 with two people, 1 with three), and the interval resamples those."""
    from pbn.data.dataset import pckh_scorer

    g = readers.read_gt_mat(VALID / "gt_valid_first200.mat")
    vis = readers.read_visibility(VALID / "valid_first200.h5")
    recs = readers.read_mpii_json(VALID / "valid_first200.json", visibility=vis, head_sizes=g["head_size"])
    images = [r.image for r in recs]
    assert len(set(images)) == 188
    per_image = np.unique(images, return_counts=True)[1]
    assert (per_image == 2).sum() == 10 and (per_image == 3).sum() == 1
    gt = np.stack([r.joints for r in recs]).astype(np.float64)
    pred = gt[..., :2] + np.random.default_rng(0).normal(0, 10, gt[..., :2].shape)
    m = pckh_scorer(recs)(pred)
    by_image = mpii_pckh(pred, gt[..., :2], gt[..., 2], g["head_size"], intervals=True, images=images)
    by_person = mpii_pckh(pred, gt[..., :2], gt[..., 2], g["head_size"], intervals=True)
    assert m["pckh"] == by_image["mean"] == by_person["mean"]
    assert (m["pckh_lo"], m["pckh_hi"]) == by_image["mean_ci"]
    assert (m["pckh_occluded_lo"], m["pckh_occluded_hi"]) == by_image["occluded_ci"]
    # People of one image share their scale, so their hits are correlated: the image interval is wider (the
    # effect averaged over 40 bootstrap seeds is 1.17x at this noise; this fixed seed gives 2.99 vs 2.58).
    half = {k: (r["mean_ci"][1] - r["mean_ci"][0]) / 2 for k, r in (("image", by_image), ("person", by_person))}
    assert half["image"] > 1.1 * half["person"]


def test_evaluate_cli_bad_inputs(tmp_path, capsys):
    gt = str(VALID / "gt_valid_first200.mat")
    np.save(tmp_path / "short.npy", np.zeros((10, 16, 2)))
    np.save(tmp_path / "k14.npy", np.zeros((200, 14, 2)))
    import scipy.io

    scipy.io.savemat(tmp_path / "nokey.mat", {"other": np.zeros((200, 16, 2))})
    cases = [(tmp_path / "missing.npy", "file not found"), (tmp_path / "short.npy", "10 predictions but"),
             (tmp_path / "k14.npy", "has shape (200, 14, 2)"),
             (tmp_path / "nokey.mat", "missing key: expected one of 'preds', 'pred', 'pos_pred_src'")]
    for path, msg in cases:
        code, stdout, stderr = cli(capsys, "--preds", path, "--gt", gt)
        assert code == 2 and stdout == "" and stderr.startswith(f"error: {path}: ") and msg in stderr, (path, stderr)
    pred = readers.read_gt_mat(gt)["joints"] + 1
    pred[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", pred)
    code, stdout, stderr = cli(capsys, "--preds", tmp_path / "nan.npy", "--gt", gt, "--json")
    assert code == 0 and "warning: 1 annotated joint prediction(s) are NaN: counted as misses" in stderr
    out = json.loads(stdout)  # everyone exact but one annotated l knee: that one is a miss
    assert out["mean"] == pytest.approx(100 * (out["counts"]["joints"] - 1) / out["counts"]["joints"])


def test_evaluate_cli_lsp_matlab_layout(tmp_path, capsys):
    recs = readers.read_lsp_json(LSP_JSON)
    gt = np.stack([r.joints[:, :2] for r in recs]) + 1  # 1-based
    np.save(tmp_path / "p.npy", gt.transpose(2, 1, 0))  # 2 x 14 x N
    code, stdout, stderr = cli(capsys, "--dataset", "lsp", "--preds", tmp_path / "p.npy", "--gt", LSP_JSON, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["mean"] == 100
    # 0-based read as 1-based: every joint 1 px off, still within 0.2 torso, but no longer a hit at alpha = 0
    np.save(tmp_path / "z.npy", np.stack([r.joints[:, :2] for r in recs]).transpose(2, 1, 0))
    code, stdout, _ = cli(capsys, "--dataset", "lsp", "--preds", tmp_path / "z.npy", "--gt", LSP_JSON, "--json")
    off = json.loads(stdout)
    flags = np.stack([r.joints[:, 2] for r in recs])
    assert code == 0 and off["mean"] == 100 and off["auc"] == pytest.approx(lsp_pck(gt - 2, gt - 1, flags)["auc"])
    assert off["auc"] < 90
    code, stdout, _ = cli(capsys, "--dataset", "lsp", "--preds", tmp_path / "z.npy", "--gt", LSP_JSON, "--json",
                          "--zero-based")
    assert code == 0 and json.loads(stdout)["auc"] == 100


def test_h5_predictions_and_missing_dataset(tmp_path, capsys):
    import h5py

    gt = VALID / "gt_valid_first200.mat"
    g = readers.read_gt_mat(gt)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["preds"] = g["joints"] + 1
    with pytest.warns(UserWarning, match="no visibility"):  # gt_valid.mat alone carries no is_visible
        assert score_files(tmp_path / "p.h5", gt)["mean"] == 100
    with h5py.File(tmp_path / "q.h5", "w") as f:
        f["other"] = g["joints"]
    code, _, stderr = cli(capsys, "--preds", tmp_path / "q.h5", "--gt", gt)
    assert code == 2 and f"{tmp_path / 'q.h5'}: missing dataset: expected one of 'preds', 'pred'" in stderr


# ------------------------------------------------------------- prediction files: every published key and layout
# (name, transpose of [N, K, C] into the layout)
LAYOUTS = [("N x K x C", (0, 1, 2)), ("C x K x N", (2, 1, 0)), ("K x C x N", (1, 2, 0)), ("K x N x C", (1, 0, 2)),
           ("N x C x K", (0, 2, 1)), ("C x N x K", (2, 0, 1))]


def _write_preds(path, key, arr):
    """arr as the file type of `path` under `key` (.mat: MATLAB v5; .h5 and v7.3-style .mat: HDF5)."""
    import h5py
    import scipy.io

    if path.suffix == ".npy":
        np.save(path, arr)
    elif path.suffix == ".mat" and not path.stem.endswith("v73"):
        scipy.io.savemat(path, {key: arr, "other": np.zeros(3)})
    else:
        with h5py.File(path, "w") as f:
            f[key] = arr
            f["heatmaps"] = np.zeros((2, 2))
    return path


def _mpii_preds():
    g = readers.read_gt_mat(VALID / "gt_valid_first200.mat")
    pred = g["joints"] + np.random.default_rng(1).normal(0, 6, g["joints"].shape) + 1  # 1-based
    score = np.random.default_rng(2).uniform(0, 1, (*pred.shape[:2], 1))  # a third coordinate: dropped
    return pred, np.concatenate([pred, score], -1)


def test_every_layout_key_and_file_type_scores_the_same(tmp_path):
    gt = VALID / "gt_valid_first200.mat"
    pred2, pred3 = _mpii_preds()
    with pytest.warns(UserWarning, match="no visibility"):
        ref = score_files(_write_preds(tmp_path / "ref.npy", None, pred2), gt)
    assert 20 < ref["mean"] < 100  # the jitter makes a non-trivial score
    seen = set()
    for (name, axes), coords in [(lay, c) for lay in LAYOUTS for c in (2, 3)]:
        arr = np.transpose(pred2 if coords == 2 else pred3, axes)
        for key, suffix in [("preds", ".mat"), ("pred", ".mat"), ("pos_pred_src", ".mat"), ("preds", ".h5"),
                            ("pred", ".h5"), ("preds_tf", "_v73.mat"), (None, ".npy")]:
            path = _write_preds(tmp_path / f"p_{len(seen)}{suffix}", key, arr)
            with pytest.warns(UserWarning, match="no visibility"):
                r = score_files(path, gt)
            assert r["per_joint"] == ref["per_joint"] and r["mean"] == ref["mean"] and r["auc"] == ref["auc"], \
                (name, coords, key, suffix)
            assert name in r["preds_read_as"] and (key is None or repr(key) in r["preds_read_as"])
            seen.add((name, coords, key, suffix))
    assert len(seen) == 6 * 2 * 7


def test_preds_key_wins_over_pos_pred_src(tmp_path):
    """detections_our_format.mat-style files carry Tompson's pos_pred_src beside the ground truth; an explicit
    'preds' comes first in the documented key order."""
    import scipy.io

    gt = VALID / "gt_valid_first200.mat"
    pred2, _ = _mpii_preds()
    scipy.io.savemat(tmp_path / "both.mat", {"pos_pred_src": np.zeros((16, 2, 200)), "preds": pred2})
    with pytest.warns(UserWarning, match="no visibility"):
        r = score_files(tmp_path / "both.mat", gt)
    assert r["mean"] > 20 and "'preds'" in r["preds_read_as"]


def _small_gt(tmp_path, n):
    import scipy.io

    m = scipy.io.loadmat(VALID / "gt_valid_first200.mat")
    scipy.io.savemat(tmp_path / f"gt{n}.mat", {"pos_gt_src": m["pos_gt_src"][:, :, :n],
                                               "jnt_missing": m["jnt_missing"][:, :n],
                                               "headboxes_src": m["headboxes_src"][:, :, :n]})
    return tmp_path / f"gt{n}.mat", readers.read_gt_mat(tmp_path / f"gt{n}.mat")


def test_ambiguous_sizes_use_the_documented_order_and_say_so(tmp_path, capsys):
    gt16, g16 = _small_gt(tmp_path, 16)  # N == K == 16: N x K x C and K x N x C both fit
    pred = g16["joints"] + 1
    pred[:, 9] += 1000  # head top always wrong: the transposed reading would score differently
    np.save(tmp_path / "p16.npy", pred)
    with pytest.warns(UserWarning) as caught:
        r = score_files(tmp_path / "p16.npy", gt16)
    msgs = [str(w.message) for w in caught]
    assert any("fits layouts N x K x C, K x N x C: read as N x K x C" in m and "(16, 16, 2)" in m for m in msgs), msgs
    assert r["head"] == 0 and r["shoulder"] == 100
    code, stdout, stderr = cli(capsys, "--preds", tmp_path / "p16.npy", "--gt", gt16, "--json")
    assert code == 0 and json.loads(stdout)["head"] == 0
    assert f"warning: {tmp_path / 'p16.npy'}: the array of shape (16, 16, 2) fits layouts N x K x C, K x N x C: " \
           "read as N x K x C" in stderr

    gt3, g3 = _small_gt(tmp_path, 3)  # N = 3: 3 x 16 x 2 could be C x K x N with N = 2; the ground truth says 3
    np.save(tmp_path / "p3.npy", g3["joints"] + 1)
    np.save(tmp_path / "p3t.npy", np.transpose(g3["joints"] + 1, (2, 1, 0)))  # 2 x 16 x 3: C x K x N
    for name, layout in (("p3.npy", "N x K x C"), ("p3t.npy", "C x K x N")):
        with pytest.warns(UserWarning, match="no visibility") as caught:
            r = score_files(tmp_path / name, gt3)
        assert not any("fits layouts" in str(w.message) for w in caught)
        assert r["mean"] == 100 and layout in r["preds_read_as"]

    gt2, g2 = _small_gt(tmp_path, 2)  # 2 x 16 x 2 with 2 people: both readings give N = 2
    np.save(tmp_path / "p2.npy", g2["joints"] + 1)
    with pytest.warns(UserWarning) as caught:
        assert score_files(tmp_path / "p2.npy", gt2)["mean"] == 100
    assert any("fits layouts N x K x C, C x K x N: read as N x K x C" in str(w.message) for w in caught)


def test_unreadable_layouts_get_one_clear_line(tmp_path, capsys):
    import scipy.io

    gt = str(VALID / "gt_valid_first200.mat")
    scipy.io.savemat(tmp_path / "k15.mat", {"pred": np.zeros((200, 15, 2))})
    scipy.io.savemat(tmp_path / "c4.mat", {"preds": np.zeros((200, 16, 4))})
    np.save(tmp_path / "d4.npy", np.zeros((1, 200, 16, 2)))
    scipy.io.savemat(tmp_path / "struct.mat", {"pred": {"annorect": np.zeros(3)}})
    (tmp_path / "text.mat").write_text("not a mat file")
    cases = [("k15.mat", ["key 'pred'", "(200, 15, 2)", "size 16 (joints)"]),
             ("c4.mat", ["key 'preds'", "(200, 16, 4)", "size 2 or 3"]),
             ("d4.npy", ["the array", "(1, 200, 16, 2)", "expected 3 axes"]),
             ("struct.mat", ["key 'pred'", "not an array of numbers"]),
             ("text.mat", ["not a readable .mat file"])]
    for name, parts in cases:
        code, stdout, stderr = cli(capsys, "--preds", tmp_path / name, "--gt", gt)
        lines = stderr.strip().splitlines()
        assert code == 2 and stdout == "" and len(lines) == 1, (name, stderr)
        assert lines[0].startswith(f"error: {tmp_path / name}: ") and all(p in lines[0] for p in parts), lines


def test_help_states_keys_and_layouts(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the option help
    keys = "'preds', 'pred', 'pos_pred_src', 'preds_tf'"
    layouts = "N x K x C, C x K x N, K x C x N, K x N x C, N x C x K, C x N x K"
    assert f"the first of the keys {keys.replace(chr(39), '')}" in text and f"{layouts} (e.g." in text
    for flag in ("--preds", "--gt", "--visibility", "--convention {hrnet,pytorch-pose}", "--dataset {mpii,lsp}",
                 "--zero-based", "--json", "1-based (MATLAB) pixels"):
        assert flag in text, flag


def test_lsp_eval_pose_pred_file(tmp_path, capsys):
    """eval_pose's LSP files: key 'pred', 2 x 14 x N, 1-based. Exactly 100 for the ground truth; a known
    perturbation gives the hand-computed value."""
    import scipy.io

    recs = readers.read_lsp_json(LSP_JSON)
    gt = np.stack([r.joints[:, :2] for r in recs])  # 0-based [1000, 14, 2]
    scipy.io.savemat(tmp_path / "pred_keypoints_lsp_oc.mat", {"pred": (gt + 1).transpose(2, 1, 0)})
    cmd = ["--dataset", "lsp", "--gt", LSP_JSON, "--json", "--preds"]
    code, stdout, stderr = cli(capsys, *cmd, tmp_path / "pred_keypoints_lsp_oc.mat")
    assert code == 0, stderr
    out = json.loads(stdout)
    assert out["mean"] == 100 and out["head"] == 100 and "key 'pred', C x K x N (2 x 14 x 1000)" in out["preds_read_as"]

    torso = np.linalg.norm(gt[:, 9] - gt[:, 2], axis=-1)  # l shoulder to r hip
    pred = gt.copy()
    pred[:, 13, 0] += 0.25 * torso  # head top of everyone at 0.25 > 0.2: missed
    pred[:250, 11, 1] -= 0.3 * torso[:250]  # l wrist of the first 250 people missed
    pred[250:500, 6, 0] += 0.15 * torso[250:500]  # r wrist of 250 more moved, but within 0.2: still hits
    scipy.io.savemat(tmp_path / "perturbed.mat", {"pred": (pred + 1).transpose(2, 1, 0)})
    out = json.loads(cli(capsys, *cmd, tmp_path / "perturbed.mat")[1])
    assert out["head"] == pytest.approx(50.0)  # mean of neck (100) and head top (0)
    assert out["wrist"] == pytest.approx((100 + 75) / 2)
    assert out["mean"] == pytest.approx(100 * (14 * 1000 - 1000 - 250) / (14 * 1000))  # 91.0714...
