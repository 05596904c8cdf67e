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

from pbn.data.records import DataError
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


def _summary(err, flags, include, groups, alpha, fine_alpha, auc_alphas, conv: Convention) -> dict:
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
    out["per_joint"] = [None if np.isnan(v) else float(v) for v in pck]
    out["counts"] = {"joints": int(counts[include].sum()), "visible": nvis, "occluded": nocc}
    return out


def mpii_pckh(pred, gt, flags, head_size, convention: str = "hrnet", alpha: float = PCKH_ALPHA) -> dict:
    """pred, gt [N, 16, 2] (same pixel convention), flags [N, 16], head_size [N] (0.6 x head-box diag).
    -> {head, shoulder, ..., ankle, mean, mean@0.1, auc, visible, occluded, per_joint, counts, convention}"""
    conv = CONVENTIONS[convention]
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    nan = int(np.isnan(pred).any(-1)[np.asarray(flags) != MISSING].sum())
    if nan:
        warnings.warn(f"{nan} annotated joint prediction(s) are NaN: counted as misses", stacklevel=2)
    err = normalized_errors(pred, gt, np.asarray(head_size, np.float64))
    include = np.ones(NUM_JOINTS, bool)
    include[list(MPII_MEAN_EXCLUDED)] = False
    out = _summary(err, np.asarray(flags), include, MPII_REPORT_GROUPS, alpha, PCKH_ALPHA_FINE, AUC_ALPHAS, conv)
    return {**out, "convention": convention, "metric": f"PCKh@{alpha:g}"}


def lsp_pck(pred, gt, flags, alpha: float = LSP_ALPHA) -> dict:
    """LSP PCK@0.2 (eval_pose): normalized by the l-shoulder to r-hip distance, hit at <=, every joint
    scored, Head = mean of neck and head top, Mean pooled over the 14 joints. pred, gt [N, 14, 2]."""
    pred, gt, flags = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(flags)
    torso = np.linalg.norm(gt[:, LSP_TORSO[0]] - gt[:, LSP_TORSO[1]], axis=-1)
    err = normalized_errors(pred, gt, torso)
    scored = np.where(flags == MISSING, VISIBLE, flags)  # LSP scores every joint
    out = _summary(err, scored, np.ones(gt.shape[1], bool), LSP_REPORT_GROUPS, alpha, 0.1, LSP_AUC_ALPHAS,
                   CONVENTIONS["hrnet"])
    return {**out, "convention": "eval_pose", "metric": f"PCK@{alpha:g}"}


# ------------------------------------------------------------------------------------------- CLI
def _load_preds(path: Path, joints: int) -> np.ndarray:
    from pbn.data import readers

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path)
    elif suffix == ".mat":
        arr = readers.load_mat(path, ("preds",))["preds"]
    elif suffix in (".h5", ".hdf5"):
        arr = readers.read_h5_dataset(path, "preds")
    else:
        raise DataError(f"{path}: predictions must be .mat, .h5 or .npy, got {suffix!r}")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (2, 3) and arr.shape[1] == joints and arr.shape[2] != 2:
        arr = np.transpose(arr[:2], (2, 1, 0))  # MATLAB layout 2xKxN / 3xKxN
    if arr.ndim != 3 or arr.shape[1:] != (joints, 2):
        raise DataError(f"{path}: expected predictions N x {joints} x 2, got shape {arr.shape}")
    return arr


def score_files(preds, gt, visibility=None, convention="hrnet", zero_based=False, dataset="mpii") -> dict:
    from pbn.data import readers
    from pbn.data.records import flags_from

    k = 16 if dataset == "mpii" else 14
    pred = _load_preds(Path(preds), k) - (0.0 if zero_based else 1.0)
    if dataset == "lsp":
        records = readers.read_lsp_mat(gt) if str(gt).endswith(".mat") else readers.read_lsp_json(gt)
        if len(pred) == 1000 and len(records) == 2000:
            records = readers.lsp_split(records, "test")
        if len(pred) != len(records):
            raise DataError(f"{preds}: {len(pred)} predictions but {gt} has {len(records)} people")
        return lsp_pck(pred, np.stack([r.joints[:, :2] for r in records]), np.stack([r.joints[:, 2] for r in records]))
    g = readers.read_gt_mat(gt)
    if len(pred) != len(g["joints"]):
        raise DataError(f"{preds}: {len(pred)} predictions but {gt} has {len(g['joints'])} people")
    vis = None
    if visibility is not None:
        vis = readers.read_visibility(visibility)
        if len(vis) != len(g["joints"]):
            raise DataError(f"{visibility}: {len(vis)} people but {gt} has {len(g['joints'])}")
    flags = flags_from(g["annotated"], vis)
    return mpii_pckh(pred, g["joints"], flags, g["head_size"], convention)


def format_table(r: dict) -> str:
    cols = ["Head", "Sho", "Elb", "Wri", "Hip", "Knee", "Ank", "Mean", "Mean@0.1", "Visible", "Occluded"]
    vals = [r[k] for k in REPORT_KEYS] + [r["mean"], r["mean@0.1"], r["visible"], r["occluded"]]
    head = " ".join(f"{c:>8}" for c in cols)
    row = " ".join(f"{v:8.2f}" for v in vals)
    c = r["counts"]
    return (f"{r['metric']}  convention={r['convention']}\n{head}\n{row}\n"
            f"joints scored: {c['joints']} (visible {c['visible']}, occluded {c['occluded']}); AUC {r['auc']:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pbn.evaluate", description="Score a predictions file.")
    p.add_argument("--preds", required=True, help=".mat/.h5 (key 'preds') or .npy, N x 16 x 2 (LSP: N x 14 x 2)")
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
    for w in {str(w.message) for w in caught}:
        print(f"warning: {w}", file=sys.stderr)
    if a.json:
        keys = [*REPORT_KEYS, "mean", "mean@0.1", "auc", "visible", "occluded", "convention", "metric", "counts"]
        print(json.dumps({k: (None if isinstance(r[k], float) and np.isnan(r[k]) else r[k]) for k in keys}))
    else:
        print(format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
