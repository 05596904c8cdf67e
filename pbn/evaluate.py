"""PCKh (MPII) and PCK@0.2 (LSP) as pure functions, and a command that scores prediction files.

Two MPII conventions, both named (shared/docs/evaluation.md):
  hrnet         hit at e <= alpha; Mean = count-weighted over the 14 joints without pelvis and thorax
  pytorch-pose  hit at e <  alpha; Mean = unweighted mean of those 14 per-joint PCKh
Mean@0.1 is at exactly alpha = 0.10 in both (not HRNet's 0.11 index quirk). AUC: the Mean averaged
over alpha = 0, 0.01, ..., 0.50. Visible/Occluded: the Mean restricted to annotated joints whose MPII
is_visible is 1/0; NaN (with one warning) where the ground truth carries no visibility.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pbn import stats
from pbn.data.records import DataError
from pbn.metrics import SCORE_KEYS
from pbn.skeleton import (
    ANNOTATED,
    LSP_REPORT_GROUPS,
    LSP_TORSO,
    MISSING,
    MPII_MEAN_EXCLUDED,
    MPII_REPORT_GROUPS,
    NUM_JOINTS,
    OCCLUDED,
    VISIBLE,
)

PCKH_ALPHA = 0.5
PCKH_ALPHA_FINE = 0.10
LSP_ALPHA = 0.2
AUC_ALPHAS = np.round(np.arange(0, 51) * 0.01, 2)  # MPII: 0..0.5
LSP_AUC_ALPHAS = np.round(np.arange(0, 21) * 0.01, 2)  # LSP (eval_pose): 0..0.2
REPORT_KEYS = ("head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")


@dataclass(frozen=True)
class Convention:
    strict: bool  # hit at e < alpha (else <=)
    weighted: bool  # Mean weighted by joint counts (else a plain mean of per-joint values)


CONVENTIONS = {"hrnet": Convention(strict=False, weighted=True), "pytorch-pose": Convention(True, False)}


def normalized_errors(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """pred, gt [N, K, 2]; norm [N] -> e [N, K]; NaN predictions become +inf (always a miss)."""
    e = np.linalg.norm(pred - gt, axis=-1) / norm[:, None]
    return np.where(np.isnan(e), np.inf, e)


def per_joint(err: np.ndarray, mask: np.ndarray, alpha: float, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """err [N, K], mask [N, K] bool -> (PCK [K] in percent, NaN where no joint counts; counts [K])."""
    hit = (err < alpha) if strict else (err <= alpha)
    counts = mask.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pck = 100.0 * (hit & mask).sum(0) / counts
    return np.where(counts > 0, pck, np.nan), counts


def joint_mean(pck: np.ndarray, counts: np.ndarray, include: np.ndarray, weighted: bool) -> float:
    keep = include & (counts > 0)
    if not keep.any():
        return float("nan")
    if weighted:
        return float((pck[keep] * counts[keep]).sum() / counts[keep].sum())
    return float(pck[keep].mean())


def pck_interval(err: np.ndarray, mask: np.ndarray, include: np.ndarray, alpha: float, conv: Convention,
                  resamples: int = stats.RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the Mean over validation images (resampled with replacement,
    fixed seed): per-joint hits and counts are summed with each resample's image multiplicities, then
    combined as the convention combines them. The uncertainty that comes from the validation set alone."""
    if not (mask[:, include]).any():
        return float("nan"), float("nan")
    hit = ((err < alpha) if conv.strict else (err <= alpha)) & mask
    counts = stats.resample_counts(len(err), resamples, seed)  # [B, N]
    hits_b, joints_b = counts @ hit[:, include].astype(np.float64), counts @ mask[:, include].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if conv.weighted:
            means = 100.0 * hits_b.sum(1) / joints_b.sum(1)
        else:
            means = np.nanmean(np.where(joints_b > 0, 100.0 * hits_b / joints_b, np.nan), axis=1)
    return stats.percentile_interval(means)


