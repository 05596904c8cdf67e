"""Annotation readers -> lists of PoseRecord. Every format's quirks end here (see shared/docs/evaluation.md).

All MPII files store original-image 1-based (MATLAB) pixels; records are 0-based. Centre/scale: the
reference convention c_y += 15 s, s *= 1.25 (crop box side 200 s), applied once, here.

A malformed file never ends in a traceback: every value is checked for type, shape and finiteness (and a
scale for being positive) before use, and a problem raises DataError naming the file, the entry (person)
index, the field and what was expected; the file and the field are also its `path` and `field` attributes.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from pbn.data.records import DataError, PoseRecord, flags_from
from pbn.skeleton import LSP_JOINTS, MPII_JOINTS, NUM_JOINTS, PCKH_SC_BIAS


def _need_file(path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", path=p)
    return p


def _load_json(path) -> object:
    p = _need_file(path)
    try:
        return json.loads(p.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not valid JSON ({e})", path=p) from None
    except RecursionError:
        raise DataError("not valid JSON (nested too deeply)", path=p) from None
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror or e})", path=p) from None


# ------------------------------------------------------------------------------- value checking
def _describe(value) -> str:
    """What a wrong value is, for an error message: 'the string 'big'', 'null', 'shape (16, 3)'..."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return f"the boolean {bool(value)}"
    if isinstance(value, (str, bytes)):
        text = value if isinstance(value, str) else value.decode("latin-1")
        return f"the string {text[:40]!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (int, float, np.number)):
        return f"the number {value}"
    if isinstance(value, (list, tuple)):
        try:
            a = np.asarray(value)
        except ValueError:
            return f"a ragged list of length {len(value)} (rows of different lengths)"
        if a.dtype.kind in "biuf":
            return f"numbers of shape {a.shape}"
        return f"a list of shape {a.shape} holding non-numbers"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and type {value.dtype}"
    return f"a {type(value).__name__}"


def _dims(shape) -> str:
    return " x ".join("N" if d is None else str(d) for d in shape)


def _first_bad(mask: np.ndarray) -> str:
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return str(idx[0]) if len(idx) == 1 else str(list(idx))


def _array(value, shape, what: str, finite: bool = True, path=None, field: str | None = None) -> np.ndarray:
    """value -> float64 array of exactly `shape` (None: any size), or DataError '<what>: expected ...' (what:
    where in the file, e.g. "entry 7 field 'center'"; path and field: the DataError's attributes).
    Strings, null, objects and ragged lists are refused (numpy would turn '1.5' into a number)."""
    try:
        a = np.asarray(value)
    except ValueError:  # ragged nested lists
        a = None
    if a is None or a.dtype.kind not in "biuf" or (a.ndim == 0 and len(shape) > 0):
        raise DataError(f"{what}: expected {_dims(shape) or 'a number'} numbers, got {_describe(value)}", path, field)
    if a.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, a.shape)):
        raise DataError(f"{what}: expected {_dims(shape)} numbers, got shape {a.shape}", path, field)
    a = a.astype(np.float64)
    if finite and not np.isfinite(a).all():
        at = "" if a.ndim == 0 else f" at index {_first_bad(~np.isfinite(a))}"
        raise DataError(f"{what}: expected finite numbers, got NaN or infinity{at}", path, field)
    return a


