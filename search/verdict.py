"""The verdict's decision rule: a group-sequential race of paired seeds with a controlled family-wise error.

A confirmation stage retrains a few points with paired seeds (seed index i of every point uses the same
seed). For each declared contrast a - b the driver adds seeds look by look (`Design.looks`) and stops a
contrast as soon as it is decided: `better` / `worse` (superiority), `equivalent` (within +-margin, TOST)
or, at the cap, `undecided`. A decision, once made, is final.

Why every decision is right with probability >= 1 - alpha:
- Per contrast and look l (n_l pairs, mean m, s = max(sd of differences, floor), se = s / sqrt(n_l)) the
  critical values c2_l (two-sided) and c1_l (one-sided) are calibrated so that, under any mean and sd,
  P(|m_l - mu| > c2_l se_l at SOME look) = alpha_c and P(m_l - mu < -c1_l se_l at SOME look) = alpha_c:
  the joint null law of the nested paired t statistics (T_1..T_L) is free of mu and sigma, so one
  simulation of it (fixed seed, `PATHS` paths, cached) calibrates every contrast. The floor only widens
  intervals, so it keeps coverage (it is left out of the calibration, which stays exact without it).
- If all intervals m_l +- c2_l se_l cover mu, `better` (lo > 0) and `worse` (hi < 0) are right. `equivalent`
  claims |mu| < margin; it is wrong only when |mu| >= margin, say mu >= margin, and then needs
  m_l + c1_l se_l < margin <= mu at the look of the decision: only the lower tail can err, so the one-sided
  c1 suffices (the TOST argument). A wrong `worse` at mu >= margin is in that same lower-tail event,
  since c1_l <= c2_l; so each contrast errs with probability <= alpha_c, whatever mu.
- The bounds hold simultaneously over ALL declared looks, so stopping a contrast (or a point) after a
  decision, or the driver stopping early for any reason, cannot raise the error: the decision's event is
  contained in the all-looks event. Looks must be declared before the data (they are in the Design).
- alpha_c = (metric's alpha) / (number of contrasts): Bonferroni over contrasts and metrics (the primary
  gets alpha - secondary_alpha whether or not a secondary is reported, so adding one never moves the
  primary's verdict). Exact over looks instead of Bonferroni over looks, which is what saves seeds.
- `best` (Hsu's MCB): the all-pairs intervals are simultaneous (alpha / pairs each), and
  mu_i - max_{j!=i} mu_j = min_j (mu_i - mu_j) lies in [min_j lo_ij, min_j hi_ij]. A j already shown below
  some k != i cannot be i's max and leaves i's minimum; intervals of points that stopped stay as last seen
  (any look's interval covers, so any mix of them does).
A contrast with pairs lost to failed trials uses, at each look, the t quantile of its own df at the same
per-look tail probability (exact per look; the joint calibration is then approximate).

DELTA = 0.1, chosen with search.plan (20,000 races, vs-reference, 4 points, margin 3, cap 20, alpha 0.04) on
the statistics.md cases 0,0,4,4 / 0,0,0,0 / 0,1.2,2.2,3.8 / 0,0,6,6. Delta = 0, .05, .1, .15, .25, .4: summed
E[trials] at sd 2.5, rho .5: 204.2, 203.0, 203.6, 205.6, 212.2, 223.9; at sd 3.4: 256.9, 254.9, 254.4 (least),
255.0, 258.6; least-decided contrast of 0,0,4,4: .967, .979, .985, .988, .992, .994; of the near-tie case: .74,
.79, .83, .86, .89, .91. 0.1 is the cheapest at sd 3.4, within 0.6 trials of the cheapest at 2.5, and decides
more than smaller Delta; each further 0.05 buys 1-3% more near-tie decisions for 0.5-1 trial per race. The
shape on the raw t scale is worse at every Delta (best 228.0 at 0.6-0.7; 53.8 trials for 0,0,4,4): df 2 at
n = 3 has heavy tails. Statistics.md's Bonferroni over looks (alpha 0.05): 204.0, .964 / .73 (reproduced).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import numpy as np
from scipy import special

FAMILIES = ("vs-reference", "all-pairs", "best")
DECISIONS = ("undecided", "better", "worse", "equivalent")  # codes 0..3 in the vectorized core
DEFAULT_LOOKS = (3, 5, 8, 12, 16, 20)
DELTA = 0.1
PATHS = 1_000_000
CALIBRATION_SEED = 20_250_601


@dataclasses.dataclass(frozen=True, kw_only=True)
class Design:
    """The declared design of one race. `looks` keeps the decision looks only: those in [min_seeds,
    max_seeds), then max_seeds (default: the last of `looks`), the cap.

    sd_floor (default margin / 4): the sd of paired differences credited is at least this. A discrete or
    saturated metric can give identical differences at a few seeds (sd 0, an infinite t) although the true
    sd is not 0: that is a tie, not evidence. margin / 4 costs nothing real: when it binds (sd_d <= margin/4)
    equivalence at a true 0 needs c1 < 4 sqrt(n) and superiority at a true margin c2 < 4 sqrt(n) (8.9 at
    n = 5): at alpha_c = 0.04/3 the second look has c1 6.3, c2 7.9, so the floor delays no such decision
    past n = 5, and at n = 3 the calibrated c1 22, c2 36 forbid decisions anyway.
    delta: the Wang-Tsiatis shape of the boundary (see `tail_probabilities`); change it only with a new
    operating-characteristics study (search.plan).
    """

    margin: float
    family: str = "vs-reference"
    alpha: float = 0.05
    secondary_alpha: float = 0.01
    looks: tuple[int, ...] = DEFAULT_LOOKS
    max_seeds: int | None = None
    min_seeds: int = 3
    sd_floor: float | None = None
    delta: float = DELTA

    def __post_init__(self):
        def real(x, lo, hi):  # numbers (numpy's too), not bools, lo <= x <= hi
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and lo <= x <= hi

        def integer(x, lo):
            return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= lo

        looks = tuple(self.looks) if isinstance(self.looks, tuple | list) else ()
        cap = (looks[-1] if looks else None) if self.max_seeds is None else self.max_seeds
        alpha_ok = real(self.alpha, 0, 0.5) and self.alpha > 0
        problem = next((msg for ok, msg in [
            (self.family in FAMILIES, f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}"),
            (real(self.margin, 0, math.inf) and 0 < self.margin < math.inf,
             f"margin must be a positive number of metric points, got {self.margin!r}"),
            (alpha_ok, f"alpha must be in (0, 0.5], got {self.alpha!r}"),
            (real(self.secondary_alpha, 0, 1) and (not alpha_ok or self.secondary_alpha < self.alpha),
             f"secondary_alpha must be in [0, alpha={self.alpha}), got {self.secondary_alpha!r}"),
            (bool(looks) and all(integer(n, 2) for n in looks) and list(looks) == sorted(set(looks)),
             f"looks must be strictly increasing integer seed counts >= 2, got {self.looks!r}"),
            (integer(self.min_seeds, 3), f"min_seeds must be an integer >= 3, got {self.min_seeds!r}"),
            (integer(cap, self.min_seeds) if integer(self.min_seeds, 3) else True,
             f"max_seeds must be an integer >= min_seeds={self.min_seeds}, got {cap!r}"),
            (self.sd_floor is None or (real(self.sd_floor, 0, math.inf) and self.sd_floor < math.inf),
             f"sd_floor must be a finite number >= 0 (None: margin / 4), got {self.sd_floor!r}"),
            (real(self.delta, 0, 1), f"delta must be in [0, 1], got {self.delta!r}"),
        ] if not ok), None)
        if problem:
            raise ValueError(f"Design: {problem}")
        cut = tuple(int(n) for n in looks if self.min_seeds <= n < cap)
        object.__setattr__(self, "looks", (*cut, int(cap)))
        object.__setattr__(self, "max_seeds", int(cap))

    @property
    def floor(self) -> float:
        return self.margin / 4 if self.sd_floor is None else float(self.sd_floor)

    def metric_alpha(self, secondary: bool = False) -> float:
        return self.secondary_alpha if secondary else self.alpha - self.secondary_alpha


def contrasts(points, family: str, reference=None) -> list[tuple]:
    """(a, b) pairs, each read as a - b. vs-reference: every other point minus the reference; all-pairs and
    best: every pair in the given order (`best` derives its per-point bounds from these intervals)."""
    points = list(dict.fromkeys(points))
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if family == "vs-reference":
        if reference not in points:
            raise ValueError(f"the reference {reference!r} is not among the points")
        return [(p, reference) for p in points if p != reference]
    return [(a, b) for i, a in enumerate(points) for b in points[i + 1:]]


# ------------------------------------------------------------------------------------ calibration
def _z_of_t(t: np.ndarray, df: int) -> np.ndarray:
    """The normal score with the same tail probability as t under Student's t with df (no cancellation)."""
    return np.sign(t) * -special.ndtri(special.stdtr(df, -np.abs(t)))