def _summary(err, flags, include, groups, alpha, fine_alpha, auc_alphas, conv: Convention,
             intervals: bool = False) -> dict:
    annotated = flags != MISSING
    pck, counts = per_joint(err, annotated, alpha, conv.strict)
    out = {}
    for name, idx in groups.items():
        out[name] = float(np.nanmean(pck[list(idx)])) if np.isfinite(pck[list(idx)]).any() else float("nan")
    out["mean"] = joint_mean(pck, counts, include, conv.weighted)
    fine, fcounts = per_joint(err, annotated, fine_alpha, conv.strict)
    out[f"mean@{fine_alpha:g}"] = joint_mean(fine, fcounts, include, conv.weighted)
    out["auc"] = float(np.mean([joint_mean(*per_joint(err, annotated, a, conv.strict), include, conv.weighted)
                                for a in auc_alphas]))
    known = np.isin(flags, (VISIBLE, OCCLUDED))
    if (annotated & ~known).any() or not known.any():
        if (flags == ANNOTATED).any():
            warnings.warn("ground truth has no visibility flags: visible/occluded PCKh unavailable (NaN)", stacklevel=3)
        out["visible"] = out["occluded"] = float("nan")
        nvis = nocc = 0
    else:
        for key, flag in (("visible", VISIBLE), ("occluded", OCCLUDED)):
            p, c = per_joint(err, flags == flag, alpha, conv.strict)
            out[key] = joint_mean(p, c, include, conv.weighted)
        nvis, nocc = int((flags == VISIBLE)[:, include].sum()), int((flags == OCCLUDED)[:, include].sum())
    if intervals:
        out["mean_ci"] = pck_interval(err, annotated, include, alpha, conv)
        out["occluded_ci"] = (pck_interval(err, flags == OCCLUDED, include, alpha, conv) if nocc
                              else (float("nan"), float("nan")))
    out["per_joint"] = [None if np.isnan(v) else float(v) for v in pck]
    out["counts"] = {"joints": int(counts[include].sum()), "visible": nvis, "occluded": nocc}
    return out


def mpii_pckh(pred, gt, flags, head_size, convention: str = "hrnet", alpha: float = PCKH_ALPHA,
              intervals: bool = False) -> dict:
    """pred, gt [N, 16, 2] (same pixel convention), flags [N, 16], head_size [N] (0.6 x head-box diag).
    -> {head, shoulder, ..., ankle, mean, mean@0.1, auc, visible, occluded, per_joint, counts, convention}
    (+ mean_ci, occluded_ci: bootstrap intervals over images, with intervals=True)"""
    conv = CONVENTIONS[convention]
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    nan = int(np.isnan(pred).any(-1)[np.asarray(flags) != MISSING].sum())
    if nan:
        warnings.warn(f"{nan} annotated joint prediction(s) are NaN: counted as misses", stacklevel=2)
    err = normalized_errors(pred, gt, np.asarray(head_size, np.float64))
    include = np.ones(NUM_JOINTS, bool)
    include[list(MPII_MEAN_EXCLUDED)] = False
    out = _summary(err, np.asarray(flags), include, MPII_REPORT_GROUPS, alpha, PCKH_ALPHA_FINE, AUC_ALPHAS, conv,
                   intervals)
    return {**out, "convention": convention, "metric": f"PCKh@{alpha:g}"}


def lsp_pck(pred, gt, flags, alpha: float = LSP_ALPHA, intervals: bool = False) -> dict:
    """LSP PCK@0.2 (eval_pose): normalized by the l-shoulder to r-hip distance, hit at <=, every joint
    scored, Head = mean of neck and head top, Mean pooled over the 14 joints. pred, gt [N, 14, 2]."""
    pred, gt, flags = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(flags)
    torso = np.linalg.norm(gt[:, LSP_TORSO[0]] - gt[:, LSP_TORSO[1]], axis=-1)
    err = normalized_errors(pred, gt, torso)
    scored = np.where(flags == MISSING, VISIBLE, flags)  # LSP scores every joint
    out = _summary(err, scored, np.ones(gt.shape[1], bool), LSP_REPORT_GROUPS, alpha, 0.1, LSP_AUC_ALPHAS,
                   CONVENTIONS["hrnet"], intervals)
    return {**out, "convention": "eval_pose", "metric": f"PCK@{alpha:g}"}


def as_metrics(summary: dict) -> dict[str, float]:
    """A scoring summary (mpii_pckh / lsp_pck with intervals=True) under the metric keys of pbn/metrics.py:
    the one mapping between the two."""
    out = {"pckh": summary["mean"], "pckh_visible": summary["visible"], "pckh_occluded": summary["occluded"],
           "pckh_0_1": summary["mean@0.1"], "pckh_auc": summary["auc"]}
    out["pckh_lo"], out["pckh_hi"] = summary["mean_ci"]
    out["pckh_occluded_lo"], out["pckh_occluded_hi"] = summary["occluded_ci"]
    out.update({f"pckh_{k}": summary[k] for k in REPORT_KEYS})
    assert set(out) == set(SCORE_KEYS), sorted(set(out) ^ set(SCORE_KEYS))
    return out