def _number(value, what: str, positive: bool = False, path=None, field: str | None = None) -> float:
    """A finite (and, if asked, positive) number; bools, strings and null are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"{what}: expected {'a positive' if positive else 'a'} number, got {_describe(value)}",
                        path, field)
    v = float(value)
    if not np.isfinite(v):
        raise DataError(f"{what}: expected a finite number, got {v}", path, field)
    if positive and v <= 0:
        raise DataError(f"{what}: expected a positive number, got {v:g}", path, field)
    return v


def _text(value, what: str, path=None, field: str | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"{what}: expected a non-empty string (an image file name), got {_describe(value)}",
                        path, field)
    return value


def _entries(data, path, what: str) -> list:
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of people ({what}), got {_describe(data)}", path)
    return data


def _field(entry, key: str, path, i: int):
    if not isinstance(entry, dict):
        raise DataError(f"entry {i}: expected an object with field {key!r}, got {_describe(entry)}", path, key)
    if key not in entry:
        raise DataError(f"entry {i} has no field {key!r}", path, key)
    return entry[key]


# A column spec: a shape tuple (numbers of that shape; finite unless the key is in `loose`), "number",
# "positive" (a finite number > 0) or "text" (a non-empty string).
def _entry_value(entry, key: str, kind, path, i: int, finite: bool = True):
    what = f"entry {i} field {key!r}"
    value = _field(entry, key, path, i)
    if kind == "text":
        return _text(value, what, path, key)
    if kind in ("number", "positive"):
        return _number(value, what, kind == "positive", path, key)
    return _array(value, kind, what, finite, path, key)


def _fast_column(values: list, kind, finite: bool):
    """The column as one array (a list for text) when every value is right, else None."""
    if kind == "text":
        return values if all(type(v) is str and v for v in values) else None
    if kind in ("number", "positive"):
        if not all(type(v) in (int, float) for v in values):  # refuses bool, str, None
            return None
        a = np.array(values, dtype=np.float64)
        ok = np.isfinite(a).all() and (kind == "number" or (a > 0).all())
        return a if ok else None
    try:
        a = np.asarray(values)
    except ValueError:  # ragged
        return None
    if a.dtype.kind not in "biuf" or a.shape != (len(values), *kind):
        return None
    a = a.astype(np.float64)
    return a if not finite or np.isfinite(a).all() else None


def _json_columns(data: list, path, spec: dict, loose: tuple[str, ...] = ()) -> dict:
    """Each field of every entry, as columns {key: [N, ...] array or list of str}. Vectorized when the file
    is well formed; otherwise the per-entry check raises DataError naming the first bad entry and field."""
    out = {}
    for key, kind in spec.items():
        finite = key not in loose
        try:
            col = _fast_column([e[key] for e in data], kind, finite)
        except (TypeError, KeyError, IndexError):  # an entry that is not an object, or lacks the key
            col = None
        if col is None:
            values = [_entry_value(e, key, kind, path, i, finite) for i, e in enumerate(data)]
            col = values if kind == "text" else np.array(values, dtype=np.float64).reshape(len(data), *(
                () if isinstance(kind, str) else kind))
        out[key] = col
    return out


def _positive_rows(a: np.ndarray, path, key: str) -> None:
    """Every element of a 1-D array (an .h5 dataset) > 0, or DataError naming the first entry that is not."""
    bad = ~(a > 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"dataset {key!r}: expected positive numbers, got {a[i]:g} at entry {i}", path, key)


def mpii_centre_scale(centre, scale, one_based: bool = True) -> tuple[np.ndarray, float]:
    """Raw MPII objpos/scale -> the crop convention (0-based, c_y += 15 s, s *= 1.25)."""
    c = _array(centre, (2,), "centre", field="centre") - (1.0 if one_based else 0.0)
    s = _number(scale, "scale", positive=True, field="scale")
    c = np.array([c[0], c[1] + 15.0 * s])
    return c, 1.25 * s


def _image_path(name: str, image_dir) -> str:
    return str(Path(image_dir) / name) if image_dir else name


def _annotated_finite(xy: np.ndarray, annotated: np.ndarray, path, where: str, field: str) -> None:
    """xy [N, K, 2+], annotated [N, K]: coordinates of annotated joints must be finite (a missing joint's
    placeholder may be anything). where: "field 'joints'" or "key 'pos_gt_src'", after "entry <i> "."""
    bad = annotated & ~np.isfinite(xy).all(-1)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"entry {i} {where}: annotated joint {k} has a NaN or infinite coordinate", path, field)


def _mpii_crop(centre: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mpii_centre_scale for columns: centre [N, 2] 1-based, scale [N] raw -> 0-based crop centre, scale."""
    c = centre - 1.0
    c[:, 1] += 15.0 * scale
    return c, 1.25 * scale


