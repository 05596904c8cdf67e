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
    import h5py

    with h5py.File(VALID / "valid_first200.h5", "r") as f:  # annotated (part != 0) and is_visible = 0
        occluded = (f["part"][()] != 0).any(-1) & (f["visible"][()] == 0)
    assert ((flags == OCCLUDED) == occluded).all() and occluded.sum() == 579
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
    doc = json.loads(LSP_JSON.read_text())["observer_centric"]
    occluded = np.stack([r.joints[:, 2] == OCCLUDED for r in oc])
    assert (occluded == (np.array([e["flag_row3"] for e in doc]) > 0)).all()  # flag_row3 = 1: occluded
    assert occluded.mean() == pytest.approx(0.0707, abs=1e-4)  # 7% of LSP entries are flagged occluded
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


# ------------------------------------------------------------------ malformed values never end in a traceback
def _expect_error(read, path, *parts, field: str | None = ...):
    """read() raises DataError (never another exception) whose message names the file and every part, with the
    file as its `path` attribute (and `field`, when given, as its field attribute)."""
    with pytest.raises(DataError) as e:
        read()
    msg = str(e.value)
    assert e.value.path == str(path) and msg == f"{path}: {e.value.message}", (e.value.path, msg)
    assert "\n" not in msg
    for part in parts:
        assert part in e.value.message, (part, msg)
    if field is not ...:
        assert e.value.field == field, (e.value.field, msg)
    return msg


def _edit_json(src, dst, edit):
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))  # json writes NaN as the (Python-readable) literal NaN
    return dst


def _set(i, key, value):
    def edit(data):
        data[i][key] = value
    return edit


def _drop(i, key):
    def edit(data):
        del data[i][key]
    return edit


HRNET_BAD = [
    ("scale-string", _set(7, "scale", "big"), ("entry 7", "'scale'", "expected a positive number", "'big'")),
    ("scale-null", _set(7, "scale", None), ("entry 7", "'scale'", "expected a positive number", "null")),
    ("scale-negative", _set(7, "scale", -2.0), ("entry 7", "'scale'", "expected a positive number", "-2")),
    ("scale-zero", _set(7, "scale", 0), ("entry 7", "'scale'", "expected a positive number")),
    ("scale-nan", _set(7, "scale", float("nan")), ("entry 7", "'scale'", "expected a finite number")),
    ("scale-bool", _set(7, "scale", True), ("entry 7", "'scale'", "expected a positive number", "boolean")),
    ("scale-list", _set(7, "scale", [4.7]), ("entry 7", "'scale'", "expected a positive number")),
    ("center-string", _set(7, "center", "966,340"), ("entry 7", "'center'", "expected 2 numbers", "string")),
    ("center-3", _set(7, "center", [1, 2, 3]), ("entry 7", "'center'", "expected 2 numbers", "(3,)")),
    ("center-null", _set(7, "center", None), ("entry 7", "'center'", "expected 2 numbers", "null")),
    ("center-nan", _set(7, "center", [float("nan"), 3]), ("entry 7", "'center'", "expected finite numbers")),
    ("joints-ragged", _set(7, "joints", [[1, 2]] * 15 + [[1]]), ("entry 7", "'joints'", "expected 16 x 2", "ragged")),
    ("joints-strings", _set(7, "joints", [["1", "2"]] * 16), ("entry 7", "'joints'", "expected 16 x 2", "non-numbers")),
    ("joints-nested", _set(7, "joints", [[[1, 2]]] * 16), ("entry 7", "'joints'", "expected 16 x 2", "(16, 1, 2)")),
    ("joints-transposed", _set(7, "joints", [[1] * 16, [2] * 16]), ("entry 7", "'joints'", "(2, 16)")),
    ("joints-null", _set(7, "joints", None), ("entry 7", "'joints'", "expected 16 x 2", "null")),
    ("joints-nan", _set(7, "joints", [[float("nan"), 1.0]] * 16), ("entry 7", "'joints'", "annotated joint")),
    ("vis-null", _set(7, "joints_vis", None), ("entry 7", "'joints_vis'", "expected 16 numbers")),
    ("vis-short", _set(7, "joints_vis", [1] * 15), ("entry 7", "'joints_vis'", "(15,)")),
    ("image-number", _set(7, "image", 5), ("entry 7", "'image'", "expected a non-empty string")),
    ("image-missing", _drop(7, "image"), ("entry 7", "no field 'image'")),
    ("scale-missing", _drop(7, "scale"), ("entry 7", "no field 'scale'")),
    ("entry-list", lambda d: d.__setitem__(7, [1, 2]), ("entry 7", "expected an object")),
    ("entry-null", lambda d: d.__setitem__(7, None), ("entry 7", "expected an object", "null")),
]


