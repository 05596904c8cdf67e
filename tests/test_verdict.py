"""The verdict's decision rule (search.verdict) and the planner (search.plan): error control, the operating
characteristics the issue asks for, and the race as a pure function of its rows. Pure numpy; fixed seeds.

Monte Carlo margins: a share f from S simulated races has standard error sqrt(f (1 - f) / S); bounds are
stated as the target + 2 of those (or 3 where the test checks exactness from both sides)."""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search import plan, verdict

ROOT = Path(__file__).resolve().parents[1]
SIMS = 20_000


def _design(**kw):
    return verdict.Design(**{"margin": 3.0, "max_seeds": 20, **kw})


# ------------------------------------------------------------------------------------ design
@pytest.mark.parametrize("kw, message", [
    ({"family": "worst"}, "family must be one of"),
    ({"margin": 0}, "margin must be a positive"),
    ({"margin": math.inf}, "margin must be a positive"),
    ({"alpha": 0}, "alpha must be in"),
    ({"secondary_alpha": 0.05}, "secondary_alpha must be in"),
    ({"looks": (5, 3)}, "looks must be strictly increasing"),
    ({"looks": ()}, "looks must be strictly increasing"),
    ({"min_seeds": 2}, "min_seeds must be an integer >= 3"),
    ({"max_seeds": 2}, "max_seeds must be an integer >= min_seeds"),
    ({"sd_floor": -1}, "sd_floor must be"),
    ({"delta": 2}, "delta must be in"),
])
def test_design_rejects_bad_fields_with_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        _design(**kw)
    assert "\n" not in str(e.value)


def test_design_cuts_the_looks_and_states_its_floor():
    assert _design().looks == (3, 5, 8, 12, 16, 20)
    assert _design(max_seeds=10).looks == (3, 5, 8, 10)
    assert _design(min_seeds=5).looks == (5, 8, 12, 16, 20)
    assert _design().floor == 0.75 and _design(sd_floor=0).floor == 0
    assert _design().metric_alpha() == pytest.approx(0.04) and _design().metric_alpha(secondary=True) == 0.01


def test_contrasts():
    assert verdict.contrasts("rab", "vs-reference", "r") == [("a", "r"), ("b", "r")]
    assert verdict.contrasts("rab", "all-pairs") == [("r", "a"), ("r", "b"), ("a", "b")]
    with pytest.raises(ValueError, match="reference"):
        verdict.contrasts("ab", "vs-reference", "z")


# ------------------------------------------------------------------------------------ calibration
@pytest.mark.parametrize("alpha_c", [0.05, 0.04 / 3])
def test_boundaries_cross_at_alpha_c_in_an_independent_simulation(alpha_c):
    # The calibration's own paths (seed CALIBRATION_SEED, 1e6) are not reused: 200,000 fresh null paths of raw
    # normals cross the two-sided and the one-sided boundary at some look with probability alpha_c +- 3 MCSE
    # (MCSE 0.0005 at 0.05, 0.00026 at 0.0133; the calibration's own error is ~2x smaller).
    d = _design()
    c1, c2 = verdict.critical_values(d, alpha_c)
    assert np.all(c1 < c2)  # what the module docstring's equivalence argument needs
    x = np.random.default_rng(7).standard_normal((200_000, 20))
    t = []
    for n in d.looks:
        t.append(x[:, :n].mean(1) / (x[:, :n].std(1, ddof=1) / math.sqrt(n)))
    t = np.stack(t, 1)
    mcse = math.sqrt(alpha_c * (1 - alpha_c) / len(x))
    assert abs((np.abs(t) > c2).any(1).mean() - alpha_c) < 3 * mcse
    assert abs((t > c1).any(1).mean() - alpha_c) < 3 * mcse


def test_a_single_contrast_spends_exactly_alpha_through_the_decision_function():
    # Two equal points, no floor and a margin too small to ever be equivalent: every sim runs to the cap
    # unless wrongly `better`/`worse`, so that share is the two-sided crossing probability, alpha_c = 0.05.
    d = _design(margin=1e-9, sd_floor=0, secondary_alpha=0)
    r = plan.simulate([0, 0], 3.0, 0.0, d, sims=40_000, seed=3)
    assert abs(r["fwer"] - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 40_000)


