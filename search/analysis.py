"""What a sweep's rows say, compared at equal fidelity and with intervals: pure functions of the Parquet
frame (and pbn.stats), shared by the driver (which configurations to confirm) and the report.

- A *point* is a configuration: the values the study searched (the `point` column, JSON). Seeds and
  stages are replicates of points.
- Search trials are ranked the way ASHA judged them: by the rung a trial earned (the epoch at which ASHA
  stopped it, or would have stopped an audited trial, else its last epoch), then by the metric at that
  epoch, so trials are only ever compared at the same epoch.
- Verdicts come from the confirmation race (search/verdict.py): every raced point trained to MAX_EPOCHS with
  the same seeds; `race_state` is where the driver and the report get its decisions from the rows.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd

from pbn import stats
from pbn.metrics import OBJECTIVES
from search import asha
from search.results import CONFIRM, SEARCH


def point_label(point: str | dict) -> str:
    """'mi k=5 W=64 D=1' for a point; other searched names as key=value."""
    p = json.loads(point) if isinstance(point, str) else dict(point)
    parts = []
    if "grouping" in p:
        parts.append(str(p.pop("grouping")))
    if p.get("clusters") is not None:
        parts.append(f"k={p.pop('clusters')}")
    p.pop("clusters", None)
    for key, short in (("width", "W"), ("depth", "D")):
        if key in p:
            parts.append(f"{short}={p.pop(key)}")
    parts += [f"{k}={v}" for k, v in sorted(p.items())]
    return " ".join(parts) or "(fixed)"


def search_ranking(df: pd.DataFrame, metric: str, mode: str, grace: int | None, rf: int | None,
                   max_t: int) -> pd.DataFrame:
    """One row per search trial that reported and did not fail (a trial that ended in ERROR was judged at no
    rung and is no candidate): trial_id, point, grouping, earned_epoch, value (the
    metric at earned_epoch), reached (last epoch), final (the metric there), would_stop (for an audited
    trial, the epoch at which ASHA would have stopped it; NaN if never), audited; best first."""
    s = df[(df["stage"] == SEARCH) & (df["epoch"] > 0) & (df["status"] != "ERROR")]
    if s.empty:
        return pd.DataFrame(columns=["trial_id", "point", "grouping", "earned_epoch", "value", "reached", "final",
                                     "would_stop", "audited"])
    stops = asha.replay_frame(asha.Rungs(grace, rf, max_t), s, metric, mode) if grace else {}
    by_trial = s.sort_values("epoch").groupby("trial_id")
    last = by_trial.tail(1).set_index("trial_id")
    rows = []
    for tid, g in by_trial:
        reached = int(g["epoch"].max())
        earned = min(reached, stops.get(tid, reached))  # where ASHA stopped (or would have, if audited) it
        value = g.loc[g["epoch"] == earned, metric]
        rows.append({"trial_id": tid, "point": last.at[tid, "point"], "grouping": last.at[tid, "grouping"],
                     "earned_epoch": earned, "value": float(value.iloc[0]) if len(value) else math.nan,
                     "reached": reached, "final": float(last.at[tid, metric]),
                     "would_stop": stops.get(tid, math.nan) if last.at[tid, "audited"] else math.nan,
                     "audited": bool(last.at[tid, "audited"])})
    r = pd.DataFrame(rows)
    sign = -1.0 if mode == "max" else 1.0
    r["_key"] = sign * r["value"].fillna(-np.inf if mode == "max" else np.inf)
    return r.sort_values(["earned_epoch", "_key"], ascending=[False, True]).drop(columns="_key").reset_index(drop=True)


def representatives(ranking: pd.DataFrame, df: pd.DataFrame, metric: str, mode: str) -> dict[str, str]:
    """grouping -> its representative point: the best of the grouping's search trials at the highest epoch ALL of
    them reached. Every candidate is judged at one epoch, so none wins for the epochs ASHA let it train, nor
    for having reached a rung first (ASHA always promotes the first arrival at a rung)."""
    s = df[(df["stage"] == SEARCH) & (df["epoch"] > 0)]
    out = {}
    for grouping, g in ranking.groupby("grouping", sort=False):
        epoch = int(g["reached"].min())
        at = s[s["trial_id"].isin(g["trial_id"]) & (s["epoch"] == epoch)].set_index("trial_id")[metric].dropna()
        if len(at):
            best = at.idxmax() if mode == "max" else at.idxmin()
            out[grouping] = g.set_index("trial_id").at[best, "point"]
    return out


def confirm_points(ranking: pd.DataFrame, df: pd.DataFrame, metric: str, mode: str, top: int) -> list[str]:
    """The points to retrain with paired seeds: each grouping's representative, then the overall top-`top` of
    the ASHA ranking, each once, in rank order."""
    ranked = ranking.dropna(subset=["value"])
    chosen = [*representatives(ranked, df, metric, mode).values(), *ranked["point"].drop_duplicates().iloc[:top]]
    order = {p: i for i, p in enumerate(ranked["point"].drop_duplicates())}
    return sorted(dict.fromkeys(chosen), key=order.get)


def reference_point(points: list[str], reference: dict | None) -> str | None:
    """The first of `points` whose values match the declared reference filter (e.g. {"grouping": "shared"})."""
    if reference is None:
        return None
    return next((p for p in points if all(json.loads(p).get(k) == v for k, v in reference.items())), None)


def race_rows(df: pd.DataFrame, metrics: list[str], epoch: int) -> pd.DataFrame:
    """One row per ended confirmation trial (point, seed, the metrics at `epoch`; NaN where it never got
    there, e.g. it failed): what the race decides on."""
    c = df[(df["stage"] == CONFIRM) & df["status"].isin(("TERMINATED", "ERROR"))]
    ended = c.groupby("trial_id").agg(point=("point", "first"), seed=("seed", "first"))
    at = c[c["epoch"] == epoch].drop_duplicates("trial_id").set_index("trial_id")[metrics]
    return ended.join(at).reset_index(drop=True)


def confirmed(df: pd.DataFrame, metric: str, epoch: int) -> pd.DataFrame:
    """Confirmation-stage values at `epoch`: index = point, columns = seeds (NaN: that seed has not
    reached the epoch)."""
    c = df[(df["stage"] == CONFIRM) & (df["epoch"] == epoch)]
    return c.pivot_table(index="point", columns="seed", values=metric, aggfunc="first")


def point_intervals(df: pd.DataFrame, metric: str, epoch: int) -> pd.DataFrame:
    """Per confirmed point: n seeds, mean and its t interval over seeds, sd; best first."""
    table = confirmed(df, metric, epoch)
    rows = []
    for point, values in table.iterrows():
        v = values.dropna().to_numpy()
        m, lo, hi = stats.mean_interval(v)
        rows.append({"point": point, "label": point_label(point), "n": len(v), "mean": m, "lo": lo, "hi": hi,
                     "sd": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan})
    out = pd.DataFrame(rows, columns=["point", "label", "n", "mean", "lo", "hi", "sd"])
    return out.sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)


MIN_RHO_TRIALS = 4  # Fisher's z needs n > 3


def spearman_interval(x, y, level: float = 0.95) -> dict:
    """Spearman's rho with a Fisher z interval and the Bonett-Wright variance (1 + r^2/2) / (n - 3), which covers
    far better than a percentile bootstrap at n <= 8 (docs/statistics.md). At |r| = 1, which a handful of
    concordant trials reach easily, r is moved halfway to the nearest value Spearman's rho can take below it
    (1 - 6/(n(n^2 - 1))), so the interval stays finite and honest instead of collapsing to [1, 1]."""
    from scipy.stats import norm

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    rho = stats.spearman(x[ok], y[ok])
    if n < MIN_RHO_TRIALS or not np.isfinite(rho):
        return {"rho": rho, "lo": math.nan, "hi": math.nan, "n": n}
    r = rho if abs(rho) < 1 - 1e-9 else np.sign(rho) * (1 - 3 / (n * (n * n - 1)))
    half = norm.ppf(0.5 + level / 2) * math.sqrt((1 + r * r / 2) / (n - 3))
    z = math.atanh(r)
    return {"rho": rho, "lo": math.tanh(z - half), "hi": math.tanh(z + half), "n": n}


def rung_correlations(ranking: pd.DataFrame, df: pd.DataFrame, metric: str, rungs: list[int],
                      max_t: int) -> pd.DataFrame:
    """Spearman's rho (spearman_interval) between the metric at each rung epoch and at max_t, over the search
    trials that reached max_t (audited ones and those ASHA promoted)."""
    full = ranking.loc[ranking["reached"] >= max_t, "trial_id"]
    s = df[(df["stage"] == SEARCH) & df["trial_id"].isin(full)]
    wide = s.pivot_table(index="trial_id", columns="epoch", values=metric, aggfunc="first")
    rows = []
    for e in rungs:
        if e >= max_t:
            continue
        if e not in wide or max_t not in wide:
            rows.append({"epoch": e, "rho": math.nan, "lo": math.nan, "hi": math.nan, "n": 0})
            continue
        rows.append({"epoch": e, **spearman_interval(wide[e].to_numpy(), wide[max_t].to_numpy())})
    return pd.DataFrame(rows, columns=["epoch", "rho", "lo", "hi", "n"])


def audit_misses(ranking: pd.DataFrame, max_t: int, mode: str = "max") -> dict:
    """Audited trials (exempt from early stopping) that ASHA would have stopped, and how many of those
    finished in the top half of all trials that reached max_t."""
    full = ranking[ranking["reached"] >= max_t]
    audited = full[full["audited"].astype(bool)]
    would = audited[audited["would_stop"].notna()]
    if full.empty:
        return {"audited": 0, "would_stop": 0, "would_stop_top_half": 0, "finished": 0}
    order = full["final"].rank(ascending=(mode != "max"), method="min")
    top_half = set(full.loc[order <= len(full) / 2, "trial_id"])
    return {"audited": len(audited), "would_stop": len(would), "finished": len(full),
            "would_stop_top_half": int(would["trial_id"].isin(top_half).sum())}


def race_state(df: pd.DataFrame, plan):
    """(the confirmation race as the Parquet rows leave it, its points, its reference): the one place the
    driver and the report turn a sweep's rows and plan into search.verdict.race's answer. None for the race
    where the sweep has no confirmation stage or fewer than two points to race."""
    from search.verdict import race

    if not plan.confirm_max_seeds:
        return None, [], None
    primary, secondary = plan.verdict["primary"], plan.verdict["secondary"]
    ranking = search_ranking(df, plan.metric, plan.mode, plan.grace_period, plan.reduction_factor, plan.max_epochs)
    points = confirm_points(ranking, df, primary, OBJECTIVES[primary], plan.confirm_top)
    reference = reference_point(points, plan.verdict["reference"])
    design = plan.design()
    if len(points) < 2 or (design.family == "vs-reference" and reference is None):
        return None, points, reference
    metrics = [m for m in (primary, secondary) if m]
    state = race(race_rows(df, metrics, plan.max_epochs), design, points, reference, metric=primary,
                 secondary=secondary, base=plan.confirm_seed_base, directions={m: OBJECTIVES[m] for m in metrics})
    return state, points, reference


def expected_epochs(plan, points: int) -> dict:
    """Epochs a sweep will train, before it runs: the search stage under ASHA (every trial to the first rung, a
    1/rf share of them on to each next rung and to MAX_EPOCHS, audited trials to the end), and the race's least
    (every contrast decided at the first look) and most (the cap) for `points` raced points."""
    e, n = plan.max_epochs, plan.num_samples
    search = float(n * e)
    if plan.grace_period:
        bounds = [*asha.rung_epochs(plan.grace_period, plan.reduction_factor, e), e]
        per, share = float(bounds[0]), 1.0
        for lo, hi in itertools.pairwise(bounds):
            share /= plan.reduction_factor
            per += share * (hi - lo)
        search = n * (plan.audit_fraction * e + (1 - plan.audit_fraction) * per)
    design = plan.design() if plan.confirm_max_seeds else None
    low = high = 0
    if design is not None and points >= 2:
        low, high = points * design.looks[0] * e, points * design.max_seeds * e
    return {"search": search, "race_min": low, "race_max": high}