def _records(images: list[str], joints: np.ndarray, centre, scale, image_dir=None, head=None) -> list[PoseRecord]:
    joints = joints.astype(np.float32)
    return [PoseRecord(_image_path(images[i], image_dir), joints[i].copy(), centre[i].copy(), float(scale[i]),
                       None if head is None else float(head[i])) for i in range(len(images))]


# ------------------------------------------------------------------------------------------ MPII
def read_mpii_json(path, image_dir=None, visibility=None, head_sizes=None) -> list[PoseRecord]:
    """HRNet/mmpose JSON (`image`, `center`, `scale`, `joints`, `joints_vis` = annotated).

    visibility: optional [N, 16] MPII is_visible (from read_visibility); without it joints are flagged
    ANNOTATED and occlusion metrics are unavailable. head_sizes: optional [N] PCKh normalizers."""
    data = _entries(_load_json(path), path, "HRNet/mmpose format")
    _check_n(visibility, len(data), path, "visibility")
    _check_n(head_sizes, len(data), path, "head sizes")
    if not data:
        return []
    spec = {"joints": (NUM_JOINTS, 2), "joints_vis": (NUM_JOINTS,), "center": (2,), "scale": "positive",
            "image": "text"}
    col = _json_columns(data, path, spec, loose=("joints",))
    annotated = col["joints_vis"] > 0
    _annotated_finite(col["joints"], annotated, path, "field 'joints'", "joints")
    flags = flags_from(annotated, visibility)
    xy = np.where(annotated[..., None], col["joints"] - 1.0, 0.0)
    centre, scale = _mpii_crop(col["center"], col["scale"])
    return _records(col["image"], np.concatenate([xy, flags[..., None]], -1), centre, scale, image_dir, head_sizes)


def read_bearpaw_json(path, image_dir=None, split: str | None = None) -> list[PoseRecord]:
    """bearpaw/pytorch-pose mpii_annotations.json: `joint_self` 16 x [x, y, is_visible], missing = (0, 0, 0).
    split: None (all), "train" or "valid" (by `isValidation`)."""
    data = _entries(_load_json(path), path, "bearpaw format")
    if not data:
        return []
    spec = {"joint_self": (NUM_JOINTS, 3), "objpos": (2,), "scale_provided": "positive", "img_paths": "text"}
    if split is not None:
        spec["isValidation"] = "number"
    col = _json_columns(data, path, spec, loose=("joint_self",))
    js = col["joint_self"]
    annotated = (js[..., 0] != 0) | (js[..., 1] != 0)
    _annotated_finite(js, annotated, path, "field 'joint_self'", "joint_self")
    flags = flags_from(annotated, js[..., 2] > 0)
    xy = np.where(annotated[..., None], js[..., :2] - 1.0, 0.0)
    centre, scale = _mpii_crop(col["objpos"], col["scale_provided"])
    keep = np.ones(len(data), bool) if split is None else (col["isValidation"] != 0) == (split == "valid")
    idx = np.flatnonzero(keep)
    return _records([col["img_paths"][i] for i in idx], np.concatenate([xy, flags[..., None]], -1)[idx],
                    centre[idx], scale[idx], image_dir)


def _h5(path):
    import h5py

    p = _need_file(path)
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise DataError(f"not a readable HDF5 file ({e})", path=p) from None


def _h5_get(f, key: str, path):
    import h5py

    if key not in f:
        raise DataError(f"missing dataset {key!r} (have {sorted(f.keys())})", path, key)
    d = f[key]
    if not isinstance(d, h5py.Dataset):
        raise DataError(f"{key!r} is a group, expected a dataset", path, key)
    try:
        return d[()]
    except (OSError, TypeError, ValueError) as e:
        raise DataError(f"dataset {key!r} cannot be read ({e})", path, key) from None


