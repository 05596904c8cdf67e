import json

import numpy as np
import pytest

from pbn.data import readers
from pbn.data.records import DataError
from pbn.skeleton import ANNOTATED, MISSING, OCCLUDED, VISIBLE

from .conftest import KAGGLE_CSV, LSP_JSON, MPII, SAMPLES, VALID


def test_three_validation_formats_agree_person_by_person():
    js = readers.read_mpii_json(VALID / "valid_first200.json")
    h5 = readers.read_mpii_h5(VALID / "valid_first200.h5")
    gt = readers.read_gt_mat(VALID / "gt_valid_first200.mat")
    assert len(js) == len(h5) == len(gt["joints"]) == 200
    for i, (a, b) in enumerate(zip(js, h5)):
        assert a.image == b.image
        ann = a.annotated
        assert (ann == b.annotated).all() and (ann == gt["annotated"][i]).all()
        assert np.abs(a.joints[ann, :2] - gt["joints"][i][ann]).max() < 1e-3
        assert np.abs(a.joints[ann, :2] - b.joints[ann, :2]).max() <= 1.5  # documented: within 1.5 px
        assert np.allclose(a.centre, b.centre, atol=1e-3) and a.scale == pytest.approx(b.scale, rel=1e-5)
        assert b.head_size == pytest.approx(gt["head_size"][i], rel=1e-4)


def test_centre_scale_convention_sample_0():
    rec = readers.read_mpii_json(VALID / "valid_first200.json")[0]
    # raw objpos (966, 340), s 4.718 -> (965, 410.78) 0-based, 5.898 (evaluation.md)
    assert rec.centre == pytest.approx([965.0, 339.0 + 15 * 4.718488], abs=1e-3)
    assert rec.scale == pytest.approx(1.25 * 4.718488)


def test_visibility_flags_keep_annotated_and_visible_apart():
    h5 = readers.read_mpii_h5(VALID / "valid_first200.h5")
    flags = np.stack([r.joints[:, 2] for r in h5])
    assert set(np.unique(flags)) <= {MISSING, OCCLUDED, VISIBLE}
    assert (flags == OCCLUDED).sum() > 0
    js = readers.read_mpii_json(VALID / "valid_first200.json")
    assert set(np.unique(np.stack([r.joints[:, 2] for r in js]))) <= {MISSING, ANNOTATED}
    vis = readers.read_visibility(VALID / "valid_first200.h5")
    with_vis = readers.read_mpii_json(VALID / "valid_first200.json", visibility=vis)
    assert (np.stack([r.joints[:, 2] for r in with_vis]) == flags).all()


def test_bearpaw_json_occluded_example():
    recs = readers.read_bearpaw_json(MPII / "bearpaw_format_train_sample.json")
    assert len(recs) == 130
    r = recs[0]
    assert r.image == "015601864.jpg"
    assert r.joints[3, 2] == OCCLUDED and r.joints[6, 2] == OCCLUDED and r.joints[0, 2] == VISIBLE


def test_kaggle_csv_missing_joints():
    recs = readers.read_mpii_csv(KAGGLE_CSV)
    assert len(recs) == 14649
    assert recs[1].joints[0, 2] == MISSING and recs[1].joints[2, 2] == ANNOTATED
    assert recs[0].joints[0, :2].tolist() == [619.0, 393.0]  # 1-based 620, 394


def test_lsp_json_and_mat_layouts(tmp_path):
    import scipy.io

    oc = readers.read_lsp_json(LSP_JSON)
    pc = readers.read_lsp_json(LSP_JSON, labels="person_centric")
    assert len(oc) == len(pc) == 1000 and oc[0].joints.shape == (14, 3)
    occ = np.mean([(r.joints[:, 2] == OCCLUDED).mean() for r in oc])
    assert 0.03 < occ < 0.15  # about 7% of LSP entries are flagged occluded
    doc = json.loads(LSP_JSON.read_text())["observer_centric"]
    xy = np.array([e["joints"] for e in doc])  # N x 14 x 2
    row3 = np.array([e["flag_row3"] for e in doc])
    orig = np.concatenate([xy.transpose(2, 1, 0), row3.T[None]], 0)  # 3 x 14 x N, row 3: 1 = occluded
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": orig})
    a = readers.read_lsp_mat(tmp_path / "joints.mat")
    ext = np.concatenate([xy.transpose(1, 2, 0), (1 - row3).T[:, None]], 1)  # 14 x 3 x N, 1 = visible
    scipy.io.savemat(tmp_path / "ext.mat", {"joints": ext})
    b = readers.read_lsp_mat(tmp_path / "ext.mat")
    assert a[0].image == "im0001.jpg" and b[0].image == "im00001.jpg"
    for r1, r2, r3 in zip(a, b, oc):
        assert np.allclose(r1.joints, r3.joints) and np.allclose(r2.joints, r3.joints)
    big = readers.lsp_records(np.zeros((2000, 14, 2)) + np.arange(14)[:, None], np.zeros((2000, 14), bool),
                              [f"im{i:04d}.jpg" for i in range(1, 2001)])
    assert readers.lsp_split(big, "test")[0].image == "im1001.jpg" and len(readers.lsp_split(big, "test")) == 1000


def test_read_annotations_dispatch():
    assert len(readers.read_annotations(SAMPLES / "test_mpii.json")) == 5
    assert len(readers.read_annotations(VALID / "valid_first200.h5")) == 200
    assert len(readers.read_annotations(VALID / "gt_valid_first200.mat")) == 200
    assert len(readers.read_annotations(LSP_JSON)) == 1000


@pytest.mark.parametrize("content,match", [
    ("not json", "not valid JSON"),
    ('[{"foo": 1}]', "unrecognized JSON"),
    ('[{"image": "a.jpg", "joints_vis": [1], "joints": [[1, 2]], "center": [1, 1], "scale": 1}]', "shape"),
    ('[{"image": "a.jpg", "joints_vis": [1]}]', "field 'joints'"),
])
def test_bad_json_names_file_and_field(tmp_path, content, match):
    p = tmp_path / "ann.json"
    p.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        readers.read_annotations(p)
    assert str(p) in str(e.value)


def test_bad_mat_and_missing_files(tmp_path):
    import scipy.io

    scipy.io.savemat(tmp_path / "g.mat", {"pos_gt_src": np.zeros((16, 2, 3))})
    with pytest.raises(DataError, match="jnt_missing"):
        readers.read_gt_mat(tmp_path / "g.mat")
    with pytest.raises(DataError, match="file not found"):
        readers.read_mpii_json(tmp_path / "nope.json")
    with pytest.raises(DataError, match="same people"):
        _mpii_root_with_mismatched_h5(tmp_path)


def _mpii_root_with_mismatched_h5(tmp_path):
    import shutil

    ann = tmp_path / "root" / "mpii" / "annotations"
    ann.mkdir(parents=True)
    (tmp_path / "root" / "mpii" / "images").mkdir()
    entries = json.loads((VALID / "valid_first200.json").read_text())
    entries[0], entries[1] = entries[1], entries[0]
    (ann / "valid.json").write_text(json.dumps(entries))
    shutil.copy(VALID / "valid_first200.h5", ann / "valid.h5")
    readers.mpii_split(tmp_path / "root", "valid")
