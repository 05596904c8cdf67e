"""Annotation readers -> lists of PoseRecord. Every format's quirks end here (see shared/docs/evaluation.md).

All MPII files store original-image 1-based (MATLAB) pixels; records are 0-based. Centre/scale: the
reference convention c_y += 15 s, s *= 1.25 (crop box side 200 s), applied once, here.
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
        raise DataError(f"{p}: file not found")
    return p


def _load_json(path) -> object:
    p = _need_file(path)
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not valid JSON ({e})") from None


def _field(entry: dict, key: str, path, i: int):
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{path}: entry {i} has no field {key!r}")
    return entry[key]


def _array(value, shape, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what}: expected numbers of shape {shape}") from None
    if a.shape != shape:
        raise DataError(f"{what}: expected shape {shape}, got {a.shape}")
    return a


def mpii_centre_scale(centre, scale, one_based: bool = True) -> tuple[np.ndarray, float]:
    """Raw MPII objpos/scale -> the crop convention (0-based, c_y += 15 s, s *= 1.25)."""
    c = np.asarray(centre, dtype=np.float64) - (1.0 if one_based else 0.0)
    s = float(scale)
    c = np.array([c[0], c[1] + 15.0 * s])
    return c, 1.25 * s


def _image_path(name: str, image_dir) -> str:
    return str(Path(image_dir) / name) if image_dir else name


# ------------------------------------------------------------------------------------------ MPII
def read_mpii_json(path, image_dir=None, visibility=None, head_sizes=None) -> list[PoseRecord]:
    """HRNet/mmpose JSON (`image`, `center`, `scale`, `joints`, `joints_vis` = annotated).

    visibility: optional [N, 16] MPII is_visible (from read_visibility); without it joints are flagged
    ANNOTATED and occlusion metrics are unavailable. head_sizes: optional [N] PCKh normalizers."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of people (HRNet/mmpose format)")
    _check_n(visibility, len(data), path, "visibility")
    _check_n(head_sizes, len(data), path, "head sizes")
    records = []
    for i, e in enumerate(data):
        joints = _array(_field(e, "joints", path, i), (NUM_JOINTS, 2), f"{path}: entry {i} field 'joints'")
        vis = _array(_field(e, "joints_vis", path, i), (NUM_JOINTS,), f"{path}: entry {i} field 'joints_vis'")
        c, s = mpii_centre_scale(_field(e, "center", path, i), _field(e, "scale", path, i))
        annotated = vis > 0
        flags = flags_from(annotated, None if visibility is None else visibility[i])
        xy = np.where(annotated[:, None], joints - 1.0, 0.0)
        hs = None if head_sizes is None else float(head_sizes[i])
        records.append(PoseRecord(_image_path(str(_field(e, "image", path, i)), image_dir),
                                  np.column_stack([xy, flags]).astype(np.float32), c, s, hs))
    return records