@functools.lru_cache(maxsize=8)
def _null_maxima(looks: tuple[int, ...], delta: float, paths: int = PATHS) -> tuple[np.ndarray, np.ndarray]:
    """Sorted max_l w_l Z_l (one-sided) and max_l w_l |Z_l| (two-sided) over `paths` null paths, where Z_l
    is the normal score of the paired t at look l and w_l = (n_l / n_L)^delta. A path is simulated by its
    sufficient statistics: per block of seeds between looks, the block sum ~ N(0, b) and the within-block
    sum of squares ~ chi2(b - 1), independent (2 draws per block instead of n_L)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    n = np.asarray(looks, np.float64)
    w = (n / n[-1]) ** delta
    one, two = np.empty(paths), np.empty(paths)
    for start in range(0, paths, 250_000):
        c = min(250_000, paths - start)
        s, q, prev, z = np.zeros(c), np.zeros(c), 0, np.empty((c, len(looks)))
        for i, nl in enumerate(looks):
            b = nl - prev
            bs = rng.standard_normal(c) * math.sqrt(b)
            s += bs
            q += bs**2 / b + (rng.chisquare(b - 1, c) if b > 1 else 0.0)
            sd = np.sqrt(np.maximum(q - s**2 / nl, 0) / (nl - 1))
            z[:, i] = _z_of_t(s / math.sqrt(nl) / sd, nl - 1)
            prev = nl
        one[start:start + c], two[start:start + c] = (z * w).max(1), (np.abs(z) * w).max(1)
    one.sort()
    two.sort()
    return one, two


@functools.lru_cache(maxsize=64)
def tail_probabilities(looks: tuple[int, ...], alpha_c: float, delta: float = DELTA) -> tuple[np.ndarray, ...]:
    """Per-look nominal tail probabilities (p1_l one-sided, p2_l per side of two-sided) of the boundary.

    The Wang-Tsiatis shape c * (n_L / n_l)^delta is applied on the normal-score scale and each look's
    critical value is the Student t quantile (df n_l - 1) of the same tail probability: on the raw t scale
    the heavy tails at df 2 would force a huge constant c onto every later look. c is the (1 - alpha_c)
    quantile of the simulated null maximum, so P(cross at any look) = alpha_c exactly (up to Monte Carlo
    error: 1e6 paths give alpha_c +- 0.9% of itself)."""
    one, two = _null_maxima(tuple(looks), float(delta))
    w = (np.asarray(looks, np.float64) / looks[-1]) ** delta
    c1, c2 = np.quantile(one, 1 - alpha_c), np.quantile(two, 1 - alpha_c)
    p1, p2 = special.ndtr(-c1 / w), special.ndtr(-c2 / w)
    p1.setflags(write=False)  # cached: shared by every caller
    p2.setflags(write=False)
    return p1, p2


def t_critical(p, df):
    """Upper t quantile of tail probability p at df (vectorized; nan where df < 1)."""
    df = np.asarray(df, np.float64)
    return np.where(df >= 1, -special.stdtrit(np.maximum(df, 1), p), np.nan)


def critical_values(design: Design, alpha_c: float) -> tuple[np.ndarray, np.ndarray]:
    """(c1, c2) per look at the looks' own df n_l - 1."""
    p1, p2 = tail_probabilities(design.looks, alpha_c, design.delta)
    df = np.asarray(design.looks) - 1
    return t_critical(p1, df), t_critical(p2, df)


