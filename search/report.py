"""The verdict of one or more sweeps, with intervals, at equal epochs:
`python -m search.report results/<name>.parquet [more.parquet ...] [--out DIR]`.

Writes summary.md (opening with `## Verdict`), verdict.json and figures into results/<name>/ (or --out):
learning_curves.png, pckh_vs_width_depth.png, visible_vs_occluded.png, pareto.png, cost_curve.png,
importance.png. Nothing here averages or ranks trials of different epochs: search trials are compared
at the rung each one earned, confirmed configurations over paired seeds at MAX_EPOCHS.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pbn.atomic import atomic_write_text
from pbn.stats import mean_interval
from search import analysis, asha
from search.console import value_text
from search.results import read_results
from search.sweep import Plan

COLORS = {"shared": "tab:gray", "per-part": "tab:orange", "human": "tab:blue", "mi": "tab:green"}
WEAK_RHO = 0.5  # a first rung whose rank correlation with the last epoch may be below this judges poorly
MIN_AUDIT_TRIALS = 8  # below this many trials the rank correlation's bootstrap interval spans nearly [-1, 1]


def sweep_plan(parquet: Path, df: pd.DataFrame) -> Plan:
    """The sweep's plan from results/<name>.sweep.json beside the Parquet path (else what the rows imply)."""
    path = parquet.with_name(parquet.name.replace(".parquet", ".sweep.json"))
    if path.is_file():
        return Plan.from_json(path.read_text(), str(path))
    name = str(df["sweep"].iloc[0]) if len(df) else parquet.stem
    return Plan(name=name, space="", space_digest="", metric="pckh", mode="max", num_samples=0,
                max_epochs=int(df["epoch"].max()) if len(df) else 0, grace_period=None, reduction_factor=None,
                fixed={}, seed=0, audit_fraction=0.0, confirm_top=0, confirm_max_seeds=0, verdict={}, storage="",
                optuna_storage="",
                created=0.0)


def rung_epochs(plan: Plan) -> list[int]:
    return asha.rung_epochs(plan.grace_period, plan.reduction_factor, plan.max_epochs)


def _fmt(v: float, signed: bool = False) -> str:
    return "n/a" if v is None or not np.isfinite(v) else (f"{v:+.1f}" if signed else f"{v:.1f}")


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    return f"[{_fmt(lo, signed)}, {_fmt(hi, signed)}]"


# ------------------------------------------------------------------------------------------ text
def _metric_name(metric: str) -> str:
    return {"pckh": "PCKh", "pckh_occluded": "occluded PCKh", "pckh_visible": "visible PCKh"}.get(metric, metric)


def _decision_line(c: dict, metric: str) -> str:
    a = analysis.point_label(c["a"])
    b = "the best of the others" if c["b"] == "max(others)" else analysis.point_label(c["b"])
    name = _metric_name(metric)
    if c["decision"] == "equivalent" and np.isfinite(c.get("eq_lo", np.nan)):  # the interval the decision used
        diff = (f"{value_text(c['diff'], c['eq_lo'], c['eq_hi'], signed=True)} {name} (the equivalence test's "
                "interval)")
    else:
        diff = f"{value_text(c['diff'], c['lo'], c['hi'], signed=True)} {name}"
    wins = (f"; {a} ahead at {c['p_improvement']:.0%} of the paired seeds"
            if c["n_seeds"] and np.isfinite(c["p_improvement"]) else "")
    said = {"better": f"**better** than {b}", "worse": f"**worse** than {b}",
            "equivalent": f"**equivalent** to {b} (within +-{c['margin']:g} {name})",
            "undecided": f"**undecided** against {b}", "descriptive": f"compared with {b} (descriptive)"}
    text = f"- {a} is {said[c['decision']]}: {diff} over {c['n_seeds']} paired seeds{wins}"
    if (c["decision"] == "better" and c["hi"] < c["margin"]) or (c["decision"] == "worse" and c["lo"] > -c["margin"]):
        text += f"; smaller than the margin of {c['margin']:g}"
    if c["decision"] == "undecided" and c.get("seeds_to_decide"):
        text += f"; about {c['seeds_to_decide']} paired seeds would decide it (`--confirm-max-seeds`)"
    return text + "."


