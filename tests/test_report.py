"""The Parquet contract, and the report's verdict on sweeps whose answer is known."""

import json
import re
import threading

import numpy as np
import pandas as pd
import pytest

from search import analysis
from search.report import write_report
from search.results import SCHEMA, ResultsTable, read_results

from .conftest import run_cli

POINTS = {"shared": {"grouping": "shared", "width": 64, "depth": 1},
          "human": {"grouping": "human", "width": 64, "depth": 1},
          "mi": {"grouping": "mi", "clusters": 5, "width": 32, "depth": 2},
          "per-part": {"grouping": "per-part", "width": 16, "depth": 1}}


def _cfg(point: dict) -> str:
    return json.dumps({"clusters": None, "stacks": 2, **point})


def _add(table, tid, point, epoch, value, stage="search", seed=0, audited=False, occluded=None):
    table.add(tid, {"epoch": epoch, "resolved_config": _cfg(point), "groups": "a | b", "pckh": value,
                    "pckh_lo": value - 1, "pckh_hi": value + 1, "pckh_visible": value + 2,
                    "pckh_occluded": value - 5 if occluded is None else occluded, "params": 1000,
                    "gflops": 0.1 * point["width"] / 16, "device_seconds": 10.0},
              meta={"stage": stage, "seed": seed, "point": json.dumps(point, sort_keys=True), "audited": audited})


BASE = 1000  # the confirmation race's first seed (search/sweep.py CONFIRM_SEED_OFFSET)


def write_plan(path, max_epochs=4, cap=8, family="vs-reference", looks=(3, 5, 8)):
    """The plan a driver would have written beside `path` (the declared verdict design the report reads)."""
    from search.sweep import Paths, Plan

    verdict = {"family": family, "reference": {"grouping": "shared"} if family == "vs-reference" else None,
               "margin": 3.0, "alpha": 0.05, "primary": "pckh", "secondary": "pckh_occluded", "secondary_alpha": 0.01,
               "looks": list(looks)}
    plan = Plan(name="s", space="s.py", space_digest="d", metric="pckh", mode="max", num_samples=4,
                max_epochs=max_epochs, grace_period=None, reduction_factor=None, fixed={}, seed=0, audit_fraction=0.0,
                confirm_top=0, confirm_max_seeds=cap, verdict=verdict, storage="", optuna_storage="", created=0.0)
    Paths(path.parent, path.name.removesuffix(".parquet")).write_plan(plan)
    return plan


def make_sweep(path, effects: dict[str, float], seeds=4, max_epochs=4, noise=1.0, rng_seed=0):
    """A sweep with a known answer: PCKh at epoch e = 10 e + effect + seed effect + noise. Search trials
    t-<name> (one seed, 0); then a confirmation stage of every point with `seeds` paired seeds (BASE + i)."""
    write_plan(path, max_epochs)
    rng = np.random.default_rng(rng_seed)
    table = ResultsTable(path, "s", max_epochs, part_rows=8)  # tiny parts: several files
    seed_effect = rng.normal(0, 3, seeds + 1)
    for name, effect in effects.items():
        stop = 2 if name == "per-part" else max_epochs
        for e in range(1, stop + 1):
            _add(table, f"t-{name}", POINTS[name], e, 10 * e + effect + seed_effect[0] + rng.normal(0, noise))
        table.end(f"t-{name}", "TERMINATED")
    for s in range(1, seeds + 1):
        for name, effect in effects.items():
            tid = f"c-{name}-{s}"
            for e in range(1, max_epochs + 1):
                _add(table, tid, POINTS[name], e, 10 * e + effect + seed_effect[s] + rng.normal(0, noise),
                     stage="confirm", seed=BASE + s - 1)
            table.end(tid, "TERMINATED")
    table.flush()
    return table