# ------------------------------------------------------------------------------------ operating characteristics
@pytest.mark.parametrize("sd", [2.5, 3.4])
@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_fwer_with_four_equal_means(sd, rho):
    # The bound is 0.05 + 2 MCSE; the primary metric gets alpha - secondary_alpha = 0.04 of it and the
    # floor and Bonferroni over 3 contrasts only make it smaller, so 0.04 + 2 MCSE is asserted.
    r = plan.simulate([0, 0, 0, 0], sd, rho, _design(), sims=SIMS, seed=11)
    assert r["fwer"] <= 0.04 + 2 * r["fwer_mcse"]


@pytest.mark.parametrize("family", ["all-pairs", "best"])
def test_fwer_of_the_other_families(family):
    r = plan.simulate([0, 0, 0, 0], 2.5, 0.5, _design(family=family), sims=SIMS // 2, seed=12)
    assert r["fwer"] <= 0.04 + 2 * r["fwer_mcse"]


@pytest.mark.parametrize("sd, rho", [(2.5, 0.5), (3.4, 0.0)])
def test_a_difference_equal_to_the_margin_is_rarely_called_equivalent(sd, rho):
    # Contrast 1 - 0 has true difference = margin: `equivalent` is then wrong. The issue allows 0.05 + 2 MCSE;
    # the one-sided bound spends alpha_c = 0.04/3 on it, so that (+ 2 MCSE) is asserted. Observed: 0.007-0.008.
    r = plan.simulate([0, 3, 0, 0], sd, rho, _design(), sims=SIMS, seed=13)
    share = r["contrasts"][0]["equivalent"]
    assert r["contrasts"][0]["true_diff"] == 3.0
    assert share <= r["alpha_c"] + 2 * math.sqrt(r["alpha_c"] * (1 - r["alpha_c"]) / SIMS)


def test_the_required_case_costs_less_than_bonferroni_over_looks():
    # means 0,0,4,4, sd 2.5, rho .5, margin 3, cap 20. The issue asks E[trials] <= 50 and each contrast decided
    # with probability >= 0.95; statistics.md's Bonferroni race gives 47 and 0.97/1.00/1.00 at alpha 0.05.
    # Observed here at alpha 0.04: 47.1 and 0.98/1.00/1.00. The sd of trials is ~14, so E[trials] has MC
    # error ~0.1: 48 is a safe bound; decided shares near 0.98 have MCSE 0.001, so 0.97 is > 5 MCSE away.
    r = plan.simulate([0, 0, 4, 4], 2.5, 0.5, _design(), sims=SIMS, seed=14)
    assert r["expected_trials"] <= 48
    assert all(c["undecided"] <= 0.03 for c in r["contrasts"])
    assert [c["better"] > 0.99 for c in r["contrasts"]] == [False, True, True]


# ------------------------------------------------------------------------------------ the race on rows
def _drive(values, design, points, reference=None, base=100, **kw):
    """Run the race as the driver does: train what next_seeds asks, call race() again. Returns the
    (rows, Race) of every call."""
    rows = pd.DataFrame({"point": pd.Series(dtype=str), "seed": pd.Series(dtype=int),
                         "value": pd.Series(dtype=float), "other": pd.Series(dtype=float)})
    calls = []
    for _ in range(20):
        r = verdict.race(rows, design, points, reference, base=base, **kw)
        calls.append((rows, r))
        if r.finished:
            return calls
        new = [{"point": p, "seed": base + i, "value": values[0][points.index(p), i],
                "other": values[1][points.index(p), i]} for p, idx in r.next_seeds.items() for i in idx]
        assert new, "an unfinished race must ask for seeds"
        rows = pd.concat([rows, pd.DataFrame(new)], ignore_index=True)
    raise AssertionError("the race did not finish")


def _values(means, seed, fail=None):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, 1, 20))
    v = np.asarray(means, float)[None, :, None] + 2.5 * (math.sqrt(0.5) * z + math.sqrt(0.5) *
                                                         rng.standard_normal((2, len(means), 20)))
    if fail:
        v[0][fail] = np.nan  # a trial that ended without a value
    return v


POINTS = ['{"g": "shared"}', '{"g": "per-part"}', '{"g": "human"}', '{"g": "mi"}']


def _same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _keys(rows):
    return set(zip(rows["point"], rows["seed"], strict=True))