def verdict_section(df: pd.DataFrame, info: Plan) -> tuple[list[str], list[dict]]:
    """Plain-words decisions and the verdict.json objects of one sweep (search/verdict.py decides; this only
    says it)."""
    state, points, reference = analysis.race_state(df, info)
    if state is None or not any(c["n_seeds"] for c in state.contrasts):
        why = ("the sweep has no confirmation stage (--confirm-max-seeds 0)" if not info.confirm_max_seeds else
               "the confirmation race has not finished a look yet" if state is not None else
               f"fewer than two points to race ({len(points)})" if len(points) < 2 else
               f"no confirmed point matches the reference {info.verdict.get('reference')}")
        return [f"Nothing is decided: {why}. The search stage below ranks single-seed trials with validation-set "
                "intervals only, and a ranking inside seed noise is no answer."], []
    v, design = info.verdict, info.design()
    fam = {"vs-reference": f"each point against {analysis.point_label(reference)}" if reference else "",
           "all-pairs": "every pair of points", "best": "each point against the best of the others (Hsu's MCB)"}
    lines = [f"Confirmation race at epoch {info.max_epochs}: {fam[design.family]}; paired seeds in looks of "
             f"{', '.join(map(str, design.looks))}; margin +-{design.margin:g} {_metric_name(v['primary'])}. At most "
             f"{design.alpha:.0%} chance of any wrong decision over all contrasts, metrics and looks "
             f"({_metric_name(v['primary'])} at {design.metric_alpha():g}"
             + (f", {_metric_name(v['secondary'])} at {design.metric_alpha(True):g})." if v["secondary"] and
                design.secondary_alpha else ").")
             + ("" if state.finished else f" The race is not over: next look at {state.look} seeds."), ""]
    lines += [_decision_line(c, v["primary"]) for c in state.contrasts]
    if state.secondary:
        how = "decided at the same looks, never stopping a point" if design.secondary_alpha else "descriptive only"
        lines += ["", f"{_metric_name(v['secondary'])} ({how}):"]
        lines += [_decision_line(c, v["secondary"]) for c in state.secondary]
    found = []
    for c in [*state.contrasts, *state.secondary]:
        found.append({**c, "a": analysis.point_label(c["a"]), "b": c["b"] if c["b"] == "max(others)" else
                      analysis.point_label(c["b"]), "a_point": c["a"], "b_point": c["b"], "epoch": info.max_epochs})
    lines += ["", f"{info.max_epochs}-epoch {_metric_name(v['primary'])} per paired seed (figure: per_seed.png):", "",
              *per_seed_table(df, points, v["primary"], info.max_epochs, info.confirm_seed_base)]
    return lines, found