# ------------------------------------------------------------------------------------ the vectorized core
@dataclasses.dataclass
class Outcome:
    """decide_looks' answer over sims S, units U (the contrasts; for `best` the points), pairs P, points K.
    look: index into design.looks of the decision or last evaluation (-1: never evaluated). halted: index of
    the look in progress for each sim (len(looks) when the race went through)."""

    decision: np.ndarray  # [S, U] int8 codes into DECISIONS
    look: np.ndarray  # [S, U]
    diff: np.ndarray  # [S, U]
    lo: np.ndarray  # [S, U]
    hi: np.ndarray  # [S, U]
    eq_lo: np.ndarray  # [S, U] the equivalence test's bounds (m -+ c1 se; `best`: as lo/hi)
    eq_hi: np.ndarray  # [S, U]
    pair_mean: np.ndarray  # [S, P] at each pair's last evaluation
    pair_sd: np.ndarray  # [S, P] (unfloored)
    pair_n: np.ndarray  # [S, P]
    trials: np.ndarray  # [S, K] seeds each point trained for the looks it was active at
    halted: np.ndarray  # [S]


def _point_active(decision: np.ndarray, pairs, k: int, best: bool) -> np.ndarray:
    """[S, K]: pairwise families: a point with an undecided contrast; best: every point not ruled out
    while any point is undecided (its intervals enter the others' bounds)."""
    und = decision == 0
    if best:
        return (decision != 2) & und.any(1, keepdims=True)
    incidence = np.zeros((len(pairs), k))  # contrast x point
    for c, (a, b) in enumerate(pairs):
        incidence[c, [a, b]] = 1
    return und @ incidence > 0