@pytest.mark.parametrize("name,edit,parts", HRNET_BAD, ids=[c[0] for c in HRNET_BAD])
def test_hrnet_json_bad_values(tmp_path, name, edit, parts):
    p = _edit_json(VALID / "valid_first200.json", tmp_path / "train.json", edit)
    field = name.split("-")[0]  # the case's name starts with the field, but for:
    field = {"vis": "joints_vis", "entry": "joints"}.get(field, field)  # a non-object entry: the first field read
    _expect_error(lambda: readers.read_mpii_json(p), p, *parts, field=field)
    _expect_error(lambda: readers.read_annotations(p), p, *parts, field=field)


def test_data_error_attributes_and_pickle(tmp_path):
    import pickle

    e = DataError("entry 3 field 'scale': expected a positive number, got -1", path=tmp_path / "a.json",
                  field="scale")
    assert str(e) == f"{tmp_path / 'a.json'}: entry 3 field 'scale': expected a positive number, got -1"
    assert (e.path, e.field, e.message) == (str(tmp_path / "a.json"), "scale", "entry 3 field 'scale': expected a "
                                                                              "positive number, got -1")
    back = pickle.loads(pickle.dumps(e))  # a DataError raised in a worker process keeps its attributes
    assert (str(back), back.path, back.field, back.message) == (str(e), e.path, e.field, e.message)
    plain = DataError("no usable poses")
    assert (str(plain), plain.path, plain.field) == ("no usable poses", None, None)
    assert isinstance(e, ValueError)


def _savemat(**arrays):
    def make(p):
        import scipy.io

        scipy.io.savemat(p, arrays)
    return make


# (file name, reader, how to make the bad file, the field at fault: None where the file as a whole is)
FILE_ERRORS = [
    ("a.json", readers.read_mpii_json, lambda p: p.write_text("[1"), None),
    ("a.h5", readers.read_mpii_h5, lambda p: p.write_bytes(b"\x89HDF not really"), None),
    ("a.mat", readers.read_gt_mat, _savemat(pos_gt_src=np.zeros((16, 2, 3))), "jnt_missing"),
    ("a.mat", readers.read_lsp_mat, _savemat(joints=np.zeros((2, 14, 5))), "joints"),
    ("a.txt", readers.read_visibility, lambda p: p.write_text("[]"), None),  # neither .h5 nor .json
]


@pytest.mark.parametrize("name,read,make,field", FILE_ERRORS, ids=[c[1].__name__ for c in FILE_ERRORS])
def test_file_level_errors_carry_path_and_field(tmp_path, name, read, make, field):
    make(tmp_path / name)
    _expect_error(lambda: read(tmp_path / name), tmp_path / name, field=field)
    _expect_error(lambda: read(tmp_path / "missing.json"), tmp_path / "missing.json", "file not found", field=None)