def read_bearpaw_json(path, image_dir=None, split: str | None = None) -> list[PoseRecord]:
    """bearpaw/pytorch-pose mpii_annotations.json: `joint_self` 16 x [x, y, is_visible], missing = (0, 0, 0).
    split: None (all), "train" or "valid" (by `isValidation`)."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of people (bearpaw format)")
    records = []
    for i, e in enumerate(data):
        if split is not None and bool(_field(e, "isValidation", path, i)) != (split == "valid"):
            continue
        js = _array(_field(e, "joint_self", path, i), (NUM_JOINTS, 3), f"{path}: entry {i} field 'joint_self'")
        c, s = mpii_centre_scale(_field(e, "objpos", path, i), _field(e, "scale_provided", path, i))
        annotated = (js[:, 0] != 0) | (js[:, 1] != 0)
        flags = flags_from(annotated, js[:, 2] > 0)
        xy = np.where(annotated[:, None], js[:, :2] - 1.0, 0.0)
        records.append(PoseRecord(_image_path(str(_field(e, "img_paths", path, i)), image_dir),
                                  np.column_stack([xy, flags]).astype(np.float32), c, s))
    return records


def _h5(path):
    import h5py

    p = _need_file(path)
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise DataError(f"{p}: not a readable HDF5 file ({e})") from None


def _h5_get(f, key: str, path):
    if key not in f:
        raise DataError(f"{path}: missing dataset {key!r} (have {sorted(f.keys())})")
    return f[key][()]


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
        raise DataError(f"{p}: not a readable .mat file ({e})") from None
    missing = [k for k in required if k not in m]
    if missing:
        have = [k for k in m if not k.startswith("__")]
        raise DataError(f"{p}: missing key{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} (have {have})")
    return m


def read_mpii_h5(path, image_dir=None) -> list[PoseRecord]:
    """Newell's pose-hg-train annot/{train,valid}.h5: `imgname`, `part` (0 = missing), `visible`,
    `center`/`scale` already adjusted, `normalize` = 0.6 x head-box diagonal (valid only)."""
    with _h5(path) as f:
        names = _h5_get(f, "imgname", path)
        part = _h5_get(f, "part", path).astype(np.float64)
        visible = _h5_get(f, "visible", path)
        centre = _h5_get(f, "center", path)
        scale = _h5_get(f, "scale", path)
        norm = f["normalize"][()] if "normalize" in f else None
    n = len(names)
    if part.shape != (n, NUM_JOINTS, 2) or visible.shape != (n, NUM_JOINTS):
        raise DataError(f"{path}: expected part [N,16,2] and visible [N,16], got {part.shape}, {visible.shape}")
    records = []
    for i in range(n):
        annotated = (part[i, :, 0] != 0) | (part[i, :, 1] != 0)
        flags = flags_from(annotated, visible[i] > 0)
        xy = np.where(annotated[:, None], part[i] - 1.0, 0.0)
        name = names[i].decode() if isinstance(names[i], bytes) else str(names[i])
        records.append(PoseRecord(_image_path(name, image_dir), np.column_stack([xy, flags]).astype(np.float32),
                                  np.asarray(centre[i], np.float64) - 1.0, float(scale[i]),
                                  None if norm is None else float(norm[i])))
    return records


def read_gt_mat(path) -> dict[str, np.ndarray]:
    """gt_valid.mat / detections_our_format.mat -> joints [N,16,2] 0-based, annotated [N,16] bool,
    head_size [N] (0.6 x head-box diagonal)."""
    p = Path(path)
    m = load_mat(p, ("pos_gt_src", "jnt_missing", "headboxes_src"))
    pos, miss, hb = m["pos_gt_src"], m["jnt_missing"], m["headboxes_src"]
    if pos.ndim != 3 or pos.shape[:2] != (NUM_JOINTS, 2) or miss.shape != (NUM_JOINTS, pos.shape[2]) \
            or hb.shape != (2, 2, pos.shape[2]):
        raise DataError(f"{p}: expected pos_gt_src [16,2,N], jnt_missing [16,N], headboxes_src [2,2,N]; got "
                        f"{pos.shape}, {miss.shape}, {hb.shape}")
    head = PCKH_SC_BIAS * np.linalg.norm(hb[1] - hb[0], axis=0)
    return {"joints": np.transpose(pos, (2, 0, 1)) - 1.0, "annotated": (miss == 0).T, "head_size": head}


def read_visibility(path) -> np.ndarray:
    """MPII is_visible [N, 16] bool from a pose-hg-train .h5 (`visible`) or a bearpaw JSON (`joint_self`)."""
    p = _need_file(path)
    if p.suffix in (".h5", ".hdf5"):
        v = read_h5_dataset(p, "visible")
    elif p.suffix == ".json":
        data = _load_json(p)
        if not isinstance(data, list):
            raise DataError(f"{p}: expected a JSON list (bearpaw format with 'joint_self')")
        v = np.stack([_array(_field(e, "joint_self", p, i), (NUM_JOINTS, 3), f"{p}: entry {i} 'joint_self'")[:, 2]
                      for i, e in enumerate(data)])
    else:
        raise DataError(f"{p}: visibility must be a .h5 (valid.h5) or a .json (bearpaw joint_self)")
    if v.ndim != 2 or v.shape[1] != NUM_JOINTS:
        raise DataError(f"{p}: expected visibility of shape [N, 16], got {v.shape}")
    return v > 0


def _check_n(arr, n: int, path, what: str) -> None:
    if arr is not None and len(arr) != n:
        raise DataError(f"{path}: {n} people but {what} has {len(arr)}")


def read_mpii_csv(path) -> list[PoseRecord]:
    """The Kaggle export of MPII train (one person per image): NAME, `<joint>_X`/`<joint>_Y` for the 16
    joints (1-based, -1 = missing), Scale. It has no centre: the mean of the annotated joints."""
    p = _need_file(path)
    names = [n.replace("_", " ") for n in MPII_JOINTS]
    need = ["NAME", "Scale"] + [f"{n}_{a}" for n in names for a in "XY"]
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{p}: missing column(s) {missing}")
        records = []
        for row in reader:
            try:
                xy = np.array([[float(row[f"{n}_X"]), float(row[f"{n}_Y"])] for n in names])
                scale = float(row["Scale"])
            except (TypeError, ValueError):
                continue
            annotated = (xy[:, 0] >= 0) & (xy[:, 1] >= 0)
            if annotated.sum() < 2 or not scale > 0:
                continue
            xy = np.where(annotated[:, None], xy - 1.0, 0.0)
            # Of the centres derivable from joints, the mean of the annotated ones is closest to MPII's
            # objpos (median 0.064 x person height on the validation subset; joint-box centre 0.071).
            records.append(PoseRecord(row["NAME"], np.column_stack([xy, flags_from(annotated, None)]).astype(
                np.float32), xy[annotated].mean(0), 1.25 * scale))
    if not records:
        raise DataError(f"{p}: no usable poses (need >= 2 annotated joints and a positive Scale)")
    return records


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
    j = load_mat(p, ("joints",))["joints"]
    if j.shape[:2] == (3, 14):
        xy, occluded, digits = np.transpose(j[:2], (2, 1, 0)), j[2].T > 0, 4
    elif j.shape[:2] == (14, 3):
        xy, occluded, digits = np.transpose(j[:, :2], (2, 0, 1)), j[:, 2].T == 0, 5
    else:
        raise DataError(f"{p}: 'joints' must be 3x14xN (LSP) or 14x3xN (LSP-extended), got {j.shape}")
    names = [f"im{i:0{digits}d}.jpg" for i in range(first_index, first_index + xy.shape[0])]
    return lsp_records(xy, occluded, names, image_dir)


def read_lsp_json(path, image_dir=None, labels: str = "observer_centric") -> list[PoseRecord]:
    """The shared LSP JSON: {observer_centric|person_centric: [{image, joints 14x2, flag_row3}]}."""
    data = _load_json(path)
    if not isinstance(data, dict) or labels not in data:
        raise DataError(f"{path}: expected an object with key {labels!r}")
    entries = data[labels]
    xy = np.stack([_array(_field(e, "joints", path, i), (14, 2), f"{path}: entry {i} 'joints'")
                   for i, e in enumerate(entries)])
    occ = np.stack([_array(_field(e, "flag_row3", path, i), (14,), f"{path}: entry {i} 'flag_row3'")
                    for i, e in enumerate(entries)]) > 0
    return lsp_records(xy, occ, [str(e["image"]) for e in entries], image_dir)


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
            raise DataError(f"{p}: not a readable .mat file ({e})") from None
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
        raise DataError(f"{p}: unrecognized JSON annotations (expected HRNet 'joints_vis', bearpaw "
                        "'joint_self', or LSP 'observer_centric')")
    raise DataError(f"{p}: unsupported annotation format {suffix!r} (.csv, .json, .h5, .mat)")


# --------------------------------------------------------------------------------- data root
def mpii_split(root, split: str) -> list[PoseRecord]:
    """<root>/mpii/annotations/{train,valid}.json (+ gt_valid.mat for head sizes, + {train,valid}.h5 for
    true visibility, both optional) with images in <root>/mpii/images/."""
    base = Path(root) / "mpii"
    ann = base / "annotations"
    if not (base / "images").is_dir():
        raise DataError(f"{base / 'images'}: MPII image directory not found (see README, 'Data layout')")
    json_path = ann / f"{split}.json"
    vis_path = ann / f"{split}.h5"
    visibility = read_visibility(vis_path) if vis_path.exists() else None
    head = None
    if split == "valid" and (ann / "gt_valid.mat").exists():
        head = read_gt_mat(ann / "gt_valid.mat")["head_size"]
    records = read_mpii_json(json_path, base / "images", visibility, head)
    if visibility is not None:  # same people in the same order: check the image names agree
        with _h5(vis_path) as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["imgname"][()]]
        bad = [i for i, r in enumerate(records) if os.path.basename(r.image) != names[i]]
        if bad:
            raise DataError(f"{vis_path}: person {bad[0]} is {names[bad[0]]} but {json_path} has "
                            f"{os.path.basename(records[bad[0]].image)}; the files must list the same people")
    return records


def lsp_split_records(root, split: str) -> list[PoseRecord]:
    """<root>/lsp/joints.mat + images/, and (train only, optional) <root>/lsp_ext/joints.mat + images/."""
    base = Path(root) / "lsp"
    records = lsp_split(read_lsp_mat(base / "joints.mat", base / "images"), split)
    ext = Path(root) / "lsp_ext" / "joints.mat"
    if split == "train" and ext.exists():
        records += read_lsp_mat(ext, ext.parent / "images")
    return records
