"""The statistics module on cases whose answer is known."""

import math

import numpy as np
import pytest

from pbn import stats


def _interval(hits: np.ndarray, mask: np.ndarray, resamples: int = stats.RESAMPLES) -> tuple[float, float]:
    """pck_interval of the hrnet Mean on given per-joint hits: errors 0 (hit) or 1 (miss), alpha 0.5."""
    from pbn.evaluate import CONVENTIONS, pck_interval

    err = np.where(hits, 0.0, 1.0)
    return pck_interval(err, mask, np.ones(hits.shape[1], bool), 0.5, CONVENTIONS["hrnet"], resamples)


def test_pck_interval_matches_the_binomial_interval():
    # 2000 images with one joint each, hit with p = 0.3: the 95% interval is p +- 1.96 sqrt(p(1-p)/N) =
    # +- 2.01 points. With 1000 resamples the percentile ends carry Monte Carlo error of about 6% of the
    # half-width (sd of the 2.5% quantile of 1000 draws ~ 0.086 sd), so 20% is a > 3-sigma margin.
    rng = np.random.default_rng(1)
    hits = rng.random((2000, 1)) < 0.3
    lo, hi = _interval(hits, np.ones_like(hits))
    p = 100 * hits.mean()
    half = 1.96 * math.sqrt(p * (100 - p) / 2000)
    assert lo < p < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.2)
    assert _interval(hits, np.ones_like(hits)) == (lo, hi)  # fixed seed: the same interval


def test_pck_interval_covers_the_truth_about_95_percent_of_the_time():
    # 300 simulated validation sets of 200 images x 1..16 annotated joints, p = 0.4. Coverage of a valid 95%
    # interval is 0.95 +- 0.0126 (binomial sd over 300 sets); [0.90, 0.99] is a ~4-sigma band.
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(300):
        mask = np.arange(16)[None, :] < rng.integers(1, 17, 200)[:, None]
        hits = rng.random((200, 16)) < 0.4
        lo, hi = _interval(hits, mask, resamples=400)
        covered += lo <= 40.0 <= hi
    assert 0.90 <= covered / 300 <= 0.99


def test_pck_interval_without_joints_is_nan():
    assert all(math.isnan(v) for v in _interval(np.zeros((3, 2), bool), np.zeros((3, 2), bool)))


def test_mean_interval_is_the_student_t_interval():
    m, lo, hi = stats.mean_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert m == 2.0 and lo == pytest.approx(2 - half, abs=1e-5) and hi == pytest.approx(2 + half, abs=1e-5)
    assert math.isnan(stats.mean_interval([5.0])[1])


def test_paired_difference_resolves_a_real_shift_and_not_noise():
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 3, 5)  # large seed noise shared by both configurations (paired)
    a = 50 + seed_effect + 2.0 + rng.normal(0, 0.3, 5)
    b = 50 + seed_effect + rng.normal(0, 0.3, 5)
    d = stats.paired_difference(a, b)
    assert d["resolved"] and d["lo"] > 0 and d["n"] == 5 and d["diff"] == pytest.approx(2.0, abs=0.6)
    same = stats.paired_difference([1.0, 2.0, 3.0], [1.1, 1.9, 3.05])
    assert not same["resolved"] and same["lo"] < 0 < same["hi"]
    assert not stats.paired_difference([1.0], [0.0])["resolved"]  # one seed: no interval, no verdict


def test_spearman_and_its_bootstrap():
    x = np.arange(20.0)
    assert stats.spearman(x, x**3) == pytest.approx(1.0)
    assert stats.spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(stats.spearman([1, 2], [2, 1]))
    rng = np.random.default_rng(4)
    y = x + rng.normal(0, 3, 20)
    r = stats.bootstrap_spearman(x, y)
    assert r["lo"] <= r["rho"] <= r["hi"] and r["n"] == 20 and r["rho"] > 0.5
    noise = stats.bootstrap_spearman(x, rng.normal(0, 1, 20))
    assert noise["lo"] < 0 < noise["hi"]  # independent: the interval straddles 0
