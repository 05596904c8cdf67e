"""What a sweep's rows say, compared at equal fidelity and with intervals: pure functions of the Parquet
frame (and pbn.stats), shared by the driver (which configurations to confirm) and the report.

- A *point* is a configuration: the values the study searched (the `point` column, JSON). Seeds and
  stages are replicates of points.
- Search trials are ranked the way ASHA judged them: by the rung a trial earned (the epoch at which ASHA
  stopped it, or would have stopped an audited trial, else its last epoch), then by the metric at that
  epoch, so trials are only ever compared at the same epoch.
- Verdicts come from the confirmation stage: every confirmed point trained to MAX_EPOCHS with the same
  seeds, compared by paired differences with t intervals.
"""

from __future__ import annotations

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


def confirm_points(ranking: pd.DataFrame, top: int) -> list[str]:
    """The points to retrain with seeds: the best point of each grouping strategy, then the overall
    top-`top`, each once, in rank order."""
    chosen: list[str] = []
    ranked = ranking.dropna(subset=["value"])
    for _, g in ranked.groupby("grouping", sort=False):
        chosen.append(g["point"].iloc[0])
    chosen += list(ranked["point"].drop_duplicates().iloc[:top])
    order = {p: i for i, p in enumerate(ranked["point"].drop_duplicates())}
    return sorted(dict.fromkeys(chosen), key=order.get)


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


def verdicts(df: pd.DataFrame, metrics: tuple[str, ...], epoch: int) -> list[dict]:
    """For each metric: every confirmed point against the best one (by mean over seeds, in the metric's own
    direction), the paired difference best - other (sign-corrected so a positive diff favours the best) over
    the seeds both reached `epoch` with, its 95% t interval, and whether that interval excludes 0."""
    out = []
    for metric in metrics:
        table = confirmed(df, metric, epoch)
        if table.empty or table.notna().sum().sum() == 0:
            continue
        sign = 1.0 if OBJECTIVES.get(metric, "max") == "max" else -1.0
        means = sign * table.mean(axis=1, skipna=True)
        best = means.idxmax()
        for point in means.sort_values(ascending=False).index:
            if point == best:
                continue
            d = stats.paired_difference(sign * table.loc[best].to_numpy(), sign * table.loc[point].to_numpy())
            out.append({"a": point_label(best), "b": point_label(point), "metric": metric, "epoch": int(epoch),
                        "diff": d["diff"], "lo": d["lo"], "hi": d["hi"], "resolved": d["resolved"],
                        "n_seeds": d["n"]})
    return out


def rung_correlations(ranking: pd.DataFrame, df: pd.DataFrame, metric: str, rungs: list[int],
                      max_t: int) -> pd.DataFrame:
    """Spearman's rho (bootstrap CI over trials) between the metric at each rung epoch and at max_t, over
    the search trials that reached max_t (audited ones and those ASHA promoted)."""
    full = ranking.loc[ranking["reached"] >= max_t, "trial_id"]
    s = df[(df["stage"] == SEARCH) & df["trial_id"].isin(full)]
    wide = s.pivot_table(index="trial_id", columns="epoch", values=metric, aggfunc="first")
    rows = []
    for e in rungs:
        if e >= max_t or e not in wide or max_t not in wide:
            continue
        r = stats.bootstrap_spearman(wide[e].to_numpy(), wide[max_t].to_numpy())
        rows.append({"epoch": e, **r})
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