def _h5_numbers(f, key: str, shape, path) -> np.ndarray:
    return _array(_h5_get(f, key, path), shape, f"dataset {key!r}", path=path, field=key)


def _h5_names(f, path) -> list[str]:
    """`imgname` as strings: an array of (byte) strings, or (Torch-era files) an N x L uint8 char matrix."""
    raw = _h5_get(f, "imgname", path)
    a = np.asarray(raw)
    if a.ndim == 1 and a.dtype.kind in "SUO":
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in a]
    elif a.ndim == 2 and a.dtype.kind in "ui":
        names = [bytes(row.astype(np.uint8)).split(b"\0", 1)[0].decode("utf-8", "replace") for row in a]
    else:
        raise DataError(f"dataset 'imgname': expected N strings (or an N x L char matrix), got {_describe(a)}",
                        path, "imgname")
    for i, n in enumerate(names):
        _text(n, f"entry {i} dataset 'imgname'", path, "imgname")
    return names


def read_h5_dataset(path, key: str) -> np.ndarray:
    with _h5(path) as f:
        return _h5_get(f, key, path)


def load_mat(path, required: tuple[str, ...]) -> dict:
    """A .mat file's variables; DataError naming the file if unreadable or a required key is missing."""
    import scipy.io

    p = _need_file(path)
    try:
        m = scipy.io.loadmat(p)
    except Exception as e:  # scipy raises several unrelated types for a bad file
        raise DataError(f"not a readable .mat file ({e})", path=p) from None
    missing = [k for k in required if k not in m]
    if missing:
        have = [k for k in m if not k.startswith("__")]
        raise DataError(f"missing key{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} (have {have})",
                        p, missing[0])
    return m


def read_mpii_h5(path, image_dir=None) -> list[PoseRecord]:
    """Newell's pose-hg-train annot/{train,valid}.h5: `imgname`, `part` (0 = missing), `visible`,
    `center`/`scale` already adjusted, `normalize` = 0.6 x head-box diagonal (valid only)."""
    with _h5(path) as f:
        names = _h5_names(f, path)
        n = len(names)
        part = _h5_numbers(f, "part", (n, NUM_JOINTS, 2), path)
        visible = _h5_numbers(f, "visible", (n, NUM_JOINTS), path)
        centre = _h5_numbers(f, "center", (n, 2), path)
        scale = _h5_numbers(f, "scale", (n,), path)
        norm = _h5_numbers(f, "normalize", (n,), path) if "normalize" in f else None
    _positive_rows(scale, path, "scale")
    if norm is not None:
        _positive_rows(norm, path, "normalize")
    annotated = (part[..., 0] != 0) | (part[..., 1] != 0)
    flags = flags_from(annotated, visible > 0)
    xy = np.where(annotated[..., None], part - 1.0, 0.0)
    return _records(names, np.concatenate([xy, flags[..., None]], -1), centre - 1.0, scale, image_dir, norm)