def _mcb_bounds(plo, phi, pmean, ia, ib, k):
    """Per point i: bounds (lo, hi) of mu_i - max_{j!=i} mu_j from the pair intervals, and its estimate."""
    s = plo.shape[0]
    lo_m, hi_m, m_m = (np.full((s, k, k), np.nan) for _ in range(3))
    lo_m[:, ia, ib], lo_m[:, ib, ia] = plo, -phi
    hi_m[:, ia, ib], hi_m[:, ib, ia] = phi, -plo
    m_m[:, ia, ib], m_m[:, ib, ia] = pmean, -pmean
    dom = lo_m > 0  # dom[s, x, j]: x significantly above j
    other = (dom.sum(1)[:, None, :] - dom) > 0  # some x other than i is above j: j is not i's max
    eye = np.eye(k, dtype=bool)[None]
    lo = np.where(other | eye, np.inf, lo_m).min(2)
    lo = np.where(np.isposinf(lo), np.where(eye, np.inf, lo_m).min(2), lo)  # (only without coverage)
    m_m = np.where(eye | np.isnan(m_m), np.inf, m_m).min(2)
    return lo, np.where(eye, np.inf, hi_m).min(2), np.where(np.isposinf(m_m), np.nan, m_m)


def decide_looks(values, design: Design, pairs, alpha_c: float | None, complete=None, stop: bool = True) -> Outcome:
    """The race on values[S, K, N] (higher is better; NaN: no value) for pairs of point indices.

    At look l an undecided contrast is evaluated when both its points have all seeds < n_l ended
    (`complete[.., K, L]`, default: all seeds present up to N). stop=True (the primary metric): points
    leave when their contrasts are decided and a sim halts at a look some active point has not finished;
    `best` evaluates a look only when every active point finished it. stop=False (a secondary metric):
    every look the data reached is evaluated and nothing stops. alpha_c None: descriptive, no decisions.
    """
    v = np.asarray(values, np.float64)
    s_, k, n_avail = v.shape
    looks, best = design.looks, design.family == "best"
    ia, ib = np.array([a for a, _ in pairs], int), np.array([b for _, b in pairs], int)
    if complete is None:
        complete = np.broadcast_to(np.asarray(looks) <= n_avail, (k, len(looks)))
    comp_all = np.broadcast_to(complete, (s_, k, len(looks)))
    d = v[:, ia, :] - v[:, ib, :]
    ok = np.isfinite(d)
    cn, cs, cs2 = ok.cumsum(-1), np.where(ok, d, 0).cumsum(-1), np.where(ok, d * d, 0).cumsum(-1)
    describe = alpha_c is None  # descriptive only: estimates at every look the data reached, no decisions
    p1, p2 = tail_probabilities(looks, 0.05 if describe else alpha_c, design.delta)
    u = k if best else len(pairs)
    dec, look = np.zeros((s_, u), np.int8), np.full((s_, u), -1)
    diff, lo_u, hi_u, eqlo_u, eqhi_u = (np.full((s_, u), np.nan) for _ in range(5))
    pm, psd, pn, plo, phi = (np.full((s_, len(pairs)), x) for x in (np.nan, np.nan, 0, -np.inf, np.inf))
    trials, running, halted = np.zeros((s_, k), int), np.ones(s_, bool), np.full(s_, len(looks))
    for li, nl in enumerate(looks):
        und = dec == 0
        act = _point_active(dec, pairs, k, best) & running[:, None]
        trials = np.where(act, nl, trials)
        comp = comp_all[:, :, li]
        both = comp[:, ia] & comp[:, ib]
        if not stop:
            ev = both & (und.any(1, keepdims=True) if best else und)
        elif best:
            ev = act[:, ia] & act[:, ib] & ((~act | comp).all(1) & act.any(1))[:, None]
        else:
            ev = und & both & running[:, None]
        if nl <= n_avail:
            n = cn[..., nl - 1]
            with np.errstate(all="ignore"):
                m = cs[..., nl - 1] / n
                sd = np.sqrt(np.maximum(cs2[..., nl - 1] - n * m * m, 0) / (n - 1))
                se = np.maximum(sd, design.floor) / np.sqrt(n)
            ev &= n >= design.min_seeds
            c1, c2 = t_critical(p1[li], n - 1), t_critical(p2[li], n - 1)
            lo, hi = m - c2 * se, m + c2 * se
            pm, psd, pn = np.where(ev, m, pm), np.where(ev, sd, psd), np.where(ev, n, pn)
            plo, phi = np.where(ev, lo, plo), np.where(ev, hi, phi)
            if best:
                blo, bhi, bm = _mcb_bounds(plo, phi, pm, ia, ib, k)
                new = np.where(blo > 0, 1, np.where(bhi < 0, 2, np.where(blo > -design.margin, 3, 0)))
                # an `equivalent` point stays active for the others and may sharpen to better/worse: every
                # claim is implied by the same simultaneous coverage, so a second claim costs no error
                upd = (und | ((dec == 3) & ((new == 1) | (new == 2)))) & ev.any(1, keepdims=True)
                cur = (blo, bhi, bm, blo, bhi)
            else:
                eq_lo, eq_hi = m - c1 * se, m + c1 * se
                equiv = (eq_hi < design.margin) & (eq_lo > -design.margin)
                new = np.where(lo > 0, 1, np.where(hi < 0, 2, np.where(equiv, 3, 0)))
                upd, cur = ev, (lo, hi, m, eq_lo, eq_hi)
            if describe:
                nan = np.full_like(cur[2], np.nan)
                new, cur = np.zeros_like(new), (nan, nan, cur[2], nan, nan)
            lo_u, hi_u, diff, eqlo_u, eqhi_u = (np.where(upd, x, y) for x, y in
                                                zip(cur, (lo_u, hi_u, diff, eqlo_u, eqhi_u), strict=True))
            look = np.where(upd, li, look)
            dec = np.where(upd, new, dec).astype(np.int8)
        if stop:
            act = _point_active(dec, pairs, k, best) & running[:, None]
            stuck = running & (act & ~comp).any(1)
            halted = np.where(stuck, li, halted)
            running &= ~stuck
    return Outcome(dec, look, diff, lo_u, hi_u, eqlo_u, eqhi_u, pm, psd, pn, trials, halted)


