"""The statistics module on cases whose answer is known."""

import math

import numpy as np
import pytest

from pbn import stats
from pbn.pck import CONVENTIONS, image_index, pck_interval


def _interval(hits: np.ndarray, mask: np.ndarray, resamples: int = stats.RESAMPLES, images=None,
              convention: str = "hrnet") -> tuple[float, float]:
    """pck_interval of the Mean on given per-joint hits: errors 0 (hit) or 1 (miss), alpha 0.5."""
    err = np.where(hits, 0.0, 1.0)
    return pck_interval(err, mask, np.ones(hits.shape[1], bool), 0.5, CONVENTIONS[convention], resamples,
                        images=images)


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


def test_image_bootstrap_of_perfectly_correlated_pairs_is_sqrt2_wider():
    # 1000 images of two people whose hits are identical (one joint each, p ~ 0.3). Resampling people treats
    # the 2000 as independent: half-width 1.96 sqrt(p(1-p)/2000). Resampling images (the pair together)
    # has 1000 independent units, each contributing 2 x the same hit: half-width 1.96 sqrt(p(1-p)/1000),
    # sqrt(2) = 1.414 times wider. Each half-width carries Monte Carlo error from its 1000 resamples: the
    # sd of a 2.5%/97.5% sample quantile of 1000 normal draws is sqrt(0.025 x 0.975 / 1000) / phi(1.96) =
    # 0.084 sd, so the half-width (hi - lo) / 2 has sd 0.084 / sqrt(2) = 0.060 sd, 3.0% of its 1.96 sd;
    # the ratio of two independent ones 4.3%. rel=0.15 is a 3.5-sigma margin, and the person bootstrap's
    # ratio of 1 (what the image ids would give if ignored) is 29% below sqrt(2): it fails.
    hits = np.random.default_rng(5).random((1000, 1)) < 0.3
    pairs = np.repeat(hits, 2, axis=0)  # people 2i and 2i + 1 share image i and its hit
    images = np.repeat(np.arange(1000), 2)
    lo_p, hi_p = _interval(pairs, np.ones_like(pairs))
    lo_i, hi_i = _interval(pairs, np.ones_like(pairs), images=images)
    assert lo_i < 100 * pairs.mean() < hi_i
    assert (hi_i - lo_i) / (hi_p - lo_p) == pytest.approx(math.sqrt(2), rel=0.15)
    # the image bootstrap of the pairs is the person bootstrap of one person per image: same counts, same data
    assert (lo_i, hi_i) == _interval(hits, np.ones_like(hits))
    # the people of an image need not be adjacent: shuffled, the pairs are still resampled together
    order = np.random.default_rng(6).permutation(2000)
    lo_s, hi_s = _interval(pairs[order], np.ones_like(pairs), images=images[order])
    assert (hi_s - lo_s) / (hi_p - lo_p) == pytest.approx(math.sqrt(2), rel=0.15)


def test_one_person_per_image_equals_the_person_bootstrap_exactly():
    rng = np.random.default_rng(7)
    mask = np.arange(16)[None, :] < rng.integers(1, 17, 300)[:, None]
    hits = rng.random((300, 16)) < 0.6
    ids = [f"img{(i * 7919) % 1000:04d}.jpg" for i in range(300)]  # distinct, not in sorted order
    for conv in ("hrnet", "pytorch-pose"):
        assert _interval(hits, mask, images=ids, convention=conv) == _interval(hits, mask, convention=conv)
    assert image_index(ids, 300).tolist() == list(range(300))
    assert image_index(["b", "a", "b", "c", "a"], 5).tolist() == [0, 1, 0, 2, 1]  # first appearance order
    with pytest.raises(ValueError, match="2 image ids for 3 people"):
        image_index(["a", "b"], 3)


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