def read_gt_mat(path) -> dict[str, np.ndarray]:
    """gt_valid.mat / detections_our_format.mat -> joints [N,16,2] 0-based, annotated [N,16] bool,
    head_size [N] (0.6 x head-box diagonal)."""
    p = Path(path)
    m = load_mat(p, ("pos_gt_src", "jnt_missing", "headboxes_src"))
    if all(np.ndim(m[k]) == 2 for k in ("pos_gt_src", "headboxes_src")):  # MATLAB drops a trailing 1: N = 1
        m = {**m, "pos_gt_src": m["pos_gt_src"][..., None], "headboxes_src": m["headboxes_src"][..., None]}
    pos = _array(m["pos_gt_src"], (NUM_JOINTS, 2, None), "key 'pos_gt_src'", False, p, "pos_gt_src")
    n = pos.shape[2]
    miss = _array(m["jnt_missing"], (NUM_JOINTS, n), f"key 'jnt_missing' (for {n} people in pos_gt_src)",
                  path=p, field="jnt_missing")
    hb = _array(m["headboxes_src"], (2, 2, n), f"key 'headboxes_src' (for {n} people in pos_gt_src)", False, p,
                "headboxes_src")
    annotated = (miss == 0).T
    joints = np.transpose(pos, (2, 0, 1)) - 1.0
    _annotated_finite(joints, annotated, p, "key 'pos_gt_src'", "pos_gt_src")
    head = PCKH_SC_BIAS * np.linalg.norm(hb[1] - hb[0], axis=0)
    bad = annotated.any(1) & ~(head > 0)  # NaN, inf - inf or a zero-size box, for a person that is scored
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"entry {i} key 'headboxes_src': expected a head box of positive finite size, got "
                        f"corners {hb[:, :, i].tolist()}", p, "headboxes_src")
    return {"joints": joints, "annotated": annotated, "head_size": head}


def read_visibility(path) -> np.ndarray:
    """MPII is_visible [N, 16] bool from a pose-hg-train .h5 (`visible`) or a bearpaw JSON (`joint_self`)."""
    p = _need_file(path)
    if p.suffix in (".h5", ".hdf5"):
        with _h5(p) as f:
            v = _h5_numbers(f, "visible", (None, NUM_JOINTS), p)
    elif p.suffix == ".json":
        data = _entries(_load_json(p), p, "bearpaw format with 'joint_self'")
        js = _json_columns(data, p, {"joint_self": (NUM_JOINTS, 3)}, loose=("joint_self",))["joint_self"]
        v = js[..., 2] if data else np.zeros((0, NUM_JOINTS))
        if not np.isfinite(v).all():
            i, k = (int(x) for x in np.argwhere(~np.isfinite(v))[0])
            raise DataError(f"entry {i} field 'joint_self': joint {k} has a NaN or infinite visibility", p,
                            "joint_self")
    else:
        raise DataError("visibility must be a .h5 (valid.h5) or a .json (bearpaw joint_self)", path=p)
    return v > 0


def _check_n(arr, n: int, path, what: str) -> None:
    if arr is not None and len(arr) != n:
        raise DataError(f"{n} people but {what} has {len(arr)}", path=path)


def read_mpii_csv(path) -> list[PoseRecord]:
    """The Kaggle export of MPII train (one person per image): NAME, `<joint>_X`/`<joint>_Y` for the 16
    joints (1-based, -1 = missing), Scale. It has no centre: the mean of the annotated joints.
    A row with fewer than 2 annotated joints is skipped; a cell that is not a number is an error."""
    p = _need_file(path)
    names = [n.replace("_", " ") for n in MPII_JOINTS]
    need = ["NAME", "Scale"] + [f"{n}_{a}" for n in names for a in "XY"]
    try:
        with p.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in need if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"missing column(s) {missing}", p, missing[0])
            records = [r for i, row in enumerate(reader) if (r := _csv_record(row, i, names, p)) is not None]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"not a readable CSV file ({e})", path=p) from None
    if not records:
        raise DataError("no usable poses (need >= 2 annotated joints and a positive Scale)", path=p)
    return records


def _csv_cell(row: dict, column: str, i: int, path) -> float:
    text = row.get(column)
    try:
        v = float(text)
    except (TypeError, ValueError):
        got = "an empty cell" if text in (None, "") else _describe(text)
        raise DataError(f"entry {i} (data row {i + 1}) column {column!r}: expected a number, got {got}", path,
                        column) from None
    if not np.isfinite(v):
        raise DataError(f"entry {i} (data row {i + 1}) column {column!r}: expected a finite number, got {v}", path,
                        column)
    return v


