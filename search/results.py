"""The Parquet contract: one row per (trial, epoch), rewritten atomically, never duplicated.

`pandas.read_parquet("results/<sweep>.parquet")` works during and after a sweep; the schema is fixed
here (and documented in the README) so `pandas.concat` works across sweeps.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pandas as pd

METRIC_COLUMNS = ("pckh", "pckh_visible", "pckh_occluded", "pckh_head", "pckh_shoulder", "pckh_elbow",
                  "pckh_wrist", "pckh_hip", "pckh_knee", "pckh_ankle", "pckh_0_1", "pckh_auc", "train_loss",
                  "val_loss", "epoch_seconds", "train_seconds", "val_seconds", "setup_seconds", "images_per_second",
                  "lr")
SCHEMA = {
    "sweep": "string", "trial_id": "string", "epoch": "int64", "status": "string", "stopped_early": "boolean",
    "grouping": "string", "clusters": "Int64", "width": "int64", "depth": "int64", "stacks": "int64",
    "groups": "string", **{c: "float64" for c in METRIC_COLUMNS}, "node": "string", "node_id": "string",
    "git_commit": "string",
    "num_failures": "int64", "trial_started_at": "float64", "reported_at": "float64", "config": "string",
}


class ResultsTable:
    def __init__(self, path: str | os.PathLike, sweep: str, max_epochs: int):
        self.path, self.sweep, self.max_epochs = Path(path), sweep, max_epochs
        self.rows: dict[tuple[str, int], dict] = {}
        self.trial_status: dict[str, tuple[str, int]] = {}
        self.started: dict[str, float] = {}
        if self.path.exists():
            for row in read_results(self.path).to_dict("records"):
                self.rows[(row["trial_id"], int(row["epoch"]))] = row
                self.trial_status[row["trial_id"]] = (row["status"], int(row["num_failures"]))
                self.started.setdefault(row["trial_id"], row["trial_started_at"])

    def start(self, trial_id: str) -> None:
        """The controller started the trial (driver clock); a restart after a failure keeps the first."""
        self.started.setdefault(trial_id, time.time())

    def _row(self, trial_id: str, epoch: int, cfg: dict, num_failures: int, **extra) -> dict:
        # status and stopped_early are per trial: frame() sets them on every row.
        return {"sweep": self.sweep, "trial_id": trial_id, "epoch": epoch, "grouping": cfg.get("grouping"),
                "clusters": cfg.get("clusters"), "width": cfg.get("width"), "depth": cfg.get("depth"),
                "stacks": cfg.get("stacks"), "num_failures": num_failures, "reported_at": time.time(),
                "config": json.dumps(cfg), **extra}

    def add(self, trial_id: str, result: dict, num_failures: int = 0) -> None:
        """A reported epoch. A re-reported epoch (trial resumed from an older checkpoint) replaces the row."""
        row = self._row(trial_id, int(result["epoch"]), json.loads(result["resolved_config"]), num_failures,
                        groups=result["groups"], node=result.get("node", ""), node_id=result.get("node_id", ""),
                        git_commit=result.get("git_commit", ""))
        row.update({c: float(result[c]) for c in METRIC_COLUMNS if c in result})
        self.rows[(trial_id, row["epoch"])] = row
        self.trial_status.setdefault(trial_id, ("RUNNING", num_failures))

    def add_unreported(self, trial_id: str, config: dict, num_failures: int = 0) -> None:
        """A trial that ended before reporting any epoch (e.g. its loss diverged in epoch 1): one row with
        epoch 0 and no metrics, so the Parquet file still shows that this configuration was tried."""
        if any(tid == trial_id for tid, _ in self.rows):
            return
        self.rows[(trial_id, 0)] = self._row(trial_id, 0, config, num_failures, groups="")

    def ended(self) -> set[str]:
        """Trials this file records as finished (TERMINATED or ERROR)."""
        return {tid for tid, (status, _) in self.trial_status.items() if status in ("TERMINATED", "ERROR")}

    def end(self, trial_id: str, status: str, num_failures: int = 0) -> None:
        self.trial_status[trial_id] = (status, num_failures)

    def frame(self) -> pd.DataFrame:
        last: dict[str, int] = {}
        for tid, ep in self.rows:
            last[tid] = max(ep, last.get(tid, 0))
        records = []
        for (tid, _), row in sorted(self.rows.items(), key=lambda kv: (kv[1]["reported_at"], kv[0])):
            status, failures = self.trial_status.get(tid, ("RUNNING", 0))
            records.append({**row, "status": status, "num_failures": failures,
                            "trial_started_at": self.started.get(tid, float("nan")),
                            "stopped_early": status == "TERMINATED" and last[tid] < self.max_epochs})
        df = pd.DataFrame.from_records(records, columns=list(SCHEMA))
        return df.astype(SCHEMA)

    def write(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path)
        return self.path


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """pandas.read_parquet on a single read of the file. The driver replaces the file atomically, but
    pyarrow opens a path twice (footer, then data): a replace between the two opens mixes two files.
    Reading the bytes once never sees that, so use this while a sweep is writing."""
    return pd.read_parquet(io.BytesIO(Path(path).read_bytes()))


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last reported epoch of every trial, best first."""
    last = df.sort_values("epoch").groupby("trial_id", as_index=False).tail(1)
    return last.sort_values("pckh", ascending=False, na_position="last").reset_index(drop=True)