def test_hrnet_json_top_level_and_visibility_count(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"people": []}))
    _expect_error(lambda: readers.read_mpii_json(p), p, "expected a JSON list of people", "an object")
    p.write_text("[1, 2]")
    _expect_error(lambda: readers.read_mpii_json(p), p, "entry 0", "expected an object")
    p.write_text("[]")
    assert readers.read_mpii_json(p) == []
    _expect_error(lambda: readers.read_mpii_json(VALID / "valid_first200.json", visibility=np.zeros((3, 16))),
                  VALID / "valid_first200.json", "200 people but visibility has 3")


BEARPAW_BAD = [
    (_set(4, "scale_provided", "big"), ("entry 4", "'scale_provided'", "expected a positive number")),
    (_set(4, "scale_provided", -3), ("entry 4", "'scale_provided'", "expected a positive number")),
    (_set(4, "objpos", None), ("entry 4", "'objpos'", "expected 2 numbers")),
    (_set(4, "joint_self", [[1, 2]] * 16), ("entry 4", "'joint_self'", "expected 16 x 3", "(16, 2)")),
    (_set(4, "img_paths", ["a.jpg"]), ("entry 4", "'img_paths'", "expected a non-empty string")),
    (_set(4, "isValidation", "no"), ("entry 4", "'isValidation'", "expected a number")),
]


@pytest.mark.parametrize("edit,parts", BEARPAW_BAD)
def test_bearpaw_json_bad_values(tmp_path, edit, parts):
    p = _edit_json(MPII / "bearpaw_format_train_sample.json", tmp_path / "b.json", edit)
    _expect_error(lambda: readers.read_bearpaw_json(p, split="train"), p, *parts)


def test_bearpaw_visibility_nan(tmp_path):
    def edit(data):
        data[2]["joint_self"][5][2] = float("nan")
    p = _edit_json(MPII / "bearpaw_format_train_sample.json", tmp_path / "b.json", edit)
    _expect_error(lambda: readers.read_visibility(p), p, "entry 2", "'joint_self'", "joint 5")


@pytest.mark.parametrize("edit,parts", [
    (lambda d: d["observer_centric"][3].__setitem__("joints", "none"), ("entry 3", "'joints'", "expected 14 x 2")),
    (lambda d: d["observer_centric"][3].__setitem__("flag_row3", [0] * 13), ("entry 3", "'flag_row3'", "(13,)")),
    (lambda d: d["observer_centric"][3].__setitem__("joints", [[float("nan"), 0]] * 14),
     ("entry 3", "'joints'", "expected finite numbers")),
    (lambda d: d["observer_centric"][3].pop("image"), ("entry 3", "no field 'image'")),
    (lambda d: d.__setitem__("observer_centric", {"a": 1}), ("'observer_centric'", "expected a list of people")),
])
def test_lsp_json_bad_values(tmp_path, edit, parts):
    data = json.loads(LSP_JSON.read_text())
    edit(data)
    p = tmp_path / "lsp.json"
    p.write_text(json.dumps(data))
    _expect_error(lambda: readers.read_lsp_json(p), p, *parts)


def _h5_copy(tmp_path, change):
    import h5py

    p = tmp_path / "valid.h5"
    with h5py.File(VALID / "valid_first200.h5", "r") as src, h5py.File(p, "w") as dst:
        for k in src:
            dst[k] = src[k][()]
        change(dst)
    return p


def _replace(key, value):
    def change(f):
        del f[key]
        f[key] = value
    return change


def _scale_negative(f):
    s = f["scale"][()]
    s[11] = -1.0
    del f["scale"]
    f["scale"] = s


def _part_nan(f):
    part = f["part"][()]
    part[3, 0, 0] = np.nan
    del f["part"]
    f["part"] = part


def _group(f):
    del f["visible"]
    f.create_group("visible")


