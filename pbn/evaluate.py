"""Score a prediction file: `python -m pbn.evaluate --preds FILE --gt FILE [--dataset mpii|lsp] ...`.

The command above the metric math: it reads the predictions in any published key and layout (PRED_KEYS,
PRED_LAYOUTS) and the ground truth through pbn.data.readers, and scores them with pbn.pck (PCKh for MPII,
PCK@0.2 for LSP; the conventions are documented there).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from pbn.data.records import DataError
from pbn.pck import CONVENTIONS, REPORT_KEYS, lsp_pck, mpii_pckh
from pbn.skeleton import NUM_JOINTS

# ------------------------------------------------------------------------------------ prediction files
# Prediction arrays as the published tools write them (all in 1-based MATLAB pixels):
#   HRNet pred.mat, bearpaw/pytorch-pose preds*.mat     'preds'         N x K x 2
#   pose-hg-train (Newell) preds .h5                     'preds'         N x K x 2 (h5py order)
#   bearpaw/eval_pose pred_keypoints_*.mat (LSP, FLIC)   'pred'          2 x K x N (MATLAB order)
#   Tompson's detections_our_format.mat                  'pos_pred_src'  K x 2 x N
#   pose-hg-train preds_full.h5 (predictMPII.m input)    'preds_tf'      N x K x 2 (MATLAB's h5read: 2 x K x N)
# MPII's own server format (RELEASE/annolist structs with annopoints) is not an array and is not read.
PRED_KEYS = ("preds", "pred", "pos_pred_src", "preds_tf")
# N: people, K: joints, C: coordinates (2: x, y; 3: x, y and a score/visibility, which is dropped). Tried in
# this order: when the sizes fit several (N == K, or N of 2 or 3), those giving the ground truth's number
# of people are kept; if several remain, the first wins and a warning names them.
PRED_LAYOUTS = ("N x K x C", "C x K x N", "K x C x N", "K x N x C", "N x C x K", "C x N x K")

PREDS_HELP = f"""\
predictions file:
  .mat (MATLAB v5/v7; v7.3 is read as HDF5), .h5/.hdf5: the first of the keys {", ".join(PRED_KEYS)}
  .npy: the array itself
  layouts, axes found from the sizes (K = 16 for MPII, 14 for LSP; C = 2 for x, y or 3 for x, y, score
  with the third dropped; N = people): {", ".join(PRED_LAYOUTS)}
  (e.g. N x 16 x 2 from HRNet/pytorch-pose/pose-hg-train, 2 x 14 x N from eval_pose, 16 x 2 x N as in
  gt_valid.mat, 3 x K x N, N x K x 3). A 2-D C x K or K x C array is one person (MATLAB drops a trailing
  1). When the sizes fit several layouts (N == K, or N of 2 or 3), the layout that gives the ground
  truth's number of people is used; if that still leaves several, the first in the order above, with
  a warning. Coordinates are 1-based (MATLAB) pixels, as every published file is, unless --zero-based.
  MPII's annolist/annopoints struct format is not read: export an N x 16 x 2 array."""


def _pred_array(path: Path) -> tuple[object, str | None]:
    """(raw array, key) from a .npy, .mat or .h5 predictions file."""
    from pbn.data import readers

    if not path.is_file():
        raise DataError("file not found", path=path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False), None
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"not a readable .npy file ({e})", path=path) from None
    if suffix not in (".mat", ".h5", ".hdf5"):
        raise DataError(f"predictions must be .mat, .h5 or .npy, got {suffix!r}", path=path)
    import h5py

    if suffix == ".mat" and not h5py.is_hdf5(path):
        m = readers.load_mat(path, ())
        keys = [k for k in m if not k.startswith("__")]
        key = next((k for k in PRED_KEYS if k in m), None)
        if key is None:
            raise DataError(f"missing key: expected one of {', '.join(map(repr, PRED_KEYS))} (have {keys})", path)
        return m[key], key
    try:
        with h5py.File(path, "r") as f:
            key = next((k for k in PRED_KEYS if k in f), None)
            if key is None:
                raise DataError(f"missing dataset: expected one of {', '.join(map(repr, PRED_KEYS))} "
                                f"(have {sorted(f.keys())})", path)
            return readers.read_h5_dataset(path, key), key
    except OSError as e:
        raise DataError(f"not a readable HDF5 file ({e})", path=path) from None


def _load_preds(path: Path, joints: int, people: tuple[int, ...] = ()) -> tuple[np.ndarray, str]:
    """Predictions as [N, joints, 2] and how they were read ("key 'pred', C x K x N (2 x 14 x 1000)").
    people: the ground truth's possible counts, to settle layouts the sizes alone leave open."""
    raw, key = _pred_array(Path(path))
    what = "the array" if key is None else f"key {key!r}"
    arr = np.asarray(raw)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} holds {arr.dtype} data of shape {arr.shape}, not an array of numbers "
                        "(MPII annolist structs are not read: export an N x K x 2 array)", path, key)
    shape = arr.shape
    if arr.ndim == 2:  # one person: MATLAB drops a trailing singleton dimension
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{what} has shape {shape}: expected 3 axes (people, {joints} joints, 2 or 3 coordinates)",
                        path, key)
    fits = [lay for lay in PRED_LAYOUTS if _fits(arr.shape, lay, joints)]
    if not fits:
        raise DataError(f"{what} has shape {shape}: no axis of size 2 or 3 (coordinates) beside one of size "
                        f"{joints} (joints); accepted layouts: {', '.join(PRED_LAYOUTS)}", path, key)
    agree = [lay for lay in fits if arr.shape[lay.split(" x ").index("N")] in people]
    fits = agree or fits
    layout = fits[0]
    if len(fits) > 1:
        warnings.warn(f"{path}: {what} of shape {shape} fits layouts {', '.join(fits)}: read as {layout}, the first in "
                      "the documented order", stacklevel=2)
    axes = layout.split(" x ")
    out = np.transpose(arr, [axes.index(a) for a in "NKC"])[..., :2].astype(np.float64)
    return out, f"{'array' if key is None else f'key {key!r}'}, {layout} ({' x '.join(map(str, shape))})"


