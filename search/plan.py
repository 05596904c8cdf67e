"""Plan a confirmation race before running it: `python -m search.plan --means 0,0,4,4 --sd 2.5 --rho 0.5`.

Simulates the verdict's race (search.verdict.decide_looks, the function the driver decides with) on
normal seed-paired values and prints the expected number of confirmation trials, the probability of at
least one wrong decision (with its Monte Carlo standard error) and, per contrast, the shares of decisions.
The simulated metric gets --alpha minus --secondary-alpha, as the driver's primary metric does. Run it
before a sweep to choose --max-seeds and the margin: near-ties within about the margin dominate the cost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from search import verdict


def truths(means, design: verdict.Design, pairs) -> np.ndarray:
    """The true value of each unit: mean_a - mean_b per pair; for `best`, mu_i - max_{j!=i} mu_j per point."""
    mu = np.asarray(means, np.float64)
    if design.family == "best":
        return np.array([mu[i] - np.delete(mu, i).max() for i in range(len(mu))])
    return np.array([mu[a] - mu[b] for a, b in pairs])


def wrong_decisions(decision: np.ndarray, truth: np.ndarray, design: verdict.Design) -> np.ndarray:
    """[S, U]: better/worse where the truth is 0 or of the other sign; equivalent where |truth| >= margin
    (for `best`, where mu_i - max_j mu_j <= -margin: its claim is one-sided)."""
    far = truth <= -design.margin if design.family == "best" else np.abs(truth) >= design.margin
    return (((decision == 1) & (truth <= 0)) | ((decision == 2) & (truth >= 0)) | ((decision == 3) & far))


def simulate(means, sd: float, rho: float, design: verdict.Design, sims: int = 20_000, seed: int = 0,
             reference: int = 0) -> dict:
    """Operating characteristics of the race on values = mean_p + sd (sqrt(rho) z_seed + sqrt(1-rho) e)."""
    mu = np.asarray(means, np.float64)
    k, cap = len(mu), design.max_seeds
    pairs = verdict.contrasts(range(k), design.family, reference)
    alpha_c = design.metric_alpha() / len(pairs)
    rng = np.random.default_rng(seed)
    out_dec, out_trials = [], []
    for start in range(0, sims, 5000):  # chunks bound the memory: 5000 x k x cap values at a time
        c = min(5000, sims - start)
        z, e = rng.standard_normal((c, 1, cap)), rng.standard_normal((c, k, cap))
        values = mu[None, :, None] + sd * (math.sqrt(rho) * z + math.sqrt(1 - rho) * e)
        o = verdict.decide_looks(values, design, pairs, alpha_c)
        out_dec.append(o.decision)
        out_trials.append(o.trials.sum(1))
    dec, trials = np.concatenate(out_dec), np.concatenate(out_trials)
    truth = truths(mu, design, pairs)
    fwer = float(wrong_decisions(dec, truth, design).any(1).mean())
    units = [(i, "max(others)") for i in range(k)] if design.family == "best" else pairs
    rows = [{"a": a, "b": b, "true_diff": float(truth[u]),
             **{name: float((dec[:, u] == code).mean()) for code, name in enumerate(verdict.DECISIONS)}}
            for u, (a, b) in enumerate(units)]
    return {"expected_trials": float(trials.mean()), "fwer": fwer, "fwer_mcse": math.sqrt(fwer * (1 - fwer) / sims),
            "alpha_c": alpha_c, "looks": list(design.looks), "contrasts": rows}


def estimate(path: str, metric: str = "pckh") -> dict:
    """sd and rho from a sweep's Parquet: per confirmed point its last epoch; sd pooled over points (the
    within-point variances over seeds, weighted by their df), rho the mean over pairs of points of the
    correlation over their common seeds (pairs with >= 3 common seeds)."""
    import pandas as pd

    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or directory")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    missing = [c for c in ("stage", "point", "seed", "epoch", metric) if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}")
    c = df[df["stage"] == "confirm"]
    c = c[c["epoch"] == c.groupby("point")["epoch"].transform("max")]
    wide = c.pivot_table(index="seed", columns="point", values=metric, aggfunc="first")
    n = wide.notna().sum()
    dof = float((n - 1).clip(lower=0).sum())
    if dof < 1:
        raise ValueError(f"{path}: no confirmed point has two seeds with a {metric} value at its last epoch")
    sd = math.sqrt(float((wide.var(ddof=1) * (n - 1)).sum()) / dof)
    corr = wide.corr(min_periods=3).to_numpy()
    pairs = corr[np.triu_indices(corr.shape[0], 1)]
    pairs = pairs[np.isfinite(pairs)]
    return {"sd": sd, "sd_dof": int(dof), "points": int((n > 0).sum()),
            "rho": float(pairs.mean()) if len(pairs) else None, "rho_pairs": len(pairs)}


def _floats(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not out or not all(math.isfinite(x) for x in out):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return out


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _table(res: dict, design: verdict.Design, sd: float, rho: float, sims: int) -> str:
    fixed = len(res["means"]) * design.max_seeds
    lines = [f"race: {design.family}, margin {design.margin:g}, alpha {design.metric_alpha():g} for this metric "
             f"({res['alpha_c']:.4g} per contrast), looks {','.join(map(str, design.looks))}; sd {sd:g}, rho {rho:g} "
             f"(sd of a paired difference {res['sd_d']:.3g}); {sims} simulated races",
             f"expected trials {res['expected_trials']:.1f} (a fixed {design.max_seeds}-seed design: {fixed}); "
             f"P(any wrong decision) {res['fwer']:.4f} +- {res['fwer_mcse']:.4f}", "",
             f"{'contrast':<16}{'true':>7}{'better':>9}{'worse':>9}{'equivalent':>12}{'undecided':>11}"]
    for c in res["contrasts"]:
        name = f"{c['a']} - {c['b']}"
        lines.append(f"{name:<16}{c['true_diff']:>+7.2f}{c['better']:>9.3f}{c['worse']:>9.3f}"
                     f"{c['equivalent']:>12.3f}{c['undecided']:>11.3f}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2 (argparse prints the usage too)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m search.plan", description=__doc__.splitlines()[0])
    p.add_argument("--means", type=_floats, required=True, help="true means of the points, the reference first")
    p.add_argument("--sd", type=float, help="one configuration's sd over seeds (or estimated --from)")
    p.add_argument("--rho", type=float, help="correlation of two configurations at the same seed (default 0, or "
                   "estimated --from)")
    p.add_argument("--margin", type=float, required=True, help="equivalence margin, metric points")
    p.add_argument("--family", default="vs-reference", choices=verdict.FAMILIES)
    p.add_argument("--max-seeds", type=int, default=20, help="the cap (default 20)")
    p.add_argument("--looks", type=_ints, default=verdict.DEFAULT_LOOKS, help="seed counts of the looks, cut at "
                   "--max-seeds (default 3,5,8,12,16,20)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error over metrics (default 0.05)")
    p.add_argument("--secondary-alpha", type=float, default=0.01, help="the part of --alpha a secondary metric "
                   "gets (default 0.01, as the driver); the simulated metric gets the rest")
    p.add_argument("--sims", type=int, default=20_000, help="simulated races (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from", dest="source", help="results/<name>.parquet: estimate --sd and --rho from its "
                   "confirmation stage")
    p.add_argument("--metric", default="pckh", help="the metric column --from reads (default pckh)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        a = p.parse_args(argv)
        est = None
        if a.source:
            try:
                est = estimate(a.source, a.metric)
            except ValueError as e:
                p.error(str(e))
        sd = a.sd if a.sd is not None else (est or {}).get("sd")
        rho = a.rho if a.rho is not None else max((est or {}).get("rho") or 0.0, 0.0)  # < 0: no pairing gain
        if sd is None or not 0 < sd < math.inf:
            p.error(f"--sd must be a positive number (or come --from a sweep), got {sd}")
        if not 0 <= rho <= 1:
            p.error(f"--rho must be in [0, 1] (a negative pairing correlation is not modelled), got {rho:g}")
        if len(a.means) < 2 or a.sims < 100:
            p.error("--means needs at least two points and --sims at least 100")
        try:
            design = verdict.Design(margin=a.margin, family=a.family, alpha=a.alpha, secondary_alpha=a.secondary_alpha,
                                    looks=a.looks, max_seeds=a.max_seeds)
        except ValueError as e:
            p.error(str(e))
    except SystemExit as e:  # argparse's errors (one line, exit 2) and --help
        return int(e.code or 0)
    res = simulate(a.means, sd, rho, design, a.sims, a.seed)
    res = {**res, "means": a.means, "sd": sd, "rho": rho, "sd_d": sd * math.sqrt(2 * (1 - rho)),
           "family": design.family, "margin": design.margin, "fixed_trials": len(a.means) * design.max_seeds}
    if est:
        res["estimated"] = {"from": a.source, "metric": a.metric, **est}
    if a.json:
        print(json.dumps(res))
        return 0
    if est:
        r = "n/a (no two points share 3 seeds)" if est["rho"] is None else f"{est['rho']:.2f}"
        print(f"estimated from {a.source} ({a.metric}): sd {est['sd']:.3g} (pooled over {est['points']} points, "
              f"{est['sd_dof']} df), rho {r} (mean over {est['rho_pairs']} pairs of points)")
    print(_table(res, design, sd, rho, a.sims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
