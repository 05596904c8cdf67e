import json

import pandas as pd

from search.report import write_report
from search.results import SCHEMA, ResultsTable, final_rows

from .conftest import run_cli


def make_sweep(path, sweep="s", max_epochs=4):
    table = ResultsTable(path, sweep, max_epochs)
    trials = [("t1", "shared", None, 64, 1, 4), ("t2", "mi", 5, 32, 2, 2), ("t3", "human", None, 16, 0, 4),
              ("t4", "per-part", None, 16, 1, 2)]
    for tid, grouping, k, w, d, epochs in trials:
        cfg = json.dumps({"grouping": grouping, "clusters": k, "width": w, "depth": d, "stacks": 2})
        for e in range(1, epochs + 1):
            table.add(tid, {"epoch": e, "resolved_config": cfg, "groups": "a | b", "pckh": 10.0 * e + w / 16,
                            "pckh_visible": 11.0 * e, "pckh_occluded": 7.0 * e, "train_loss": 1.0 / e})
        table.end(tid, "TERMINATED")
    table.write()
    return table


def test_results_table_schema_dedup_and_status(tmp_path):
    path = tmp_path / "s.parquet"
    table = make_sweep(path)
    df = pd.read_parquet(path)
    assert list(df.columns) == list(SCHEMA) and len(df) == 12
    assert {c: str(t) for c, t in df.dtypes.items()} == {c: t if t != "string" else "string" for c, t in SCHEMA.items()}
    assert df.loc[df.trial_id == "t2", "stopped_early"].all() and not df.loc[df.trial_id == "t1", "stopped_early"].any()
    assert df.clusters.isna().sum() == 10 and (df.loc[df.grouping == "mi", "clusters"] == 5).all()
    # a re-reported epoch (trial resumed from an older checkpoint) replaces its row
    reloaded = ResultsTable(path, "s", 4)
    cfg = json.dumps({"grouping": "shared", "clusters": None, "width": 64, "depth": 1, "stacks": 2})
    reloaded.add("t1", {"epoch": 4, "resolved_config": cfg, "groups": "a", "pckh": 99.0})
    reloaded.write()
    again = pd.read_parquet(path)
    assert len(again) == 12 and again.loc[(again.trial_id == "t1") & (again.epoch == 4), "pckh"].item() == 99.0
    assert pd.concat([df, again]).shape[0] == 24  # sweeps concatenate
    assert final_rows(again).trial_id.iloc[0] == "t1"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp file behind
    assert table.ended() == {"t1", "t2", "t3", "t4"}


def test_report_writes_figures_and_summary(tmp_path):
    make_sweep(tmp_path / "s.parquet")
    out = write_report(tmp_path / "s.parquet", tmp_path / "rep")
    for name in ("learning_curves.png", "pckh_vs_width_depth.png", "visible_vs_occluded.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    text = (out / "summary.md").read_text()
    assert "4 trials" in text and "2 stopped early" in text and "per-part" in text
    r = run_cli("search.report", str(tmp_path / "missing.parquet"))
    assert r.returncode == 2 and "not found" in r.stderr