H5_BAD = [
    (_replace("scale", np.array([b"big"] * 200)), ("dataset 'scale'", "expected 200 numbers", "|S3")),
    (_scale_negative, ("dataset 'scale'", "expected positive numbers", "entry 11")),
    (_replace("center", np.zeros((200, 3))), ("dataset 'center'", "expected 200 x 2", "(200, 3)")),
    (_part_nan, ("dataset 'part'", "expected finite numbers", "[3, 0, 0]")),
    (_replace("part", np.zeros((199, 16, 2))), ("dataset 'part'", "expected 200 x 16 x 2", "(199, 16, 2)")),
    (_replace("imgname", np.zeros(200)), ("dataset 'imgname'", "expected N strings")),
    (lambda f: f.__delitem__("visible"), ("missing dataset 'visible'",)),
    (_group, ("'visible' is a group",)),
]


@pytest.mark.parametrize("change,parts", H5_BAD)
def test_h5_bad_values(tmp_path, change, parts):
    p = _h5_copy(tmp_path, change)
    field = next(part.split("'")[1] for part in parts if "'" in part)  # "dataset 'scale'" -> scale
    _expect_error(lambda: readers.read_mpii_h5(p), p, *parts, field=field)


def test_h5_char_matrix_names_and_short_imgname_in_split(tmp_path):
    """Torch-era files store imgname as an N x L uint8 matrix; a visibility file listing fewer people than the
    JSON is a DataError, not an IndexError."""
    import h5py

    names = [n.decode() for n in h5py.File(VALID / "valid_first200.h5", "r")["imgname"][()]]
    chars = np.zeros((200, 16), np.uint8)
    for i, n in enumerate(names):
        chars[i, :len(n)] = np.frombuffer(n.encode(), np.uint8)
    p = _h5_copy(tmp_path, _replace("imgname", chars))
    assert [r.image for r in readers.read_mpii_h5(p)] == names
    root = tmp_path / "root"
    (root / "mpii" / "images").mkdir(parents=True)
    (root / "mpii" / "annotations").mkdir()
    entries = json.loads((VALID / "valid_first200.json").read_text())
    (root / "mpii" / "annotations" / "valid.json").write_text(json.dumps(entries[:50]))
    short = tmp_path / "short"
    short.mkdir()
    import shutil

    shutil.copy(_h5_copy(short, lambda f: None), root / "mpii" / "annotations" / "valid.h5")
    _expect_error(lambda: readers.mpii_split(root, "valid"), root / "mpii" / "annotations" / "valid.json",
                  "50 people but visibility has 200")


def _mat_copy(tmp_path, change):
    import scipy.io

    m = {k: v for k, v in scipy.io.loadmat(VALID / "gt_valid_first200.mat").items() if not k.startswith("__")}
    change(m)
    scipy.io.savemat(tmp_path / "gt.mat", m)
    return tmp_path / "gt.mat"


def _mat_item(key, index, value):
    def change(m):
        m[key] = m[key].astype(np.float64)
        m[key][index] = value
    return change


GT_BAD = [
    (lambda m: m.__setitem__("pos_gt_src", "none"), ("key 'pos_gt_src'", "expected 16 x 2 x N numbers")),
    (lambda m: m.__setitem__("jnt_missing", np.zeros((16, 199))), ("key 'jnt_missing'", "(16, 199)")),
    (lambda m: m.__setitem__("headboxes_src", np.zeros((2, 2, 200))),
     ("entry 0 key 'headboxes_src'", "expected a head box of positive finite size")),
    (_mat_item("pos_gt_src", (4, 0, 9), np.nan), ("entry 9 key 'pos_gt_src'", "annotated joint 4")),
    (_mat_item("headboxes_src", (1, 1, 17), np.nan), ("entry 17 key 'headboxes_src'",)),
]


@pytest.mark.parametrize("change,parts", GT_BAD)
def test_gt_mat_bad_values(tmp_path, change, parts):
    p = _mat_copy(tmp_path, change)
    field = parts[0].split("'")[1]  # "key 'pos_gt_src'" -> pos_gt_src
    _expect_error(lambda: readers.read_gt_mat(p), p, *parts, field=field)