def test_results_schema_dedup_status_and_parts(tmp_path):
    path = tmp_path / "s.parquet"
    make_sweep(path, {"shared": 0.0, "human": 5.0}, seeds=2)
    df = pd.read_parquet(path)  # the plain pandas call the README promises
    assert list(df.columns) == list(SCHEMA)
    assert {c: str(t) for c, t in df.dtypes.items()} == SCHEMA
    assert len(df) == 2 * 4 + 4 * 4 and not df.duplicated(["trial_id", "epoch"]).any()
    assert len(list(path.glob("part-*.parquet"))) > 2  # part_rows=8: the rows span several parts
    assert set(df["status"]) == {"TERMINATED"} and not df["stopped_early"].any()
    assert set(df.loc[df.stage == "confirm", "seed"]) == {BASE, BASE + 1}
    # a re-reported epoch (trial resumed from an older checkpoint) replaces its row; a reload sees everything
    again = ResultsTable(path, "s", 4, part_rows=8)
    assert again.ended() == set(df["trial_id"])
    assert again.has("t-human", 3) and not again.has("t-human", 9)
    _add(again, "t-human", POINTS["human"], 3, 99.0)  # a resumed trial re-reporting an epoch replaces its row
    again.flush()
    after = read_results(path)
    assert len(after) == len(df) and after.loc[(after.trial_id == "t-human") & (after.epoch == 3), "pckh"].item() == 99
    changed = ["pckh", "pckh_lo", "pckh_hi", "pckh_visible", "pckh_occluded", "reported_at"]
    key = ["trial_id", "epoch"]
    pd.testing.assert_frame_equal(after.drop(columns=changed).sort_values(key).reset_index(drop=True),
                                  df.drop(columns=changed).sort_values(key).reset_index(drop=True))


def test_a_part_is_rewritten_only_while_its_trials_change(tmp_path):
    path = tmp_path / "p.parquet"
    table = ResultsTable(path, "p", max_epochs=2, part_rows=4)  # 2 trials per part
    for tid in ("a", "b"):
        for e in (1, 2):
            _add(table, tid, POINTS["shared"], e, 10.0 * e)
        table.end(tid, "TERMINATED")
    table.flush()
    sealed = path / "part-00001.parquet"
    before = sealed.stat().st_mtime_ns
    _add(table, "c", POINTS["human"], 1, 5.0)
    table.flush()
    assert sealed.stat().st_mtime_ns == before  # the finished part was not written again
    assert table.sealed == {1} and "a" not in table.rows  # and its rows left memory
    assert (path / "part-00002.parquet").exists()
    table.end("c", "ERROR")
    table.flush()
    df = read_results(path)
    assert df.loc[df.trial_id == "c", "status"].item() == "ERROR"
    # a trial of a sealed part changing again (a driver settling it after a resume) keeps its part whole
    reloaded = ResultsTable(path, "p", max_epochs=2, part_rows=4)
    assert 1 in reloaded.sealed and "a" not in reloaded.rows
    reloaded.end("a", "ERROR")
    reloaded.flush()
    df = read_results(path)
    assert len(df[df.trial_id.isin(["a", "b"])]) == 4 and df.loc[df.trial_id == "a", "status"].eq("ERROR").all()


def test_a_reader_racing_the_writer_always_gets_whole_parts(tmp_path):
    """pandas.read_parquet in a loop while the driver adds results and rewrites parts: every read
    succeeds, no (trial, epoch) appears twice, and a row once seen is never lost."""
    path = tmp_path / "race.parquet"
    table = ResultsTable(path, "race", max_epochs=20, part_rows=60, flush_seconds=0.0)
    _add(table, "t0", POINTS["shared"], 1, 1.0)
    table.flush()
    stop, errors, counts = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                df = pd.read_parquet(path)
                assert not df.duplicated(["trial_id", "epoch"]).any()
                counts.append(len(df))
            except Exception as e:  # any failure is the finding
                errors.append(repr(e))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for t in range(12):
            for e in range(1, 21):
                _add(table, f"t{t}", POINTS["human"], e, float(e))
                table.flush(force=False)
            table.end(f"t{t}", "TERMINATED")
    finally:
        table.flush()
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    assert len(counts) > 5 and counts == sorted(counts)  # every read whole, and never fewer rows than before
    assert len(pd.read_parquet(path)) == 12 * 20


def test_an_older_single_file_is_refused_clearly(tmp_path):
    from search.results import ResultsError

    (tmp_path / "old.parquet").write_bytes(b"PAR1")
    with pytest.raises(ResultsError, match="single Parquet file written by an older version"):
        ResultsTable(tmp_path / "old.parquet", "old", 4)


