"""The statistics behind every comparison the project prints: pure functions, fixed seeds.

- `resample_counts`, `percentile_interval`: the bootstrap over validation images (all people of an image
  together) behind every PCKh interval (pbn.pck.pck_interval): the uncertainty that comes from the
  validation set alone.
- `mean_interval`, `paired_difference`: across training seeds (Student t; seeds are few).
- `spearman`, `bootstrap_spearman`: how well an early epoch ranks trials the way the last one does.
"""

from __future__ import annotations

import functools
import math

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000


@functools.lru_cache(maxsize=2)
def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n]: how often each of n units (validation images) appears in each bootstrap resample
    (fixed seed; cached and read-only, since a validation set is resampled every epoch). A statistic that is
    a sum over units is then one matrix product for all resamples."""
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (draws + np.arange(resamples)[:, None] * n).ravel()
    counts = np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    counts.setflags(write=False)
    return counts


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail])
    return float(lo), float(hi)


def t_quantile(level: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, dof))


def mean_interval(x, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval of the mean of x (NaNs dropped); lo = hi = nan for n < 2."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = t_quantile(level, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def paired_difference(a, b, level: float = LEVEL) -> dict:
    """a - b over paired replicates (the same seeds): mean difference, its t interval, n, and whether
    the interval excludes 0. Pairs where either value is missing are dropped."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    diff, lo, hi = mean_interval(a[ok] - b[ok], level)
    resolved = bool(np.isfinite(lo) and (lo > 0 or hi < 0))
    return {"diff": diff, "lo": lo, "hi": hi, "n": int(ok.sum()), "resolved": resolved}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank) along the last axis."""
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def spearman(x, y) -> float:
    """Spearman rank correlation; nan for fewer than 3 pairs or a constant side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    rx, ry = _ranks(x[ok]), _ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_spearman(x, y, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
    """Spearman's rho with a percentile bootstrap interval over the pairs (trials)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    rho = spearman(x, y)
    if not np.isfinite(rho):
        return {"rho": rho, "lo": math.nan, "hi": math.nan, "n": len(x)}
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    rx, ry = _ranks(x[idx]), _ranks(y[idx])
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    r = r[np.isfinite(r)]  # a resample with a constant side has no rank correlation
    tail = (1 - level) / 2
    lo, hi = np.quantile(r, [tail, 1 - tail]) if len(r) else (math.nan, math.nan)
    return {"rho": rho, "lo": float(lo), "hi": float(hi), "n": len(x)}