def test_lsp_mat_bad_values(tmp_path):
    import scipy.io

    doc = json.loads(LSP_JSON.read_text())["observer_centric"]
    xy = np.array([e["joints"] for e in doc])
    good = np.concatenate([xy.transpose(2, 1, 0), np.zeros((1, 14, len(doc)))], 0)
    p = tmp_path / "joints.mat"
    nan = good.copy()
    nan[1, 6, 42] = np.nan
    for value, parts in [(nan, ("entry 42", "image 43", "joint 6")),
                         (np.zeros((2, 14, 5)), ("must be 3x14xN", "(2, 14, 5)")),
                         (np.array(["abc"]), ("must be 3x14xN",))]:
        scipy.io.savemat(p, {"joints": value})
        _expect_error(lambda: readers.read_lsp_mat(p), p, *parts)
    scipy.io.savemat(p, {"joints": good[:, :, :1]})  # MATLAB keeps 3 x 14 for one person
    assert len(readers.read_lsp_mat(p)) == 1


@pytest.mark.parametrize("cell,value,parts", [
    ("r knee_X", "abc", ("entry 2 (data row 3)", "column 'r knee_X'", "expected a number", "'abc'")),
    ("Scale", "", ("entry 2 (data row 3)", "column 'Scale'", "an empty cell")),
    ("Scale", "-1", ("entry 2 (data row 3)", "column 'Scale'", "expected a positive number")),
    ("Scale", "nan", ("entry 2 (data row 3)", "column 'Scale'", "expected a finite number")),
])
def test_kaggle_csv_bad_cells(tmp_path, cell, value, parts):
    import csv

    with open(KAGGLE_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))[:5]
    rows[2][cell] = value
    p = tmp_path / "k.csv"
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _expect_error(lambda: readers.read_mpii_csv(p), p, *parts, field=cell)


def test_binary_garbage_in_text_formats(tmp_path):
    for name in ("a.json", "a.csv", "a.h5", "a.mat"):
        p = tmp_path / name
        p.write_bytes(b"\x00\xff\xfe garbage \x80" * 10)
        _expect_error(lambda p=p: readers.read_annotations(p), p)


def test_split_records_raises_the_first_problem_or_lists_every_bad_file(tmp_path):
    root = tmp_path / "root"
    ann = root / "mpii" / "annotations"
    ann.mkdir(parents=True)  # no images/
    (ann / "valid.h5").write_bytes(b"not hdf5")
    (ann / "gt_valid.mat").write_text("not a mat file")
    (ann / "valid.json").write_text("[")
    files = readers.split_files("mpii", root, "valid")
    assert files == {"images": root / "mpii" / "images", "annotations": ann / "valid.json",
                     "visibility": ann / "valid.h5", "head_boxes": ann / "gt_valid.mat"}
    with pytest.raises(DataError) as e:
        readers.split_records("mpii", root, "valid")
    assert e.value.path == str(files["images"]) and "image directory not found" in e.value.message
    problems = []
    assert readers.split_records("mpii", root, "valid", problems) is None
    assert [p.path for p in problems] == [str(files[k]) for k in ("images", "visibility", "head_boxes", "annotations")]
    (root / "mpii" / "images").mkdir()
    (ann / "valid.h5").unlink()
    (ann / "gt_valid.mat").unlink()
    (ann / "valid.json").write_text((SAMPLES / "test_mpii.json").read_text())
    problems = []
    records = readers.split_records("mpii", root, "valid", problems)
    assert problems == [] and [r.image for r in records] == [r.image for r in readers.mpii_split(root, "valid")]
    assert readers.split_files("lsp", root, "valid") == {"images": root / "lsp" / "images",
                                                         "annotations": root / "lsp" / "joints.mat"}
    assert readers.split_files("lsp", root, "train")["extended"] == root / "lsp_ext" / "joints.mat"