def per_seed_table(df: pd.DataFrame, points: list[str], metric: str, epoch: int, base: int) -> list[str]:
    table = analysis.confirmed(df, metric, epoch).reindex(points)
    seeds = [int(s) for s in table.columns]
    lines = ["| configuration | " + " | ".join(f"seed {s - base}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for point, row in table.iterrows():
        vals = [f"{x:.1f}" if np.isfinite(x) else "-" for x in row.to_numpy(float)]
        lines.append(f"| {analysis.point_label(point)} | " + " | ".join(vals) + f" | {_fmt(np.nanmean(row))} |")
    return lines


def search_section(df: pd.DataFrame, info: Plan, ranking: pd.DataFrame) -> list[str]:
    """The search stage in ASHA's order: each trial ONE seed, at the epoch it earned (a rung or its last)."""
    m = info.metric
    shown = [m] + [x for x in ("pckh", "pckh_occluded") if x != m]
    head = " | ".join(f"{_metric_name(x)} [val 95% CI]" if f"{x}_lo" in df else _metric_name(x) for x in shown)
    lines = [f"| rank | configuration | seed | compared at epoch | {head} | reached | early stop |",
             "|---|---|---|---|" + "---|" * len(shown) + "---|---|"]
    rows = df[df["stage"] == analysis.SEARCH].set_index(["trial_id", "epoch"])
    for i, r in ranking.iterrows():
        at = rows.loc[(r["trial_id"], r["earned_epoch"])]
        stop = ("audited (ASHA: epoch " + str(int(r["would_stop"])) + ")" if r["audited"] and np.isfinite(
            r["would_stop"]) else "audited" if r["audited"] else
            f"stopped at {r['reached']}" if r["reached"] < info.max_epochs else "")
        cells = " | ".join(value_text(at[x], at.get(f"{x}_lo", math.nan), at.get(f"{x}_hi", math.nan)) for x in shown)
        lines.append(f"| {i + 1} | {analysis.point_label(r['point'])} | {int(at['seed'])} | {r['earned_epoch']} | "
                     f"{cells} | {r['reached']} | {stop} |")
    return lines


def audit_section(df: pd.DataFrame, info: Plan, ranking: pd.DataFrame) -> list[str]:
    rungs = rung_epochs(info)
    if not rungs:
        return [f"No early-stopping rung below epoch {info.max_epochs} in this sweep."]
    corr = analysis.rung_correlations(ranking, df, info.metric, rungs, info.max_epochs)
    miss = analysis.audit_misses(ranking, info.max_epochs, info.mode)
    lines = [f"Rank correlation (Spearman) between {info.metric} at each rung epoch and at epoch "
             f"{info.max_epochs}, over the {miss['finished']} search trials that reached it (audited and promoted):",
             "", "| rung epoch | rho [95% CI, Fisher z] | trials |", "|---|---|---|"]
    lines += [f"| {int(r.epoch)} | " + (f"{r.rho:.2f} [{r.lo:.2f}, {r.hi:.2f}]" if np.isfinite(r.lo) else
              f"too few trials for an interval (needs {analysis.MIN_RHO_TRIALS})") + f" | {int(r.n)} |"
              for r in corr.itertuples()]
    lines.append(f"\nAudited trials (exempt from early stopping): {miss['audited']}; ASHA would have stopped "
                 f"{miss['would_stop']} of them, {miss['would_stop_top_half']} of which finished in the top half.")
    first = corr[corr["epoch"] == rungs[0]]
    if first.empty or not np.isfinite(first["rho"].iloc[0]) or first["n"].iloc[0] < MIN_AUDIT_TRIALS:
        n = 0 if first.empty else int(first["n"].iloc[0])
        lines.append(f"\nToo few trials reached epoch {info.max_epochs} ({n}; at least {MIN_AUDIT_TRIALS} are "
                     f"needed before the interval excludes much) to tell how well the first rung (epoch {rungs[0]}) "
                     "judges: raise AUDIT_FRACTION or NUM_SAMPLES for this check.")
    elif first["lo"].iloc[0] < WEAK_RHO:
        lines.append(f"\n**The first rung judges weakly**: at epoch {rungs[0]} the ranking may correlate with the "
                     f"final one by as little as rho = {first['lo'].iloc[0]:.2f}. Trials it stops could finish well: "
                     "raise GRACE_PERIOD (or train more images per epoch) so the first judgement comes later.")
    else:
        lines.append(f"\nThe first rung (epoch {rungs[0]}) ranks trials much as epoch {info.max_epochs} does "
                     f"(rho >= {first['lo'].iloc[0]:.2f} at 95%).")
    return lines


def summary_lines(df: pd.DataFrame, info: Plan) -> list[str]:
    """The driver's closing summary: the verdict, then the search stage at equal epochs."""
    verdict, _ = verdict_section(df, info)
    ranking = analysis.search_ranking(df, info.metric, info.mode, info.grace_period,
                                      info.reduction_factor, info.max_epochs)
    return ["", "Verdict:", *verdict, "", "Search stage (single seeds, each at the epoch ASHA judged it; no "
            "ranking here is a finding):", *search_section(df, info, ranking.head(20))]


# ------------------------------------------------------------------------------------------ figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def equal_fidelity_points(df: pd.DataFrame, info: Plan) -> pd.DataFrame:
    """One row per configuration, all at MAX_EPOCHS: the confirmation stage's runs if it has any, else the
    search trials that got there. A point with several runs: the mean and its t interval over them; with
    one: that run's values and its validation-set interval, every metric from that same run."""
    e = info.max_epochs
    at = df[df["epoch"] == e]
    conf = at[at["stage"] == analysis.CONFIRM]
    src = conf if len(conf) else at[at["stage"] == analysis.SEARCH]
    out = []
    for point, g in src.groupby("point"):
        row = {"point": point, "label": analysis.point_label(point), "grouping": g["grouping"].iloc[0],
               "width": g["width"].iloc[0], "depth": g["depth"].iloc[0], "params": g["params"].iloc[0],
               "gflops": g["gflops"].iloc[0], "n": len(g),
               "interval_over": "seeds" if len(g) > 1 else "validation images"}
        for m in ("pckh", "pckh_visible", "pckh_occluded"):
            if len(g) > 1:
                row[m], row[m + "_lo"], row[m + "_hi"] = mean_interval(g[m])
            else:
                r = g.iloc[0]
                row[m], row[m + "_lo"], row[m + "_hi"] = r[m], r.get(m + "_lo", math.nan), r.get(m + "_hi", math.nan)
        out.append(row)
    return pd.DataFrame(out)


def _errorbar(ax, x, pts, m, **kw):
    y = pts[m].to_numpy(float)
    lo, hi = pts[m + "_lo"].to_numpy(float), pts[m + "_hi"].to_numpy(float)
    err = np.vstack([np.where(np.isfinite(lo), y - lo, 0), np.where(np.isfinite(hi), hi - y, 0)])
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, **kw)


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats on both lower cost and higher value."""
    keep = np.ones(len(cost), bool)
    for i in range(len(cost)):
        keep[i] = not np.any((cost <= cost[i]) & (value >= value[i]) & ((cost < cost[i]) | (value > value[i])))
    return keep


def fig_learning_curves(plt, df, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, g in df[df["stage"] == analysis.SEARCH].sort_values("epoch").groupby("trial_id"):
        ax.plot(g["epoch"], g["pckh"], color=COLORS.get(g["grouping"].iloc[0], "k"), alpha=0.35, lw=0.8)
    conf = df[(df["stage"] == analysis.CONFIRM) & (df["epoch"] > 0)]
    for point, g in conf.groupby("point"):
        per_epoch = g.groupby("epoch")["pckh"].apply(lambda v: pd.Series(mean_interval(v), ["m", "lo", "hi"]))
        per_epoch = per_epoch.unstack()
        color = COLORS.get(g["grouping"].iloc[0], "k")
        ax.plot(per_epoch.index, per_epoch["m"], color=color, lw=2, label=analysis.point_label(point))
        ax.fill_between(per_epoch.index, per_epoch["lo"], per_epoch["hi"], color=color, alpha=0.2)
    ax.set(xlabel="epoch", ylabel="val PCKh@0.5", title="search trials (thin) and confirmed configurations "
           "(mean, 95% CI over seeds)")
    if len(conf):
        ax.legend(fontsize=7)
    fig.savefig(out / "learning_curves.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def fig_width_depth(plt, pts: pd.DataFrame, epoch: int, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, col in zip(axes, ("width", "depth")):
        for name, g in pts.groupby("grouping"):
            _errorbar(ax, g[col].to_numpy(float), g, "pckh", color=COLORS.get(name, "k"), label=name)
        ax.set(xlabel=col, title=f"PCKh at epoch {epoch} vs {col}")
    axes[0].set_ylabel(f"val PCKh@0.5 (95% CI over {pts['interval_over'].iloc[0] if len(pts) else '-'})")
    axes[1].legend(fontsize=7)
    fig.savefig(out / "pckh_vs_width_depth.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def fig_visible_occluded(plt, pts: pd.DataFrame, epoch: int, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(pts)), 4))
    x = np.arange(len(pts))
    _errorbar(ax, x - 0.1, pts, "pckh_visible", color="tab:cyan", label="visible")
    _errorbar(ax, x + 0.1, pts, "pckh_occluded", color="tab:red", label="occluded")
    ax.set_xticks(x, pts["label"], rotation=30, ha="right", fontsize=7)
    ax.set(ylabel=f"PCKh@0.5 at epoch {epoch} (95% CI)", title="visible vs occluded joints, equal epoch")
    ax.legend()
    fig.savefig(out / "visible_vs_occluded.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def fig_pareto(plt, pts_by_sweep: dict[str, pd.DataFrame], epoch_by_sweep: dict, out: Path) -> list[str]:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    lines = []
    for sweep, pts in pts_by_sweep.items():
        if pts.empty:
            continue
        for ax, col, unit in zip(axes, ("gflops", "params"), ("GFLOPs per image", "parameters")):
            front = pareto_front(pts[col].to_numpy(float), pts["pckh"].to_numpy(float))
            for name, g in pts.groupby("grouping"):
                _errorbar(ax, g[col].to_numpy(float), g, "pckh", color=COLORS.get(name, "k"),
                          label=name if col == "gflops" else None)
            f = pts[front].sort_values(col)
            ax.plot(f[col], f["pckh"], "k--", lw=1, label=f"Pareto front ({sweep})" if col == "gflops" else None)
            ax.set(xlabel=unit, xscale="log")
        lines += [f"- {sweep}: {r.label}: {r.gflops:.3f} GFLOPs, {int(r.params):,} parameters, PCKh {r.pckh:.1f} "
                  f"{_ci(r.pckh_lo, r.pckh_hi)} (epoch {epoch_by_sweep[sweep]})"
                  for r in pts[pareto_front(pts["gflops"].to_numpy(float), pts["pckh"].to_numpy(float))]
                  .sort_values("gflops").itertuples()]
    axes[0].set_ylabel("val PCKh@0.5 (95% CI)")
    axes[0].legend(fontsize=7)
    fig.suptitle("accuracy vs cost at equal epoch")
    fig.savefig(out / "pareto.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return lines


def fig_cost_curve(plt, df: pd.DataFrame, infos: dict, out: Path) -> None:
    """Best PCKh so far among full-fidelity (MAX_EPOCHS) results against cumulative device-hours, with that
    best run's validation-set interval as a band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for sweep, g in df.groupby("sweep"):
        e = infos[sweep].max_epochs
        g = g[g["epoch"] > 0].sort_values("reported_at")
        hours = (g["device_seconds"].fillna(0).cumsum() / 3600).to_numpy()
        full, value = (g["epoch"] == e).to_numpy(), g["pckh"].to_numpy(float)
        best, idx = -1, np.empty(len(g), int)  # the row of the best full-fidelity result so far
        for i in range(len(g)):
            if full[i] and np.isfinite(value[i]) and (best < 0 or value[i] > value[best]):
                best = i
            idx[i] = best
        picked = {c: np.where(idx >= 0, g[c].to_numpy(float)[np.maximum(idx, 0)], np.nan)
                  for c in ("pckh", "pckh_lo", "pckh_hi")}
        line = ax.step(hours, picked["pckh"], where="post", label=f"{sweep} (epoch {e} results, val 95% CI)")
        ax.fill_between(hours, picked["pckh_lo"], picked["pckh_hi"], step="post", alpha=0.2,
                        color=line[0].get_color())
    ax.set(xlabel="cumulative device-hours (GPUs, or CPUs on CPU trials, x wall time)",
           ylabel="best val PCKh@0.5 so far", title="what the sweep bought")
    ax.legend(fontsize=7)
    fig.savefig(out / "cost_curve.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


MIN_IMPORTANCE_TRIALS = 12  # below this, PED-ANOVA's shares swing with a single trial (bootstrap: spans ~0-1)
IMPORTANCE_RESAMPLES = 100


def importance(df: pd.DataFrame, info: Plan) -> dict:
    """PED-ANOVA importance of each searched name over the search trials at one epoch (the highest rung that at
    least half of them, and >= 4, reached: equal fidelity), with a 90% bootstrap interval over trials. Withheld
    (`importance` empty) below MIN_IMPORTANCE_TRIALS trials: a share from six trials reads as an answer to the
    study's own question and is none. Returns {"importance": {name: (share, lo, hi)}, "epoch", "trials"}."""
    s = df[(df["stage"] == analysis.SEARCH) & (df["epoch"] > 0)]
    reached = s.groupby("trial_id")["epoch"].max()
    epochs = sorted({*rung_epochs(info), info.max_epochs}, reverse=True)
    epoch = next((e for e in epochs if (reached >= e).sum() >= max(4, len(reached) / 2)), None)
    at = s[s["epoch"] == epoch].drop_duplicates("trial_id") if epoch else s.iloc[:0]
    at = at[np.isfinite(at[info.metric].to_numpy(float))]
    out = {"importance": {}, "epoch": epoch or 0, "trials": len(at)}
    if len(at) < MIN_IMPORTANCE_TRIALS:
        return out
    points, values = [json.loads(p) for p in at["point"]], at[info.metric].to_numpy(float)
    full = _ped_anova(points, values, info.mode)
    rng = np.random.default_rng(0)
    draws = {k: [] for k in full}
    for _ in range(IMPORTANCE_RESAMPLES):
        idx = rng.integers(0, len(points), len(points))
        got = _ped_anova([points[i] for i in idx], values[idx], info.mode)
        for k in draws:
            draws[k].append(got.get(k, 0.0))
    out["importance"] = {k: (v, *np.quantile(draws[k], [0.05, 0.95])) for k, v in full.items()}
    return out


def _ped_anova(points: list[dict], values: np.ndarray, mode: str) -> dict[str, float]:
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    seen: dict[str, set] = {}
    for p in points:
        for k, v in p.items():
            seen.setdefault(k, set()).add(v)
    dists = {k: CategoricalDistribution(sorted(v, key=str)) for k, v in seen.items()}
    for p, value in zip(points, values):
        study.add_trial(optuna.trial.create_trial(params=p, distributions={k: dists[k] for k in p}, value=float(value)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns about regimes of < 2 trials
        try:
            return dict(optuna.importance.get_param_importances(study))
        except (RuntimeError, ValueError):
            return {}


def fig_importance(plt, imps: dict[str, dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = sorted({k for imp in imps.values() for k in imp["importance"]})
    width = 0.8 / max(1, len(imps))
    for i, (sweep, imp) in enumerate(imps.items()):
        shares = [imp["importance"].get(k, (0, 0, 0)) for k in names]
        y = np.arange(len(names)) + i * width
        mean = np.array([v[0] for v in shares])
        err = np.array([[v[0] - v[1] for v in shares], [v[2] - v[0] for v in shares]]).clip(0)
        ax.barh(y, mean, height=width, xerr=err if len(names) else None, capsize=3,
                label=f"{sweep}: epoch {imp['epoch']}, {imp['trials']} trials")
    ax.set_yticks(np.arange(len(names)) + width * (len(imps) - 1) / 2, names)
    ax.set(xlabel="PED-ANOVA importance (share; 90% bootstrap over trials)",
           title="which searched name mattered (equal epoch)" if names else
           f"withheld: fewer than {MIN_IMPORTANCE_TRIALS} search trials at a common epoch")
    if names:
        ax.legend(fontsize=7)
    fig.savefig(out / "importance.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def fig_per_seed(plt, df: pd.DataFrame, info: Plan, out: Path) -> None:
    """Each raced point's final metric per paired seed, the reference first: one line per seed across the points,
    so a reader sees how consistently one beats another (what the paired decisions rest on), each point labelled
    with its decision."""
    state, points, reference = analysis.race_state(df, info)
    points = ([reference] if reference else []) + [p for p in points if p != reference]
    decided = {c["a"]: c["decision"] for c in (state.contrasts if state else [])}
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(points)), 4))
    metric = info.verdict.get("primary", info.metric)
    table = analysis.confirmed(df, metric, info.max_epochs).reindex(points) if points else pd.DataFrame()
    x = np.arange(len(table))
    for seed in table.columns:
        ax.plot(x, table[seed].to_numpy(float), "o-", color="0.6", alpha=0.6, lw=1)
    if len(table):
        ax.plot(x, table.mean(axis=1).to_numpy(float), "s", color="k", ms=8, label="mean over seeds")
        ax.legend(fontsize=7)
    labels = [analysis.point_label(p) + ("\n(reference)" if p == reference else
                                         f"\n{decided[p]}" if p in decided else "") for p in table.index]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel=f"{metric} at epoch {info.max_epochs}", title="confirmation race: every paired seed (one line each)")
    fig.savefig(out / "per_seed.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------------------------------ report
def write_report(parquets, out: str | Path | None = None) -> Path:
    parquets = [Path(p) for p in ([parquets] if isinstance(parquets, str | Path) else parquets)]
    frames, infos = [], {}
    for p in parquets:
        if not p.exists():
            raise FileNotFoundError(f"{p}: results not found")
        df = read_results(p)  # may run while the sweep is still writing
        if df.empty:
            raise FileNotFoundError(f"{p}: no results yet")
        info = sweep_plan(p, df)
        for sweep in df["sweep"].unique():
            if sweep in infos:  # two runs of one study under the same name: keep them apart by file
                df.loc[df["sweep"] == sweep, "sweep"] = label = f"{sweep} ({p})"
                infos[label] = info
            else:
                infos[sweep] = info
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    out = Path(out) if out else parquets[0].with_name(parquets[0].name.replace(".parquet", ""))
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    sweeps = list(infos)
    lines = [f"# Sweep{'s' if len(sweeps) > 1 else ''} {', '.join(sweeps)}", "", "## Verdict", ""]
    verdict_json, body, pts_by, epoch_by, imps = [], [], {}, {}, {}
    for sweep in sweeps:
        d, info = df[df["sweep"] == sweep], infos[sweep]
        text, found = verdict_section(d, info)
        if len(sweeps) > 1:
            lines.append(f"### {sweep}")
            found = [{**v, "a": f"{sweep}: {v['a']}", "b": f"{sweep}: {v['b']}"} for v in found]
        lines += [*text, ""]
        verdict_json += found
        ranking = analysis.search_ranking(d, info.metric, info.mode, info.grace_period,
                                          info.reduction_factor, info.max_epochs)
        pts_by[sweep], epoch_by[sweep] = equal_fidelity_points(d, info), info.max_epochs
        imps[sweep] = importance(d, info)
        prefix = f"{sweep}: " if len(sweeps) > 1 else ""
        conf = analysis.point_intervals(d, "pckh", info.max_epochs)
        occ = analysis.point_intervals(d, "pckh_occluded", info.max_epochs).set_index("point")
        body += [f"## {prefix}Confirmation stage (epoch {info.max_epochs})", ""]
        if conf.empty:
            body.append("None ran.")
        else:
            body += ["| configuration | seeds | PCKh mean [95% CI] | sd over seeds | occluded mean [95% CI] |",
                     "|---|---|---|---|---|"]
            for r in conf.itertuples():
                o = occ.loc[r.point] if r.point in occ.index else None
                body.append(f"| {r.label} | {r.n} | {_fmt(r.mean)} {_ci(r.lo, r.hi)} | {_fmt(r.sd)} | "
                            + (f"{_fmt(o['mean'])} {_ci(o['lo'], o['hi'])} |" if o is not None else "n/a |"))
        body += ["", f"## {prefix}Search stage, each trial at the epoch it earned", "",
                 "ASHA compares trials only at rung epochs; a trial is listed at the epoch where ASHA stopped it "
                 "(or would have, for audited trials), else its last. Intervals: 95% bootstrap over validation "
                 "images (one seed: seed noise is not in them).", "", *search_section(d, info, ranking), "",
                 f"## {prefix}Early-stopping audit", "", *audit_section(d, info, ranking), ""]
        imp = imps[sweep]
        body += [f"## {prefix}Parameter importance (PED-ANOVA, search trials at epoch {imp['epoch']}, "
                 f"{imp['trials']} trials)", ""]
        body += [f"- {k}: {v:.2f} [90% bootstrap over trials: {lo:.2f}, {hi:.2f}]"
                 for k, (v, lo, hi) in imp["importance"].items()] or [
            f"Withheld: {imp['trials']} search trials at a common epoch, fewer than the {MIN_IMPORTANCE_TRIALS} an "
            "importance share needs before it means more than one trial's luck."]
        body.append("")
    fig_learning_curves(plt, df, out)
    first = sweeps[0]
    fig_width_depth(plt, pts_by[first], epoch_by[first], out)
    fig_visible_occluded(plt, pts_by[first], epoch_by[first], out)
    front = fig_pareto(plt, pts_by, epoch_by, out)
    fig_cost_curve(plt, df, infos, out)
    fig_importance(plt, imps, out)
    fig_per_seed(plt, df[df["sweep"] == first], infos[first], out)
    body += ["## Accuracy-cost Pareto front (PCKh vs GFLOPs per image, equal epoch)", "", *front, "",
             "Figures: learning_curves.png, pckh_vs_width_depth.png, visible_vs_occluded.png, pareto.png, "
             "cost_curve.png, importance.png, per_seed.png. GFLOPs: 2 x multiply-adds of convolutions and matmuls per "
             "image."]
    atomic_write_text(out / "summary.md", "\n".join(lines + body) + "\n")
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
             for row in verdict_json]
    atomic_write_text(out / "verdict.json", json.dumps(clean, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.report", description=__doc__.splitlines()[0])
    p.add_argument("parquet", nargs="+", help="results/<name>.parquet (several: sweeps kept apart by `sweep`)")
    p.add_argument("--out", help="output directory (default: results/<name>/ of the first)")
    a = p.parse_args(argv)
    try:
        out = write_report(a.parquet, a.out)
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/summary.md, {out}/verdict.json and 7 figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