# ------------------------------------------------------------------------------------ the race on real rows
@dataclasses.dataclass
class Race:
    """race()'s answer. contrasts / secondary: one dict per contrast (for `best`, per point, b = "max(others)").
    next_seeds: seed indices (seed = base + index) each active point still needs for the look in progress
    (`look`, its seed count; None when finished)."""

    contrasts: list[dict]
    secondary: list[dict]
    active: list
    next_seeds: dict
    finished: bool
    look: int | None


def seeds_to_decide(m: float, s: float, n: int, c1: float, c2: float, margin: float, best: bool = False) -> int:
    """Paired seeds a contrast with observed mean m and (floored) sd s needs at critical values c1, c2:
    the fewer of superiority (|m| > c2 s / sqrt(n)) and equivalence (|m| + c1 s / sqrt(n) < margin; for
    `best` the one-sided m - c2 s / sqrt(n) > -margin), and at least one more than it has."""
    sup = (c2 * s / abs(m)) ** 2 if m != 0 else math.inf
    room, c = (m + margin, c2) if best else (margin - abs(m), c1)
    eq = (c * s / room) ** 2 if room > 0 else math.inf
    return max(math.ceil(min(sup, eq)), n + 1)


def _table(rows, points: list, cols: list, signs: dict, base: int, cap: int) -> tuple[np.ndarray, dict]:
    """ended[K, cap] and, per column, values[1, K, cap] (sign-corrected; a (point, seed) that ended more
    than once, a retry, counts the mean of its values), with the checks of the input."""
    missing = [c for c in ("point", "seed", *cols) if c not in rows.columns]
    if missing:
        raise ValueError(f"race: rows lack column(s) {', '.join(missing)}")
    r = rows[rows["point"].isin(points)]
    si = r["seed"].to_numpy().astype(int) - base
    if len(si) and (si.min() < 0 or si.max() >= cap):
        raise ValueError(f"race: seeds must lie in [base, base + max_seeds) = [{base}, {base + cap}), got "
                         f"{int(si.min()) + base}..{int(si.max()) + base}")
    pi = r["point"].map({p: i for i, p in enumerate(points)}).to_numpy(int)
    ended = np.zeros((len(points), cap), bool)
    ended[pi, si] = True
    out = {}
    for c in cols:
        g = r.assign(_p=pi, _s=si, _v=signs[c] * r[c].to_numpy(np.float64)).groupby(["_p", "_s"])["_v"].mean()
        out[c] = np.full((1, len(points), cap), np.nan)
        out[c][0, g.index.get_level_values(0), g.index.get_level_values(1)] = g.to_numpy()
    return ended, out


