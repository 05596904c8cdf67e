"""The Parquet contract: one row per (trial, epoch), never duplicated, readable at every moment.

`results/<sweep>.parquet` is a directory of Parquet parts that `pandas.read_parquet(path)` reads as one
table. Why a directory: rewriting one file per reported result costs time proportional to the whole
history (1.1 s per result at 10^5 rows). Here a part holds the rows of a run of consecutive trials (about
PART_ROWS rows), and the driver rewrites, at most once per FLUSH_SECONDS, only the parts whose trials
changed, so the cost of a result does not grow with the sweep. A part is replaced atomically under the
same name and parts are never deleted during a sweep, so a concurrent reader sees every part whole.
`part-00000.parquet` holds no rows and is never rewritten: pyarrow reads the schema from the first file
it lists before it reads the data, and that file must not change in between.

The columns are declared below (identity and bookkeeping) and in pbn/metrics.py (every metric); the
docs/results.md's column table is generated from them (`python -m search.results --markdown`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pbn.atomic import atomic_write
from pbn.metrics import METRICS


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    meaning: str


IDENTITY = (
    Column("sweep", "string", "sweep name"),
    Column("trial_id", "string", "the trial's id: `t` + its Optuna study trial number (t0007), the same in the "
           "study, the checkpoints and TensorBoard"),
    Column("stage", "string", "`search` (proposed by the sampler) or `confirm` (a top configuration retrained "
           "with one of the paired seeds)"),
    Column("seed", "int64", "the trial's training seed (initialisation, shuffling, augmentation)"),
    Column("point", "string", "the searched values as JSON: the configuration's identity across seeds and stages"),
    Column("audited", "boolean", "a search trial exempt from early stopping, to audit ASHA (AUDIT_FRACTION)"),
    Column("epoch", "int64", "epoch reported (1-based); 0 in the one row of a trial that ended in ERROR before "
           "its first epoch (metrics NaN, `groups` empty)"),
    Column("status", "string", "RUNNING while in flight; TERMINATED or ERROR after the trial ends"),
    Column("stopped_early", "boolean", "TERMINATED by ASHA before MAX_EPOCHS"),
    Column("grouping", "string", "shared / per-part / human / mi (from the trial's resolved config)"),
    Column("clusters", "Int64", "k for mi, null otherwise"),
    Column("width", "int64", "W: branch width"),
    Column("depth", "int64", "D: residual blocks per branch"),
    Column("stacks", "int64", "number of stacked PBNs"),
    Column("groups", "string", "joint names per group, `a,b | c,d | ...`"),
)
BOOKKEEPING = (
    Column("node", "string", "host name that ran the epoch"),
    Column("node_id", "string", "Ray node id that ran the epoch"),
    Column("git_commit", "string", "code version (`+dirty` if modified)"),
    Column("num_failures", "int64", "times the trial was restarted after a failure"),
    Column("trial_started_at", "float64", "UNIX time the driver started the trial"),
    Column("reported_at", "float64", "UNIX time the driver received the epoch"),
    Column("config", "string", "the full resolved `pbn.config.Config` as JSON"),
)
COLUMNS: tuple[Column, ...] = (*IDENTITY, *(Column(m.key, m.dtype, m.meaning) for m in METRICS), *BOOKKEEPING)
SCHEMA = {c.name: c.dtype for c in COLUMNS}
METRIC_KEYS = tuple(m.key for m in METRICS)
ARROW_SCHEMA = pa.Schema.from_pandas(pd.DataFrame({c: pd.Series(dtype=t) for c, t in SCHEMA.items()}),
                                     preserve_index=False)  # carries pandas' dtypes (Int64, string, boolean)
CONFIG_COLUMNS = ("grouping", "clusters", "width", "depth", "stacks")
ENDED = ("TERMINATED", "ERROR")
SEARCH, CONFIRM = "search", "confirm"  # the values of the `stage` column
PART_ROWS = 2048  # rows a part is sized for: its rewrite takes ~6 ms
FLUSH_SECONDS = 1.0  # a SIGKILLed driver loses at most this much of the results
STEP_BUDGET = 0.015  # seconds of part writes per call of flush(force=False): the driver's event loop keeps moving
STRING_COLUMNS = [name for name, dtype in SCHEMA.items() if dtype == "string"]


class ResultsError(RuntimeError):
    """The results path cannot be used (e.g. a file in an older single-file layout)."""


@dataclass
class TrialInfo:
    part: int
    status: str = "RUNNING"
    num_failures: int = 0
    started: float = float("nan")
    meta: dict = field(default_factory=dict)  # stage, seed, point, audited
    last: int = 0  # last epoch recorded (epochs of a trial are contiguous from 1)
    table: pa.Table | None = None  # its rows as written last, until they change
    config: str | None = None  # its resolved config (JSON) ...
    config_columns: dict = field(default_factory=dict)  # ... and the columns taken from it


class ResultsTable:
    """The driver's view of results/<sweep>.parquet. Rows of trials in parts that may still change are held
    in memory; parts whose trials have all ended are on disk only."""

    def __init__(self, path: str | Path, sweep: str, max_epochs: int, part_rows: int = PART_ROWS,
                 flush_seconds: float = FLUSH_SECONDS, on_write=None):
        """on_write(part path): called after each part is written (search/mirror.py copies it to the storage)."""
        self.path, self.sweep, self.max_epochs = Path(path), sweep, max_epochs
        self.on_write = on_write
        self.trials_per_part = max(1, part_rows // max(1, max_epochs))
        self.flush_seconds = flush_seconds
        self.trials: dict[str, TrialInfo] = {}
        self.rows: dict[str, dict[int, dict]] = {}  # trial -> epoch -> row, for trials of open parts
        self.parts: dict[int, list[str]] = {}
        self.sealed: set[int] = set()
        self.dirty: dict[int, float] = {}  # part -> when it first changed since it was last written
        self._schema_written = False
        if self.path.is_file():
            raise ResultsError(f"{self.path} is a single Parquet file written by an older version of this "
                               "project (now a directory of parts): start a new sweep (--name), or resume it "
                               "with the version that wrote it")
        if self.path.is_dir():
            self._load()

    # ----------------------------------------------------------------------------------- loading
    def _part_path(self, part: int) -> Path:
        return self.path / f"part-{part:05d}.parquet"

    def _load(self) -> None:
        """Per-trial state from every part (a few columns, vectorised: 10^6 rows load in seconds); the full
        rows only of parts that may still change."""
        info_columns = ["trial_id", "epoch", "status", "num_failures", "trial_started_at", "stage", "seed", "point",
                        "audited"]
        for f in sorted(self.path.glob("part-*.parquet")):
            part = int(f.stem.split("-")[1])
            if part == 0:
                continue
            info = pq.read_table(f, columns=info_columns).to_pandas()
            last = info.sort_values("epoch", kind="stable").groupby("trial_id", sort=False).tail(1)
            ids = list(dict.fromkeys(info["trial_id"]))
            self.parts[part] = ids
            for r in last.itertuples(index=False):
                self.trials[r.trial_id] = TrialInfo(part, r.status, int(r.num_failures), r.trial_started_at,
                                                    {"stage": r.stage, "seed": int(r.seed), "point": r.point,
                                                     "audited": bool(r.audited)}, int(r.epoch))
            if len(ids) >= self.trials_per_part and all(self.trials[t].status in ENDED for t in ids):
                self.sealed.add(part)
            else:
                for row in pq.read_table(f).to_pylist():
                    self.rows.setdefault(row["trial_id"], {})[row["epoch"]] = row

    # ----------------------------------------------------------------------------------- updates
    def _info(self, trial_id: str, meta: dict | None = None) -> TrialInfo:
        info = self.trials.get(trial_id)
        if info is None:
            last = max(self.parts, default=0)
            if last == 0 or last in self.sealed or len(self.parts[last]) >= self.trials_per_part:
                last += 1
                self.parts[last] = []
            self.parts[last].append(trial_id)
            info = self.trials[trial_id] = TrialInfo(last)
            self.rows[trial_id] = {}
        if meta and meta != info.meta:
            info.meta.update(meta)
        return info

    def start(self, trial_id: str, meta: dict) -> None:
        """The driver started the trial; a restart after a failure keeps the first start time."""
        info = self._info(trial_id, meta)
        if info.started != info.started:  # NaN: not started before
            info.started = time.time()

    def has(self, trial_id: str, epoch: int) -> bool:
        info = self.trials.get(trial_id)
        if info is None:
            return False
        return epoch <= info.last if info.part in self.sealed else epoch in self.rows.get(trial_id, {})

    def _row(self, trial_id: str, epoch: int, config: str, **extra) -> dict:
        """config: the resolved config as JSON (kept as the trial sent it; its columns parsed once per trial)."""
        info = self.trials[trial_id]
        if info.config != config:
            info.config, cfg = config, json.loads(config)
            info.config_columns = {c: cfg.get(c) for c in CONFIG_COLUMNS}
        return {"sweep": self.sweep, "trial_id": trial_id, "epoch": epoch, **info.config_columns,
                "reported_at": time.time(), "config": config, **extra}

    def add(self, trial_id: str, result: dict, num_failures: int = 0, meta: dict | None = None) -> None:
        """A reported epoch. A re-reported epoch (trial resumed from an older checkpoint) replaces the row."""
        info = self._info(trial_id, meta)
        info.num_failures = max(info.num_failures, num_failures)
        row = self._row(trial_id, int(result["epoch"]), result["resolved_config"], groups=result.get("groups", ""),
                        node=result.get("node", ""), node_id=result.get("node_id", ""),
                        git_commit=result.get("git_commit", ""))
        for key in METRIC_KEYS:
            if key in result:
                row[key] = result[key]
        self._unseal(info)
        self.rows[trial_id][row["epoch"]] = row
        info.last = max(info.last, row["epoch"])
        self._changed(info)

    def add_unreported(self, trial_id: str, config: dict, num_failures: int = 0, meta: dict | None = None) -> None:
        """A trial that ended before reporting any epoch (e.g. its loss diverged in epoch 1): one row with
        epoch 0 and no metrics, so the Parquet file still shows that this configuration was tried."""
        info = self._info(trial_id, meta)
        self._unseal(info)
        if self.rows.get(trial_id):
            return
        info.num_failures = max(info.num_failures, num_failures)
        self.rows[trial_id][0] = self._row(trial_id, 0, json.dumps(config), groups="")
        self._changed(info)

    def end(self, trial_id: str, status: str, num_failures: int = 0) -> None:
        info = self._info(trial_id)
        self._unseal(info)
        info.status, info.num_failures = status, max(info.num_failures, num_failures)
        self._changed(info)

    def _unseal(self, info: TrialInfo) -> None:
        """Bring a sealed part's rows back into memory before one of its trials changes (a part is rewritten
        whole from memory: rewriting a sealed one from nothing would drop its rows)."""
        if info.part in self.sealed:
            self.sealed.discard(info.part)
            for row in pq.read_table(self._part_path(info.part)).to_pylist():
                self.rows.setdefault(row["trial_id"], {})[row["epoch"]] = row

    def _changed(self, info: TrialInfo) -> None:
        info.table = None
        self.dirty.setdefault(info.part, time.monotonic())

    def ended(self) -> set[str]:
        """Trials recorded as finished (TERMINATED or ERROR)."""
        return {tid for tid, info in self.trials.items() if info.status in ENDED}

    # ----------------------------------------------------------------------------------- writing
    def _trial_table(self, tid: str) -> pa.Table:
        info = self.trials[tid]
        if info.table is None:
            rows = self.rows.get(tid, {})
            fixed = {**info.meta, "status": info.status, "num_failures": info.num_failures,
                     "trial_started_at": info.started,
                     "stopped_early": info.status == "TERMINATED" and max(rows, default=0) < self.max_epochs}
            info.table = pa.Table.from_pylist([{**row, **fixed} for _, row in sorted(rows.items())],
                                              schema=ARROW_SCHEMA)
        return info.table

    def _write_part(self, part: int) -> None:
        table = pa.concat_tables([self._trial_table(tid) for tid in self.parts[part]])
        atomic_write(self._part_path(part), lambda p: pq.write_table(table, p, use_dictionary=STRING_COLUMNS,
                                                                     write_statistics=False))
        if self.on_write is not None:
            self.on_write(self._part_path(part))
        del self.dirty[part]
        ids = self.parts[part]
        if len(ids) >= self.trials_per_part and all(self.trials[t].status in ENDED for t in ids):
            self.sealed.add(part)  # written for the last time: its rows leave memory
            for tid in ids:
                self.rows.pop(tid, None)
                self.trials[tid].table = None

    def flush_trial(self, trial_id: str) -> None:
        """Write the part holding this trial now (its end must be on disk before the study is told)."""
        part = self.trials[trial_id].part
        if part in self.dirty:
            self._ensure_directory()
            self._write_part(part)

    def _ensure_directory(self) -> None:
        if not self._schema_written:
            if not self.path.exists():  # born with its schema part: a reader never finds an empty directory
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process that had this pid
                tmp.mkdir(parents=True)
                pq.write_table(ARROW_SCHEMA.empty_table(), tmp / self._part_path(0).name)
                os.rename(tmp, self.path)
                if self.on_write is not None:
                    self.on_write(self._part_path(0))
            self._schema_written = True

    def flush(self, force: bool = True) -> None:
        """Write the parts that changed. force=False (on every result and every controller step): only parts
        that changed at least FLUSH_SECONDS / 2 ago, oldest first, for at most STEP_BUDGET seconds (and at
        least one part), so no single result waits on a burst of writes and no change waits more than about
        FLUSH_SECONDS."""
        if not self.dirty:
            return
        self._ensure_directory()
        start = time.monotonic()
        for part, since in sorted(self.dirty.items(), key=lambda kv: kv[1]):
            if not force and (start - since < self.flush_seconds / 2 or time.monotonic() - start > STEP_BUDGET):
                break
            self._write_part(part)


def read_results(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The sweep's rows as one DataFrame (`pandas.read_parquet(path)` gives the same), best with the
    columns you need at 10^6 rows. An empty frame with the full schema if nothing was written yet."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: results not found")
    return pd.read_parquet(path, columns=columns)


def schema_markdown() -> str:
    """docs/results.md's column table, from the declarations above and pbn/metrics.py."""
    lines = ["| column | dtype | meaning |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.dtype} | {c.meaning} |" for c in COLUMNS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.results", description="The Parquet contract.")
    p.add_argument("--markdown", action="store_true", help="print the column table (as in docs/results.md)")
    a = p.parse_args(argv)
    if a.markdown:
        print(schema_markdown())
        return 0
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