def _csv_record(row: dict, i: int, names: list[str], path) -> PoseRecord | None:
    xy = np.array([[_csv_cell(row, f"{n}_{a}", i, path) for a in "XY"] for n in names])
    scale = _csv_cell(row, "Scale", i, path)
    if scale <= 0:
        raise DataError(f"entry {i} (data row {i + 1}) column 'Scale': expected a positive number, got {scale:g}",
                        path, "Scale")
    image = _text(row.get("NAME"), f"entry {i} (data row {i + 1}) column 'NAME'", path, "NAME")
    annotated = (xy[:, 0] >= 0) & (xy[:, 1] >= 0)
    if annotated.sum() < 2:
        return None
    xy = np.where(annotated[:, None], xy - 1.0, 0.0)
    # Of the centres derivable from joints, the mean of the annotated ones is closest to MPII's
    # objpos (median 0.064 x person height on the validation subset; joint-box centre 0.071).
    return PoseRecord(image, np.column_stack([xy, flags_from(annotated, None)]).astype(np.float32),
                      xy[annotated].mean(0), 1.25 * scale)


# ------------------------------------------------------------------------------------------- LSP
def _box_centre_scale(xy: np.ndarray, annotated: np.ndarray) -> tuple[np.ndarray, float]:
    """For files without a person centre: the annotated joints' box centre, and a scale whose crop side
    (200 s) is 1.25 x the box's longer side."""
    if annotated.sum() == 0:
        return np.zeros(2), 1.0
    lo, hi = xy[annotated].min(0), xy[annotated].max(0)
    return (lo + hi) / 2, max(1.25 * float(max(hi - lo)) / 200.0, 1e-3)


def lsp_records(joints: np.ndarray, occluded: np.ndarray, names: list[str], image_dir=None) -> list[PoseRecord]:
    """joints [N, 14, 2] 1-based, occluded [N, 14] bool -> records (14 joints). LSP has no centre or
    scale: both come from the joints' box (side 200 s = 1.25 x its longer side)."""
    records = []
    every = np.ones(len(LSP_JOINTS), bool)
    for i in range(len(joints)):
        xy = joints[i] - 1.0
        flags = flags_from(every, ~occluded[i])
        records.append(PoseRecord(_image_path(names[i], image_dir), np.column_stack([xy, flags]).astype(np.float32),
                                  *_box_centre_scale(xy, every)))
    return records


def read_lsp_mat(path, image_dir=None, first_index: int = 1) -> list[PoseRecord]:
    """LSP joints.mat: original 3x14xN (row 3: 1 = occluded) or LSP-extended 14x3xN (column 3: 1 = visible).
    Images are im0001.jpg.. (4 digits, original) or im00001.jpg.. (5 digits, extended)."""
    p = Path(path)
    raw = load_mat(p, ("joints",))["joints"]
    j = np.asarray(raw)
    if j.ndim == 2 and j.shape in ((3, 14), (14, 3)):  # MATLAB drops a trailing singleton dimension: N = 1
        j = j[:, :, None]
    if j.ndim != 3 or j.shape[:2] not in ((3, 14), (14, 3)):
        raise DataError(f"'joints' must be 3x14xN (LSP) or 14x3xN (LSP-extended), got {_describe(raw)}", p, "joints")
    j = _array(j, j.shape, "key 'joints'", False, p, "joints")
    if j.shape[:2] == (3, 14):
        xy, flag, digits = np.transpose(j[:2], (2, 1, 0)), j[2].T, 4
        occluded = flag > 0
    else:
        xy, flag, digits = np.transpose(j[:, :2], (2, 0, 1)), j[:, 2].T, 5
        occluded = flag == 0
    bad = ~np.isfinite(xy).all(-1) | ~np.isfinite(flag)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"entry {i} (image {first_index + i}) key 'joints': joint {k} has a NaN or infinite "
                        "coordinate or flag", p, "joints")
    names = [f"im{i:0{digits}d}.jpg" for i in range(first_index, first_index + xy.shape[0])]
    return lsp_records(xy, occluded, names, image_dir)