# ------------------------------------------------------------------------------------------- CLI
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
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False), None
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy file ({e})") from None
    if suffix not in (".mat", ".h5", ".hdf5"):
        raise DataError(f"{path}: predictions must be .mat, .h5 or .npy, got {suffix!r}")
    import h5py

    if suffix == ".mat" and not h5py.is_hdf5(path):
        m = readers.load_mat(path, ())
        keys = [k for k in m if not k.startswith("__")]
        key = next((k for k in PRED_KEYS if k in m), None)
        if key is None:
            raise DataError(f"{path}: missing key: expected one of {', '.join(map(repr, PRED_KEYS))} (have {keys})")
        return m[key], key
    try:
        with h5py.File(path, "r") as f:
            key = next((k for k in PRED_KEYS if k in f), None)
            if key is None:
                raise DataError(f"{path}: missing dataset: expected one of {', '.join(map(repr, PRED_KEYS))} "
                                f"(have {sorted(f.keys())})")
            return readers.read_h5_dataset(path, key), key
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None


def _load_preds(path: Path, joints: int, people: tuple[int, ...] = ()) -> tuple[np.ndarray, str]:
    """Predictions as [N, joints, 2] and how they were read ("key 'pred', C x K x N (2 x 14 x 1000)").
    people: the ground truth's possible counts, to settle layouts the sizes alone leave open."""
    raw, key = _pred_array(Path(path))
    where = f"{path}: " + ("the array" if key is None else f"key {key!r}")
    arr = np.asarray(raw)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where} holds {arr.dtype} data of shape {arr.shape}, not an array of numbers "
                        "(MPII annolist structs are not read: export an N x K x 2 array)")
    shape = arr.shape
    if arr.ndim == 2:  # one person: MATLAB drops a trailing singleton dimension
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{where} has shape {shape}: expected 3 axes (people, {joints} joints, 2 or 3 coordinates)")
    fits = [lay for lay in PRED_LAYOUTS if _fits(arr.shape, lay, joints)]
    if not fits:
        raise DataError(f"{where} has shape {shape}: no axis of size 2 or 3 (coordinates) beside one of size "
                        f"{joints} (joints); accepted layouts: {', '.join(PRED_LAYOUTS)}")
    agree = [lay for lay in fits if arr.shape[lay.split(" x ").index("N")] in people]
    fits = agree or fits
    layout = fits[0]
    if len(fits) > 1:
        warnings.warn(f"{where} of shape {shape} fits layouts {', '.join(fits)}: read as {layout}, the first in "
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
            raise DataError(f"{preds}: {len(pred)} predictions but {gt} has {len(records)} people")
        r = lsp_pck(pred - shift, np.stack([r.joints[:, :2] for r in records]),
                    np.stack([r.joints[:, 2] for r in records]))
        return {**r, "preds_read_as": read_as}
    g = readers.read_gt_mat(gt)
    pred, read_as = _load_preds(Path(preds), NUM_JOINTS, (len(g["joints"]),))
    if len(pred) != len(g["joints"]):
        raise DataError(f"{preds}: {len(pred)} predictions but {gt} has {len(g['joints'])} people")
    vis = None
    if visibility is not None:
        vis = readers.read_visibility(visibility)
        if len(vis) != len(g["joints"]):
            raise DataError(f"{visibility}: {len(vis)} people but {gt} has {len(g['joints'])}")
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pbn.evaluate", description="Score a predictions file.",
                                epilog=PREDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preds", required=True,
                   help=f".mat/.h5 (key {' or '.join(PRED_KEYS)}) or .npy; N x K x 2, 2 x K x N, ... (see below)")
    p.add_argument("--gt", required=True, help="MPII: gt_valid.mat-style file; LSP: joints.mat or the LSP JSON")
    p.add_argument("--visibility", help="MPII is_visible source: valid.h5 or a bearpaw JSON")
    p.add_argument("--convention", choices=sorted(CONVENTIONS), default="hrnet")
    p.add_argument("--dataset", choices=("mpii", "lsp"), default="mpii")
    p.add_argument("--zero-based", action="store_true", help="predictions are 0-based pixels (default 1-based)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
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