def _fits(shape: tuple[int, ...], layout: str, joints: int) -> bool:
    axes = layout.split(" x ")
    return shape[axes.index("K")] == joints and shape[axes.index("C")] in (2, 3)


def score_files(preds, gt, visibility=None, convention="hrnet", zero_based=False, dataset="mpii") -> dict:
    """Score a predictions file (any layout of PRED_LAYOUTS under any key of PRED_KEYS) against MPII
    gt_valid.mat-style ground truth (PCKh) or LSP joints.mat / the LSP JSON (PCK@0.2). The result also
    holds "preds_read_as": the key and layout the predictions were read with."""
    from pbn.data import readers
    from pbn.data.records import flags_from

    shift = 0.0 if zero_based else 1.0
    if dataset == "lsp":
        records = readers.read_lsp_mat(gt) if str(gt).endswith(".mat") else readers.read_lsp_json(gt)
        pred, read_as = _load_preds(Path(preds), 14, (len(records), 1000) if len(records) == 2000 else (len(records),))
        if len(pred) == 1000 and len(records) == 2000:
            records = readers.lsp_split(records, "test")
        if len(pred) != len(records):
            raise DataError(f"{len(pred)} predictions but {gt} has {len(records)} people", path=preds)
        r = lsp_pck(pred - shift, np.stack([r.joints[:, :2] for r in records]),
                    np.stack([r.joints[:, 2] for r in records]))
        return {**r, "preds_read_as": read_as}
    g = readers.read_gt_mat(gt)
    pred, read_as = _load_preds(Path(preds), NUM_JOINTS, (len(g["joints"]),))
    if len(pred) != len(g["joints"]):
        raise DataError(f"{len(pred)} predictions but {gt} has {len(g['joints'])} people", path=preds)
    vis = None
    if visibility is not None:
        vis = readers.read_visibility(visibility)
        if len(vis) != len(g["joints"]):
            raise DataError(f"{len(vis)} people but {gt} has {len(g['joints'])}", path=visibility)
    flags = flags_from(g["annotated"], vis)
    return {**mpii_pckh(pred - shift, g["joints"], flags, g["head_size"], convention), "preds_read_as": read_as}


def format_table(r: dict) -> str:
    cols = ["Head", "Sho", "Elb", "Wri", "Hip", "Knee", "Ank", "Mean", "Mean@0.1", "Visible", "Occluded"]
    vals = [r[k] for k in REPORT_KEYS] + [r["mean"], r["mean@0.1"], r["visible"], r["occluded"]]
    head = " ".join(f"{c:>8}" for c in cols)
    row = " ".join(f"{v:8.2f}" for v in vals)
    c = r["counts"]
    read_as = f"\npredictions read as: {r['preds_read_as']}" if r.get("preds_read_as") else ""
    return (f"{r['metric']}  convention={r['convention']}\n{head}\n{row}\n"
            f"joints scored: {c['joints']} (visible {c['visible']}, occluded {c['occluded']}); AUC {r['auc']:.2f}"
            f"{read_as}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pbn.evaluate", description="Score a predictions file.",
                                epilog=PREDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preds", required=True,
                   help=f".mat/.h5 (key {' or '.join(PRED_KEYS)}) or .npy; N x K x 2, 2 x K x N, ... (see below)")
    p.add_argument("--gt", required=True, help="MPII: gt_valid.mat-style file; LSP: joints.mat or the LSP JSON")
    p.add_argument("--visibility", help="MPII is_visible source: valid.h5 or a bearpaw JSON")
    p.add_argument("--convention", choices=sorted(CONVENTIONS), default="hrnet",
                   help="hrnet: hit at <=, count-weighted Mean; pytorch-pose: <, unweighted (default: hrnet)")
    p.add_argument("--dataset", choices=("mpii", "lsp"), default="mpii",
                   help="mpii: PCKh@0.5; lsp: PCK@0.2 of the 14 LSP joints (default: mpii)")
    p.add_argument("--zero-based", action="store_true", help="predictions are 0-based pixels (default 1-based)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            r = score_files(a.preds, a.gt, a.visibility, a.convention, a.zero_based, a.dataset)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    for w in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {w}", file=sys.stderr)
    if a.json:
        keys = [*REPORT_KEYS, "mean", "mean@0.1", "auc", "visible", "occluded", "convention", "metric", "counts",
                "preds_read_as"]
        print(json.dumps({k: (None if isinstance(r[k], float) and np.isnan(r[k]) else r[k]) for k in keys}))
    else:
        print(format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
