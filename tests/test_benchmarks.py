"""The driver-scale load generator's --json contract: one JSON object per size on stdout, nothing else."""

import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import driver_scale


def test_driver_scale_json_is_one_object_per_size(monkeypatch):
    monkeypatch.setattr(driver_scale, "RESULTS", 200)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert driver_scale.main(["--rows", "300", "600", "--json"]) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [r["rows"] for r in rows] == [300, 600]
    for r in rows:
        assert r["simulated"] is True and r["results"] == 200
        # a history of 300 / 600 rows of 5-, 15- and 50-epoch trials was built and resumed from
        assert r["rows"] // 50 <= r["trials"] <= r["rows"] // 5
        assert r["median_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["resume_s"] >= r["resume_state_s"] + r["resume_asha_s"]
