"""The Parquet contract, and the report's verdict on sweeps whose answer is known."""

import json
import re
import threading

import numpy as np
import pandas as pd
import pytest

from search import analysis
from search.report import write_report
from search.results import SCHEMA, ResultsTable, read_results, schema_markdown

from .conftest import ROOT, run_cli

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


def make_sweep(path, effects: dict[str, float], seeds=4, max_epochs=4, noise=1.0, rng_seed=0):
    """A sweep with a known answer: PCKh at epoch e = 10 e + effect + seed effect + noise. Search trials
    t-<name> (one seed, 0); then a confirmation stage of every point with `seeds` paired seeds."""
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
                     stage="confirm", seed=s)
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
    assert set(df.loc[df.stage == "confirm", "seed"]) == {1, 2}
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


def test_readme_column_table_is_the_declared_schema():
    readme = (ROOT / "README.md").read_text()
    assert schema_markdown() in readme, "README column table is stale: python -m search.results --markdown"


def test_verdict_resolves_a_real_effect_and_not_noise(tmp_path):
    # human is 6 points better than shared; mi equals shared. Noise sd 1 per run and a seed effect shared by
    # the pair cancels in the paired difference: with 4 seeds the difference's t interval has half-width
    # ~ 3.18 x sqrt(2) x 1 / 2 = 2.3, so +6 is resolved and 0 is not (unless |noise mean| > 2.3: p < 0.05 for
    # one fixed seed, checked here for the fixed rng_seed).
    path = tmp_path / "v.parquet"
    make_sweep(path, {"shared": 0.0, "human": 6.0, "mi": 0.0, "per-part": 0.0}, seeds=4)
    out = write_report(path, tmp_path / "rep")
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict and all(set(v) == {"a", "b", "metric", "epoch", "diff", "lo", "hi", "resolved", "n_seeds"}
                           for v in verdict)
    assert all(v["lo"] <= v["diff"] <= v["hi"] for v in verdict)
    pckh = {v["b"]: v for v in verdict if v["metric"] == "pckh"}
    assert all(v["a"] == "human W=64 D=1" and v["epoch"] == 4 and v["n_seeds"] == 4 for v in pckh.values())
    assert pckh["shared W=64 D=1"]["resolved"] and pckh["shared W=64 D=1"]["lo"] > 0
    assert pckh["shared W=64 D=1"]["diff"] == pytest.approx(6.0, abs=2.5)
    assert {v["metric"] for v in verdict} == {"pckh", "pckh_occluded"}
    text = (out / "summary.md").read_text()
    assert text.split("\n")[2] == "## Verdict"
    assert re.search(r"human W=64 D=1 vs shared W=64 D=1: \+\d+\.\d PCKh \[\+\d+\.\d, \+\d+\.\d\], resolved", text)
    for name in ("learning_curves.png", "pckh_vs_width_depth.png", "visible_vs_occluded.png", "pareto.png",
                 "cost_curve.png", "importance.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    r = run_cli("search.report", str(tmp_path / "missing.parquet"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_a_difference_inside_the_seed_noise_is_not_resolved(tmp_path):
    # human 6.0 vs mi 5.8: a 0.2-point difference against a paired half-width of ~2.3 (as above).
    path = tmp_path / "close.parquet"
    make_sweep(path, {"shared": 0.0, "human": 6.0, "mi": 5.8}, seeds=4)
    verdict = {(v["b"], v["metric"]): v for v in json.loads((write_report(path, tmp_path / "r") / "verdict.json")
                                                                .read_text())}
    close = verdict[("mi k=5 W=32 D=2", "pckh")]
    assert not close["resolved"] and close["lo"] < 0 < close["hi"]
    assert verdict[("shared W=64 D=1", "pckh")]["resolved"]


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
    assert "nothing is resolved" in (out / "summary.md").read_text()


def test_search_trials_are_ranked_at_the_epoch_they_earned(tmp_path):
    """A trial stopped at epoch 2 is never ranked above one that was promoted, however its epoch-2 value
    compares with the other's final value; the best of each grouping is confirmed."""
    path = tmp_path / "r.parquet"
    make_sweep(path, {"shared": 0.0, "human": 3.0, "per-part": 25.0}, seeds=0)
    df = read_results(path)
    ranking = analysis.search_ranking(df, "pckh", "max", None, None, 4)
    assert list(ranking["trial_id"]) == ["t-human", "t-shared", "t-per-part"]
    assert list(ranking["earned_epoch"]) == [4, 4, 2]
    assert analysis.confirm_points(ranking, 0) == list(ranking["point"])  # one best per grouping, in rank order
    assert analysis.confirm_points(ranking, 1)[0] == ranking["point"].iloc[0]


def test_two_sweeps_in_one_report(tmp_path):
    make_sweep(tmp_path / "a.parquet", {"shared": 0.0, "human": 6.0}, seeds=3)
    b = ResultsTable(tmp_path / "b.parquet", "b", 4)
    _add(b, "x", POINTS["mi"], 4, 40.0, stage="confirm", seed=1)
    b.end("x", "TERMINATED")
    b.flush()
    out = write_report([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "both")
    text = (out / "summary.md").read_text()
    assert "### s" in text and "### b" in text and text.count("## Verdict") == 1
