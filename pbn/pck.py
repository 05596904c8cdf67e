"""PCKh (MPII) and PCK@0.2 (LSP) as pure functions: the metric math every scorer shares.

Sits below pbn.data (whose sources score their predictions with it) and imports only numpy, pbn.stats,
pbn.skeleton and pbn.metrics; the command that scores prediction files is pbn.evaluate, above both.

Two MPII conventions, both named (shared/docs/evaluation.md):
  hrnet         hit at e <= alpha; Mean = count-weighted over the 14 joints without pelvis and thorax
  pytorch-pose  hit at e <  alpha; Mean = unweighted mean of those 14 per-joint PCKh
Mean@0.1 is at exactly alpha = 0.10 in both (not HRNet's 0.11 index quirk). AUC: the Mean averaged
over alpha = 0, 0.01, ..., 0.50. Visible/Occluded: the Mean restricted to annotated joints whose MPII
is_visible is 1/0; NaN (with one warning) where the ground truth carries no visibility.
Intervals (intervals=True): a bootstrap over validation IMAGES, all people of an image resampled together.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pbn import stats
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


def image_index(images: Sequence | None, n: int) -> np.ndarray:
    """Per-person image ids (any hashable values; people of one image share theirs) -> image index [n] in
    0..M-1, numbered in order of first appearance. None: every person is its own image (index = arange(n))."""
    if images is None:
        return np.arange(n)
    if len(images) != n:
        raise ValueError(f"{len(images)} image ids for {n} people")
    first: dict = {}
    return np.fromiter((first.setdefault(i, len(first)) for i in images), np.int64, count=n)


def pck_interval(err: np.ndarray, mask: np.ndarray, include: np.ndarray, alpha: float, conv: Convention,
                 resamples: int = stats.RESAMPLES, seed: int = 0,
                 images: Sequence | None = None) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the Mean over validation images, resampled with replacement
    (fixed seed). images: an image id per person (e.g. its record's image path): all people of an image
    enter a resample together, as they are not independent (MPII: 2,958 validation people in 2,729
    images); None: one person per image. Each resample draws image counts (stats.resample_counts over the
    M images); a person's multiplicity is its image's count, so per-joint hits and counts are summed per
    image first and then weighted by the counts (one matrix product), and combined as the convention
    combines them. The uncertainty that comes from the validation set alone. With one person per image
    (distinct ids) the interval is exactly that of images=None."""
    if not (mask[:, include]).any():
        return float("nan"), float("nan")
    hit = ((err < alpha) if conv.strict else (err <= alpha)) & mask
    group = image_index(images, len(err))
    m = int(group.max()) + 1 if len(group) else 0
    per_image = np.zeros((2, m, int(include.sum())))  # hits and joints of each image
    np.add.at(per_image, (slice(None), group), np.stack([hit[:, include], mask[:, include]]).astype(np.float64))
    counts = stats.resample_counts(m, resamples, seed)  # [B, M]
    hits_b, joints_b = counts @ per_image[0], counts @ per_image[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        if conv.weighted:
            means = 100.0 * hits_b.sum(1) / joints_b.sum(1)
        else:
            means = np.nanmean(np.where(joints_b > 0, 100.0 * hits_b / joints_b, np.nan), axis=1)
    return stats.percentile_interval(means)


def _summary(err, flags, include, groups, alpha, fine_alpha, auc_alphas, conv: Convention,
             intervals: bool = False, images: Sequence | None = None) -> dict:
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
        out["mean_ci"] = pck_interval(err, annotated, include, alpha, conv, images=images)
        out["occluded_ci"] = (pck_interval(err, flags == OCCLUDED, include, alpha, conv, images=images) if nocc
                              else (float("nan"), float("nan")))
    out["per_joint"] = [None if np.isnan(v) else float(v) for v in pck]
    out["counts"] = {"joints": int(counts[include].sum()), "visible": nvis, "occluded": nocc}
    return out


def mpii_pckh(pred, gt, flags, head_size, convention: str = "hrnet", alpha: float = PCKH_ALPHA,
              intervals: bool = False, images: Sequence | None = None) -> dict:
    """pred, gt [N, 16, 2] (same pixel convention), flags [N, 16], head_size [N] (0.6 x head-box diag).
    -> {head, shoulder, ..., ankle, mean, mean@0.1, auc, visible, occluded, per_joint, counts, convention}
    (+ mean_ci, occluded_ci: bootstrap intervals over images, with intervals=True; images: an image id per
    person, see pck_interval; None: one person per image)"""
    conv = CONVENTIONS[convention]
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    nan = int(np.isnan(pred).any(-1)[np.asarray(flags) != MISSING].sum())
    if nan:
        warnings.warn(f"{nan} annotated joint prediction(s) are NaN: counted as misses", stacklevel=2)
    err = normalized_errors(pred, gt, np.asarray(head_size, np.float64))
    include = np.ones(NUM_JOINTS, bool)
    include[list(MPII_MEAN_EXCLUDED)] = False
    out = _summary(err, np.asarray(flags), include, MPII_REPORT_GROUPS, alpha, PCKH_ALPHA_FINE, AUC_ALPHAS, conv,
                   intervals, images)
    return {**out, "convention": convention, "metric": f"PCKh@{alpha:g}"}


def lsp_pck(pred, gt, flags, alpha: float = LSP_ALPHA, intervals: bool = False,
            images: Sequence | None = None) -> dict:
    """LSP PCK@0.2 (eval_pose): normalized by the l-shoulder to r-hip distance, hit at <=, every joint
    scored, Head = mean of neck and head top, Mean pooled over the 14 joints. pred, gt [N, 14, 2].
    images: as in mpii_pckh (LSP has one person per image)."""
    pred, gt, flags = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(flags)
    torso = np.linalg.norm(gt[:, LSP_TORSO[0]] - gt[:, LSP_TORSO[1]], axis=-1)
    err = normalized_errors(pred, gt, torso)
    scored = np.where(flags == MISSING, VISIBLE, flags)  # LSP scores every joint
    out = _summary(err, scored, np.ones(gt.shape[1], bool), LSP_REPORT_GROUPS, alpha, 0.1, LSP_AUC_ALPHAS,
                   CONVENTIONS["hrnet"], intervals, images)
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