def _rows_of(o: Outcome, v, design, pairs, points, alpha_c, metric) -> list[dict]:
    """race()'s per-contrast dicts from the core's Outcome (one sim) and the values it decided on."""
    best = design.family == "best"
    c1, c2 = critical_values(design, alpha_c if alpha_c else 0.05)
    units = [(i, None) for i in range(len(points))] if best else pairs
    out = []
    for u, (a, b) in enumerate(units):
        li = int(o.look[0, u])
        if best:  # the other point the bound binds on: the highest mean difference against a
            cand = [(o.pair_mean[0, p] * (1 if x == a else -1), p, y if x == a else x)
                    for p, (x, y) in enumerate(pairs) if a in (x, y) and np.isfinite(o.pair_mean[0, p])]
            _, pidx, b = min(cand) if cand else (0, None, None)
        else:
            pidx = u
        n_look = design.looks[li] if li >= 0 else design.max_seeds
        d = (v[0, a, :n_look] - v[0, b, :n_look]) if b is not None else np.array([])
        d = d[np.isfinite(d)]
        dec = DECISIONS[o.decision[0, u]] if alpha_c else "descriptive"
        row = {"metric": metric, "a": points[a], "b": "max(others)" if best else points[b],
               "diff": float(o.diff[0, u]) if li >= 0 else (float(d.mean()) if len(d) else math.nan),
               "lo": float(o.lo[0, u]), "hi": float(o.hi[0, u]), "eq_lo": float(o.eq_lo[0, u]),
               "eq_hi": float(o.eq_hi[0, u]), "decision": dec, "margin": design.margin,
               "family": design.family, "alpha": alpha_c or 0.0, "look": design.looks[li] if li >= 0 else None,
               "n_seeds": len(d), "p_improvement": float(((d > 0) + 0.5 * (d == 0)).mean()) if len(d) else math.nan,
               "seeds_to_decide": None}
        if dec == "undecided" and pidx is not None and o.pair_n[0, pidx] >= 2:
            m = float(o.pair_mean[0, pidx]) * (1 if not best or pairs[pidx][0] == a else -1)
            s = max(float(o.pair_sd[0, pidx]), design.floor)
            row["seeds_to_decide"] = seeds_to_decide(m, s, int(o.pair_n[0, pidx]), c1[-1], c2[-1], design.margin, best)
        out.append(row)
    return out