def read_lsp_json(path, image_dir=None, labels: str = "observer_centric") -> list[PoseRecord]:
    """The shared LSP JSON: {observer_centric|person_centric: [{image, joints 14x2, flag_row3}]}."""
    data = _load_json(path)
    if not isinstance(data, dict) or labels not in data:
        raise DataError(f"expected an object with key {labels!r}", path, labels)
    entries = data[labels]
    if not isinstance(entries, list):
        raise DataError(f"{labels!r}: expected a list of people, got {_describe(entries)}", path, labels)
    if not entries:
        return []
    col = _json_columns(entries, path, {"joints": (14, 2), "flag_row3": (14,), "image": "text"})
    return lsp_records(col["joints"], col["flag_row3"] > 0, col["image"], image_dir)


def lsp_split(records: list[PoseRecord], split: str) -> list[PoseRecord]:
    """The standard LSP split of the original 2000 images: train = 1-1000, test = 1001-2000."""
    if split not in ("train", "test"):
        raise DataError(f"LSP split must be 'train' or 'test', got {split!r}")
    return records[:1000] if split == "train" else records[1000:2000]


# ----------------------------------------------------------------------------------- auto-detect
def read_annotations(path, image_dir=None) -> list[PoseRecord]:
    """Any supported annotation file, by extension and content."""
    p = _need_file(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return read_mpii_csv(p)
    if suffix in (".h5", ".hdf5"):
        return read_mpii_h5(p, image_dir)
    if suffix == ".mat":
        import scipy.io

        try:
            keys = {name for name, *_ in scipy.io.whosmat(p)}
        except Exception as e:
            raise DataError(f"not a readable .mat file ({e})", path=p) from None
        if "joints" in keys:
            return read_lsp_mat(p, image_dir)
        gt = read_gt_mat(p)
        return [PoseRecord(f"person{i}", np.column_stack([gt["joints"][i], flags_from(gt["annotated"][i], None)])
                           .astype(np.float32), *_box_centre_scale(gt["joints"][i], gt["annotated"][i]),
                           float(gt["head_size"][i])) for i in range(len(gt["head_size"]))]
    if suffix == ".json":
        data = _load_json(p)
        if isinstance(data, dict) and "observer_centric" in data:
            return read_lsp_json(p, image_dir)
        first = data[0] if isinstance(data, list) and data else {}
        if isinstance(first, dict) and "joints_vis" in first:
            return read_mpii_json(p, image_dir)
        if isinstance(first, dict) and "joint_self" in first:
            return read_bearpaw_json(p, image_dir)
        raise DataError("unrecognized JSON annotations (expected HRNet 'joints_vis', bearpaw 'joint_self', or LSP "
                        "'observer_centric')", path=p)
    raise DataError(f"unsupported annotation format {suffix!r} (.csv, .json, .h5, .mat)", path=p)


# --------------------------------------------------------------------------------- data root
# How a data root's splits are read (docs/data.md): pbn.data.dataset.load_source trains on
# split_records, and pbn.data.check checks exactly what it reads, blaming split_files(...)["annotations"].
def split_files(data: str, root, split: str) -> dict[str, Path]:
    """The files split_records reads for `split` ("train" or "valid") of a data root, by role:
    mpii: "images" (directory), "annotations" ({split}.json), "visibility" ({split}.h5, optional) and, for
    valid, "head_boxes" (gt_valid.mat, optional); lsp: "images", "annotations" (lsp/joints.mat: both splits,
    split by lsp_split; valid is LSP's test split) and, for train, "extended" (lsp_ext/joints.mat, optional,
    with its images beside it)."""
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    if data == "mpii":
        base = Path(root) / "mpii"
        ann = base / "annotations"
        files = {"images": base / "images", "annotations": ann / f"{split}.json", "visibility": ann / f"{split}.h5"}
        if split == "valid":
            files["head_boxes"] = ann / "gt_valid.mat"
        return files
    if data == "lsp":
        files = {"images": Path(root) / "lsp" / "images", "annotations": Path(root) / "lsp" / "joints.mat"}
        if split == "train":
            files["extended"] = Path(root) / "lsp_ext" / "joints.mat"
        return files
    raise ValueError(f"data must be 'mpii' or 'lsp', got {data!r}")


def split_records(data: str, root, split: str, problems: list[DataError] | None = None) -> list[PoseRecord] | None:
    """The records of `split` ("train" or "valid"; LSP's valid is its test split, images 1001-2000) of a data
    root, in the dataset's own joint order (LSP: 14). problems: see mpii_split."""
    if data == "mpii":
        return mpii_split(root, split, problems)
    return lsp_split_records(root, "test" if split == "valid" else split, problems)


class _Reading:
    """Reads a split's files one by one: without `problems` the first DataError propagates; with a list,
    each file's DataError is appended, the next file is still read, and `failed` is set."""

    def __init__(self, problems: list[DataError] | None):
        self.problems, self.failed = problems, False

    def __call__(self, read, *args):
        """read(*args), or None after report() when it raises DataError."""
        try:
            return read(*args)
        except DataError as e:
            self.report(e)
            return None

    def report(self, e: DataError) -> None:
        if self.problems is None:
            raise e
        self.problems.append(e)
        self.failed = True


def mpii_split(root, split: str, problems: list[DataError] | None = None) -> list[PoseRecord] | None:
    """<root>/mpii/annotations/{train,valid}.json (+ gt_valid.mat for head sizes, + {train,valid}.h5 for
    true visibility, both optional) with images in <root>/mpii/images/ (split_files).

    problems: None (the default) raises the first DataError. A list: every file of the split is read even
    after another failed (the JSON then without what failed), one DataError per bad file is appended, and
    the result is None if any failed: how pbn.data.check lists every bad file, not just the first."""
    files = split_files("mpii", root, split)
    read = _Reading(problems)
    if not files["images"].is_dir():
        read.report(DataError("MPII image directory not found (see docs/data.md)", files["images"]))
    json_path, vis_path = files["annotations"], files["visibility"]
    visibility = read(read_visibility, vis_path) if vis_path.exists() else None
    head = None
    if "head_boxes" in files and files["head_boxes"].exists():
        head = read(lambda: read_gt_mat(files["head_boxes"])["head_size"])
    records = read(read_mpii_json, json_path, files["images"], visibility, head)
    if visibility is not None and records is not None:  # same people in the same order: the image names agree
        read(_same_people, records, json_path, vis_path)
    return None if read.failed else records


def _same_people(records: list[PoseRecord], json_path: Path, vis_path: Path) -> None:
    with _h5(vis_path) as f:
        names = _h5_names(f, vis_path)
    _check_n(names, len(records), json_path, f"{vis_path.name} 'imgname'")
    bad = [i for i, r in enumerate(records) if os.path.basename(r.image) != names[i]]
    if bad:
        raise DataError(f"person {bad[0]} is {names[bad[0]]} but {json_path} has "
                        f"{os.path.basename(records[bad[0]].image)}; the files must list the same people", vis_path,
                        "imgname")


def lsp_split_records(root, split: str, problems: list[DataError] | None = None) -> list[PoseRecord] | None:
    """<root>/lsp/joints.mat + images/ split by lsp_split ("train" or "test"), and (train only, optional)
    <root>/lsp_ext/joints.mat + images/. problems: as in mpii_split."""
    files = split_files("lsp", root, "train" if split == "train" else "valid")
    read = _Reading(problems)
    main = read(read_lsp_mat, files["annotations"], files["images"])
    records = None if main is None else lsp_split(main, split)
    ext = files.get("extended")
    if ext is not None and ext.exists():
        extended = read(read_lsp_mat, ext, ext.parent / "images")
        if records is not None and extended is not None:
            records += extended
    return None if read.failed else records