def test_an_interrupted_race_reaches_the_same_decisions():
    values = _values([0, 0.5, 4, 2], seed=5, fail=(1, 4))
    calls = _drive(values, _design(), POINTS, POINTS[0])
    final = calls[-1][1]
    assert final.finished and len(calls) > 3 and final.next_seeds == {}
    for (rows, r), (later, _) in itertools.pairwise(calls):
        for c, full in zip(r.contrasts, final.contrasts, strict=True):
            if c["decision"] != "undecided":
                assert _same(c, full)  # a decision made on the first looks is the full data's
        asked = {(p, 100 + i) for p, idx in r.next_seeds.items() for i in idx}
        added = _keys(later) - _keys(rows)
        assert asked == added and not r.finished
    # interrupted inside a look: the missing half is asked for; a contrast whose two points finished the look
    # may already be decided, and then as the full data decides it
    for i in (1, 2):
        (rows, r), later = calls[i], calls[i + 1][0]
        half = later.iloc[: (len(rows) + len(later)) // 2]
        mid = verdict.race(half, _design(), POINTS, POINTS[0], base=100)
        assert mid.look == r.look and sum(map(len, mid.next_seeds.values())) == len(later) - len(half)
        assert all(_same(c, full) for c, full in zip(mid.contrasts, final.contrasts, strict=True)
                   if c["decision"] != "undecided")


def test_decisions_do_not_depend_on_row_order():
    values = _values([0, 0, 4, 4], seed=6, fail=(2, 1))
    rows = _drive(values, _design(), POINTS, POINTS[0])[-1][0]
    a = verdict.race(rows, _design(), POINTS, POINTS[0], base=100, secondary="other")
    b = verdict.race(rows.sample(frac=1, random_state=1), _design(), POINTS, POINTS[0], base=100, secondary="other")
    assert _same(a.contrasts + a.secondary, b.contrasts + b.secondary)
    assert (a.active, a.next_seeds, a.finished) == (b.active, b.next_seeds, b.finished)


def test_three_identical_differences_are_a_tie_not_evidence():
    # a = ref + 3.8 at 3 seeds: sd 0. With the floor (margin/4 = 0.75) se = 0.43, so `better` needs c2 < 3.8/0.43
    # = 8.8, and c2 at n = 3 is 36 (c1 22, at alpha_c 0.04): nothing is decided. Without a floor the t statistic
    # is infinite and `better` fires.
    ref = np.array([20.1, 19.4, 21.0])
    rows = pd.DataFrame({"point": ["ref"] * 3 + ["a"] * 3, "seed": [0, 1, 2] * 2, "value": [*ref, *(ref + 3.8)]})
    r = verdict.race(rows, _design(), ["ref", "a"], "ref")
    assert r.contrasts[0]["decision"] == "undecided" and r.contrasts[0]["look"] == 3
    assert r.next_seeds == {"ref": [3, 4], "a": [3, 4]} and r.contrasts[0]["seeds_to_decide"] >= 4
    assert verdict.race(rows, _design(sd_floor=0), ["ref", "a"], "ref").contrasts[0]["decision"] == "better"


def test_the_secondary_never_moves_the_primary_and_can_be_descriptive():
    values = _values([0, 0.5, 4, 2], seed=8)
    rows = _drive(values, _design(), POINTS, POINTS[0])[3][0]
    a = verdict.race(rows, _design(), POINTS, POINTS[0], base=100)
    b = verdict.race(rows, _design(), POINTS, POINTS[0], base=100, secondary="other")
    assert _same(a.contrasts, b.contrasts) and (a.active, a.next_seeds) == (b.active, b.next_seeds)
    assert [c["alpha"] for c in b.secondary] == [pytest.approx(0.01 / 3)] * 3
    c = verdict.race(rows, _design(secondary_alpha=0), POINTS, POINTS[0], base=100, secondary="other")
    assert {s["decision"] for s in c.secondary} == {"descriptive"} and all(math.isnan(s["lo"]) for s in c.secondary)
    assert [s["n_seeds"] for s in c.secondary] == [s["n_seeds"] for s in b.secondary]


def test_a_min_metric_is_the_negated_max_metric():
    values = _values([0, 0.5, 4, 2], seed=9)
    rows = _drive(values, _design(), POINTS, POINTS[0])[-1][0]
    neg = rows.assign(value=-rows["value"])
    a = verdict.race(rows, _design(), POINTS, POINTS[0], base=100)
    b = verdict.race(neg, _design(), POINTS, POINTS[0], base=100, directions={"value": "min"})
    assert _same(a.contrasts, b.contrasts)


def test_race_with_the_best_family_finds_the_best():
    values = _values([0, 0, 6, 0], seed=10)
    final = _drive(values, _design(family="best"), POINTS)[-1][1]
    assert [c["decision"] for c in final.contrasts] == ["worse", "worse", "better", "worse"]
    assert {c["b"] for c in final.contrasts} == {"max(others)"}


@pytest.mark.parametrize("family, means", [("vs-reference", [0, 0.5, 4, 2]), ("all-pairs", [0, 0, 3, 5]),
                                           ("best", [0, 1, 4, 3])])
def test_the_driver_and_the_planner_decide_alike(family, means):
    # race() on rows and decide_looks() on the same values array (the planner's path) give the same decisions,
    # and the driver trains exactly the trials the simulation counts.
    d = _design(family=family)
    for seed in range(4):
        values = _values(means, seed=20 + seed, fail=(1, 6))
        rows, final = _drive(values, d, POINTS, POINTS[0])[-1]
        pairs = verdict.contrasts(range(4), family, 0)
        o = verdict.decide_looks(values[:1], d, pairs, d.metric_alpha() / len(pairs))
        assert [c["decision"] for c in final.contrasts] == [verdict.DECISIONS[x] for x in o.decision[0]]
        assert len(rows) == o.trials.sum()


def test_race_rejects_bad_rows():
    rows = pd.DataFrame({"point": ["a", "b"], "seed": [0, 25], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"seeds must lie in \[base, base \+ max_seeds\)"):
        verdict.race(rows, _design(), ["a", "b"], "a")
    with pytest.raises(ValueError, match="lack column"):
        verdict.race(rows.drop(columns="value"), _design(), ["a", "b"], "a")


# ------------------------------------------------------------------------------------ the planner CLI
ARGS = ["--means", "0,0,4,4", "--sd", "2.5", "--rho", "0.5", "--margin", "3", "--max-seeds", "20", "--sims", "2000"]


def test_plan_json_keys(capsys):
    assert plan.main([*ARGS, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"expected_trials", "fwer", "fwer_mcse", "contrasts"} <= out.keys()
    assert [(c["a"], c["b"]) for c in out["contrasts"]] == [(1, 0), (2, 0), (3, 0)]
    assert all({"better", "worse", "equivalent", "undecided"} <= c.keys() for c in out["contrasts"])
    assert plan.main(ARGS) == 0 and "expected trials" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--means", "0"], [*ARGS, "--margin", "-1"], [*ARGS, "--rho", "2"],
                                  ["--means", "0,1", "--margin", "3"], [*ARGS, "--from", "/no/such.parquet"]])
def test_plan_errors_are_one_line(argv, capsys):
    assert plan.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_plan_estimates_sd_and_rho_from_a_sweep(tmp_path, capsys):
    # values = point offset + a seed effect only: the pairing correlation is exactly 1 and the pooled sd over
    # seeds is the seed effect's sd. Earlier epochs and search rows must be ignored.
    z = np.random.default_rng(4).normal(0, 2, 6)
    rows = [{"stage": "confirm", "point": f"p{p}", "seed": s, "epoch": e, "pckh": 20 + p + z[s] + (e - 5) * 9}
            for p in range(3) for s in range(6) for e in (4, 5)]
    rows += [{"stage": "search", "point": "p0", "seed": 0, "epoch": 5, "pckh": 99.0}]
    pd.DataFrame(rows).to_parquet(tmp_path / "s.parquet")
    est = plan.estimate(str(tmp_path / "s.parquet"))
    assert est["sd"] == pytest.approx(np.std(z, ddof=1)) and est["rho"] == pytest.approx(1.0)
    assert plan.main(["--means", "0,1", "--margin", "3", "--sims", "500", "--from", str(tmp_path / "s.parquet")]) == 0
    assert "estimated from" in capsys.readouterr().out


def test_plan_runs_as_a_module():
    p = subprocess.run([sys.executable, "-m", "search.plan", *ARGS[:-1], "500", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["fwer"] >= 0