def race(rows, design: Design, points, reference=None, metric: str = "value", *, secondary: str | None = None,
         base: int = 0, directions: dict | None = None) -> Race:
    """The sequential race on the ENDED confirmation trials `rows` (columns point, seed, the metric; NaN: the
    trial ended without a value). Seeds are base, base + 1, ...; higher is better unless directions[metric]
    is "min" (diff > 0 always means a is better). A pure function of the rows and the design: row order,
    and whether the race was interrupted between looks, change nothing.

    Looks are walked in order; at look l each undecided contrast whose points have all seeds < n_l ended is
    evaluated; if an active point has not finished look l, the race waits there (`next_seeds`). The
    secondary metric is decided at the looks its data reached, with its own alpha, and never moves a point.
    """
    points = list(dict.fromkeys(points))
    if len(points) < 2:
        raise ValueError("race: at least two points are needed")
    pos = {p: i for i, p in enumerate(points)}
    pairs = [(pos[a], pos[b]) for a, b in contrasts(points, design.family, reference)]
    k, cap, looks = len(points), design.max_seeds, design.looks
    cols = [metric] + ([secondary] if secondary else [])
    signs = {c: -1.0 if (directions or {}).get(c, "max") == "min" else 1.0 for c in cols}
    ended, values = _table(rows, points, cols, signs, base, cap)
    complete = np.stack([ended[:, :n].all(1) for n in looks], 1)
    v = values[metric]
    alpha_c = design.metric_alpha() / len(pairs)
    o = decide_looks(v, design, pairs, alpha_c, complete, stop=True)
    out = _rows_of(o, v, design, pairs, points, alpha_c, metric)
    sec = []
    if secondary:
        a2 = design.metric_alpha(secondary=True) / len(pairs) or None
        o2 = decide_looks(values[secondary], design, pairs, a2, complete, stop=False)
        sec = _rows_of(o2, values[secondary], design, pairs, points, a2, secondary)
    h = int(o.halted[0])
    act = _point_active(o.decision, pairs, k, design.family == "best")[0]
    if h >= len(looks):
        return Race(out, sec, [], {}, True, None)
    active = [points[i] for i in range(k) if act[i]]
    nxt = {points[i]: [s for s in range(looks[h]) if not ended[i, s]] for i in range(k) if act[i]}
    return Race(out, sec, active, nxt, False, looks[h])