def test_verdict_decides_a_real_effect_and_not_noise(tmp_path):
    """human is 6 points better than shared, mi and per-part equal to it; noise sd 1 per run, so a paired
    difference has sd 1.4 (the seed effect cancels). The race (looks 3, 5, 8; margin 3; alpha 0.04 / 3 per
    contrast) decides human `better` by look 5 (c2 7.9: half-width 7.9 x 1.4 / sqrt 5 = 5.0 < 6) and never
    calls the equal points better or worse (that would be a family-wise error, 5% at most)."""
    path = tmp_path / "v.parquet"
    make_sweep(path, {"shared": 0.0, "human": 6.0, "mi": 0.0, "per-part": 0.0}, seeds=8)
    out = write_report(path, tmp_path / "rep")
    verdict = json.loads((out / "verdict.json").read_text())
    keys = {"a", "b", "a_point", "b_point", "metric", "epoch", "diff", "lo", "hi", "eq_lo", "eq_hi", "decision",
            "margin", "family", "alpha", "look", "n_seeds", "p_improvement", "seeds_to_decide"}
    assert verdict and all(set(v) == keys for v in verdict), verdict[0]
    pckh = {v["a"]: v for v in verdict if v["metric"] == "pckh"}
    assert set(pckh) == {"human W=64 D=1", "mi k=5 W=32 D=2", "per-part W=16 D=1"}
    assert all(v["b"] == "shared W=64 D=1" and v["epoch"] == 4 and v["family"] == "vs-reference" for v in pckh.values())
    human = pckh["human W=64 D=1"]
    assert human["decision"] == "better" and human["lo"] > 0 and human["look"] == 5 and human["n_seeds"] == 5
    assert human["diff"] == pytest.approx(6.0, abs=2.0) and human["p_improvement"] == 1.0
    assert human["alpha"] == pytest.approx(0.04 / 3)
    for name in ("mi k=5 W=32 D=2", "per-part W=16 D=1"):
        assert pckh[name]["decision"] in ("equivalent", "undecided"), pckh[name]
        assert pckh[name]["lo"] <= pckh[name]["diff"] <= pckh[name]["hi"]
    assert {v["metric"] for v in verdict} == {"pckh", "pckh_occluded"}
    text = (out / "summary.md").read_text()
    assert text.split("\n")[2] == "## Verdict"
    assert re.search(r"- human W=64 D=1 is \*\*better\*\* than shared W=64 D=1: \+\d+\.?\d* \[\+\d+\.?\d*, "
                     r"\+\d+\.?\d*\] PCKh over 5 paired seeds", text), text[:2000]
    assert "best **" not in text  # no headline takes a maximum over points
    assert "| configuration | seed 0 | seed 1 |" in text  # per-seed scores
    for name in ("learning_curves.png", "pckh_vs_width_depth.png", "visible_vs_occluded.png", "pareto.png",
                 "cost_curve.png", "importance.png", "per_seed.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    r = run_cli("search.report", str(tmp_path / "missing.parquet"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_a_difference_inside_the_margin_is_never_a_winner(tmp_path):
    """human 6.0 vs shared 5.8 (mi far below): a 0.2-point difference is `equivalent` or `undecided` after 8
    paired seeds (half-width ~2 at look 8), never `better`; mi, 6 points below, is `worse`."""
    path = tmp_path / "close.parquet"
    make_sweep(path, {"shared": 5.8, "human": 6.0, "mi": -0.2}, seeds=8)
    verdict = {(v["a"], v["metric"]): v for v in json.loads((write_report(path, tmp_path / "r") / "verdict.json")
                                                             .read_text())}
    close = verdict[("human W=64 D=1", "pckh")]
    assert close["decision"] in ("equivalent", "undecided") and abs(close["diff"]) < 1.5
    assert verdict[("mi k=5 W=32 D=2", "pckh")]["decision"] == "worse"


def test_the_audit_of_early_stopping_on_a_known_history():
    """Four trials reach epoch 4, two of them audited; ASHA (grace 1, rf 2) would have stopped audited a2
    at its first rung, where it was worst of those recorded, though it finished best."""
    rows = []
    values = {"p1": [10, 20, 30, 40], "a1": [12, 22, 32, 42], "a2": [1, 2, 3, 60], "p2": [11, 21, 31, 41]}
    for order, (tid, v) in enumerate(values.items()):
        for e, value in enumerate(v, start=1):
            rows.append({"trial_id": tid, "epoch": e, "pckh": float(value), "reported_at": 10.0 * e + order,
                         "stage": "search", "status": "TERMINATED", "point": f'{{"t": "{tid}"}}', "grouping": "human",
                         "audited": tid.startswith("a")})
    df = pd.DataFrame(rows)
    ranking = analysis.search_ranking(df, "pckh", "max", 1, 2, 4)
    by = ranking.set_index("trial_id")
    assert by.at["a2", "would_stop"] == 1 and np.isnan(by.at["a1", "would_stop"])
    assert by.at["a2", "earned_epoch"] == 1 and list(ranking["trial_id"])[-1] == "a2"  # judged where ASHA would
    assert analysis.audit_misses(ranking, 4) == {"audited": 2, "would_stop": 1, "finished": 4,
                                                  "would_stop_top_half": 1}
    corr = analysis.rung_correlations(ranking, df, "pckh", [1, 2], 4).set_index("epoch")
    assert corr.at[1, "n"] == 4 and corr.at[1, "rho"] == pytest.approx(-0.2)  # a2's jump breaks the order


def test_no_confirmation_stage_means_no_verdict(tmp_path):
    path = tmp_path / "n.parquet"
    make_sweep(path, {"shared": 0.0, "human": 6.0}, seeds=0)
    out = write_report(path, tmp_path / "rep")
    assert json.loads((out / "verdict.json").read_text()) == []
    assert "Nothing is decided: the confirmation race has not finished a look yet" in (out / "summary.md").read_text()


def test_search_trials_are_ranked_at_the_epoch_they_earned(tmp_path):
    """A trial stopped at epoch 2 is never ranked above one that was promoted, however its epoch-2 value
    compares with the other's final value; the best of each grouping is confirmed."""
    path = tmp_path / "r.parquet"
    make_sweep(path, {"shared": 0.0, "human": 3.0, "per-part": 25.0}, seeds=0)
    df = read_results(path)
    ranking = analysis.search_ranking(df, "pckh", "max", None, None, 4)
    assert list(ranking["trial_id"]) == ["t-human", "t-shared", "t-per-part"]
    assert list(ranking["earned_epoch"]) == [4, 4, 2]
    points = analysis.confirm_points(ranking, df, "pckh", "max", 0)
    assert points == list(ranking["point"])  # one representative per grouping, in rank order
    assert analysis.confirm_points(ranking, df, "pckh", "max", 1)[0] == ranking["point"].iloc[0]


def test_a_groupings_representative_is_chosen_at_the_epoch_all_its_candidates_reached(tmp_path):
    """Two human trials: A stopped at epoch 2 (25 there), B promoted to epoch 4 (22 at epoch 2, 40 at 4). ASHA's
    order ranks B first for the epochs it was allowed; judged at epoch 2, which both reached, A is better and
    represents human. (ASHA always promotes the first trial at a rung: arrival order must not pick it.)"""
    table = ResultsTable(tmp_path / "rep.parquet", "rep", 4)
    a, b = dict(POINTS["human"], width=32), dict(POINTS["human"], width=96)
    for tid, point, values in (("A", a, [12, 25]), ("B", b, [11, 22, 30, 40]), ("S", POINTS["shared"], [5, 9])):
        for e, v in enumerate(values, start=1):
            _add(table, tid, point, e, float(v))
        table.end(tid, "TERMINATED")
    table.flush()
    df = read_results(tmp_path / "rep.parquet")
    ranking = analysis.search_ranking(df, "pckh", "max", None, None, 4)
    assert ranking["trial_id"].iloc[0] == "B"
    reps = analysis.representatives(ranking, df, "pckh", "max")
    assert json.loads(reps["human"])["width"] == 32 and json.loads(reps["shared"]) == POINTS["shared"]


def test_two_sweeps_in_one_report(tmp_path):
    make_sweep(tmp_path / "a.parquet", {"shared": 0.0, "human": 6.0}, seeds=3)
    b = ResultsTable(tmp_path / "b.parquet", "b", 4)
    _add(b, "x", POINTS["mi"], 4, 40.0, stage="confirm", seed=1)
    b.end("x", "TERMINATED")
    b.flush()
    out = write_report([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "both")
    text = (out / "summary.md").read_text()
    assert "### s" in text and "### b" in text and text.count("## Verdict") == 1


def test_the_rung_correlation_interval_stays_honest_at_perfect_concordance():
    """Six trials in the same order at a rung and at the end: a percentile bootstrap says rho in [1, 1]; the Fisher
    z interval with the Bonett-Wright variance stays wide. Its coverage for a normal copula with Spearman rho 0.8
    at n = 6 (2,000 samples, fixed seed; measured 0.987, the Monte Carlo sd at 0.95 is 0.005) is above 0.93."""
    x = np.arange(6.0)
    r = analysis.spearman_interval(x, x + 0.5)
    assert r["rho"] == pytest.approx(1.0) and r["hi"] == pytest.approx(1.0, abs=1e-3) and r["lo"] < 0.8
    assert np.isnan(analysis.spearman_interval(x[:3], x[:3])["lo"])  # n = 3: no interval, said so in the table
    rng = np.random.default_rng(0)
    pearson = 2 * np.sin(np.pi * 0.8 / 6)  # the normal copula whose Spearman rho is 0.8
    covered = 0
    for _ in range(2000):
        xy = rng.multivariate_normal([0, 0], [[1, pearson], [pearson, 1]], size=6)
        d = analysis.spearman_interval(xy[:, 0], xy[:, 1])
        covered += d["lo"] <= 0.8 <= d["hi"]
    assert covered / 2000 > 0.93
