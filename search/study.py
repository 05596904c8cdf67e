"""The sweep's Optuna study: which trials exist and what they are (point, seed, stage, state).

One study trial per sweep trial; its number names the trial everywhere (`trial_id` = "t0007" for number 7:
the Parquet rows, the checkpoints, the TensorBoard runs). The study and the Parquet file are the sweep's
only state; a driver, fresh or resumed, reads both and builds its work from them (search/run.py).

How a trial comes to exist, each way atomic in the journal or repairable on resume:
- pinned points (a study's INITIAL or GRID points, the confirmation stage's (point, seed) jobs) are
  enqueued with their user attrs in one operation (`Study.enqueue_trial`), and a later `ask` pops them;
- the sampler's proposals are asked, then given their attrs; a driver killed in between leaves a RUNNING
  trial without them, which `complete_attrs` finishes on resume (every attr follows from the trial's
  params and its place in the study).

Storage: a path ending in .log (Optuna's JournalStorage on a file: the default `results/<name>.optuna.log`,
appended by the driver alone), or an SQLAlchemy URL for a shared database. A new sweep never loads an older
study; a resumed one refuses a study whose direction, metric or space differ.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pbn.atomic import atomic_write
from search import compat
from search.results import SEARCH

log = logging.getLogger(__name__)
DIRECTION = {"max": "maximize", "min": "minimize"}
ATTRS = ("trial_id", "stage", "seed", "point", "audited")  # what every study trial carries (user attrs)


class StudyError(RuntimeError):
    """The Optuna study cannot be created or resumed as asked."""


@dataclass(frozen=True)
class Job:
    """One sweep trial as the study knows it: what to train and under which name."""

    number: int
    stage: str
    point: dict
    seed: int
    audited: bool = False

    @property
    def trial_id(self) -> str:
        return trial_id_of(self.number)

    @property
    def point_key(self) -> str:
        return point_key(self.point)


def trial_id_of(number: int) -> str:
    return f"t{number:04d}"


def point_key(point: dict) -> str:
    """A point's identity as the Parquet `point` column spells it."""
    return json.dumps(point, sort_keys=True)


def job_of(trial: optuna.trial.FrozenTrial) -> Job:
    a = trial.user_attrs
    return Job(trial.number, a["stage"], dict(a["point"]), int(a["seed"]), bool(a.get("audited", False)))


# ----------------------------------------------------------------------------------------------- storage
_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`: a file path (JournalStorage, one line per operation) or an SQLAlchemy URL.
    One object per URL per process: a journal is loaded once, then read incrementally."""
    if url not in _STORAGES:
        if "://" in url:
            try:
                _STORAGES[url] = optuna.storages.RDBStorage(url)
            except Exception as e:  # SQLAlchemy's many errors, a missing driver (e.g. psycopg2)
                raise StudyError(f"cannot open Optuna storage {url}: {type(e).__name__}: {e}") from None
        else:
            repair_journal(url)
            _STORAGES[url] = optuna.storages.JournalStorage(AppendJournal(url))
    return _STORAGES[url]


def forget_storage(url: str) -> None:
    """Drop the cached storage of `url` (its file was replaced, e.g. fetched from the sweep's storage URI)."""
    _STORAGES.pop(url, None)


class AppendJournal(JournalFileBackend, compat.JournalSnapshot):
    """Optuna's journal file, written by one process with one O_APPEND write per batch of operations.

    Optuna's own backend takes a symlink lock and fsyncs on every operation: 2-8 ms each, paid once per
    reported epoch. A sweep has one writer (the driver, which holds the sweep's lock), an O_APPEND write of
    a few lines is atomic against other appenders and readers, and a killed process loses nothing the
    kernel already has. It gives up durability against a power loss of the driver's machine, which the
    Parquet file (also written without fsync) shares. Same file format: optuna-dashboard and
    optuna.load_study read it as any journal."""

    def __init__(self, file_path: str):
        super().__init__(file_path)
        self._fd: int | None = None
        self._snapshot = file_path + ".snapshot"

    def append_logs(self, logs: list[dict]) -> None:
        if self._fd is None:
            self._fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
        os.write(self._fd, ("\n".join(json.dumps(entry, separators=(",", ":")) for entry in logs) + "\n").encode())

    # JournalStorage saves a pickle of its replayed state every compat.SNAPSHOT_INTERVAL trials through these,
    # and starts from the newest one instead of replaying the whole journal. A snapshot carries the journal's
    # size when it was taken; one that claims more than the journal now holds (a torn line was cut) is ignored.
    def save_snapshot(self, snapshot: bytes) -> None:
        size = os.fstat(self._fd).st_size if self._fd is not None else os.path.getsize(self._file_path)
        atomic_write(self._snapshot, lambda p: p.write_bytes(size.to_bytes(8, "little") + snapshot))

    def load_snapshot(self) -> bytes | None:
        try:
            with open(self._snapshot, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if len(data) < 8 or int.from_bytes(data[:8], "little") > os.path.getsize(self._file_path):
            return None
        return data[8:]


def repair_journal(path: str) -> int:
    """Cut a journal's torn last line (a writer killed mid-append). Optuna skips such a line on reading, but
    glues the next append onto it, after which the whole file no longer parses. Returns the bytes cut."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, 2)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            back = min(size, 1 << 20)
            f.seek(size - back)
            tail = f.read(back)
            keep = size - back + tail.rfind(b"\n") + 1
            f.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0


def study_exists(url: str, name: str) -> bool:
    if "://" not in url and not os.path.exists(url):
        return False
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return name in optuna.study.get_all_study_names(open_storage(url))


def refuse_existing(url: str, name: str) -> None:
    """An older sweep's study is never reused."""
    if study_exists(url, name):
        raise StudyError(f"Optuna storage {url} already holds a study named {name!r}: resume it with --resume, "
                         "or choose another --name")


def create_study(url: str, name: str, mode: str, metric: str, space_digest: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    refuse_existing(url, name)
    if "://" not in url and not os.path.exists(url):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        Path(url + ".snapshot").unlink(missing_ok=True)  # a stale snapshot must not seed a new journal
    study = optuna.create_study(storage=open_storage(url), study_name=name, direction=DIRECTION[mode])
    study.set_user_attr("metric", metric)
    study.set_user_attr("space_digest", space_digest)
    return study


def load_study(url: str, name: str, mode: str | None = None, metric: str | None = None,
               space_digest: str | None = None) -> optuna.Study:
    """The sweep's study; with mode/metric/space_digest given, refuses one that differs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise StudyError(f"Optuna storage {url} holds no study named {name!r}") from None
    if mode is not None and study.direction.name.lower() != DIRECTION[mode]:
        raise StudyError(f"study {name!r} in {url} is {study.direction.name.lower()}d, but the sweep's METRIC is "
                         f"{DIRECTION[mode]}d: a changed study is a new sweep")
    for key, want in (("metric", metric), ("space_digest", space_digest)):
        have = study.user_attrs.get(key)
        if want is not None and have != want:
            raise StudyError(f"study {name!r} in {url} was made for {key} {have!r}, not {want!r}: a changed "
                             "study is a new sweep")
    return study


# --------------------------------------------------------------------------------------- making trials
def audit_schedule(fraction: float, seed: int, n: int) -> bool:
    """Whether the n-th search trial (0-based) is audited (exempt from early stopping): evenly spread with a
    seeded random offset, so round(N x fraction) of any N consecutive trials are, whatever their quality."""
    if fraction <= 0:
        return False
    u = np.random.default_rng([seed, 7]).random()
    return int((n + 1) * fraction + u) > int(n * fraction + u)


class TrialMaker:
    """Makes a stage's trials with `study.ask()`: pinned points first (enqueued with their attrs), then, in the
    search stage, the sampler's proposals. A proposal that repeats a point trains the point's next seed
    (base_seed + how many earlier search trials had it), so every study trial is a real, distinct run; the
    n-th search trial is audited per `audit_schedule`. Both rules depend only on the study, so a resumed
    driver repeats them. The space function runs on every trial, pinned or not, so the study records each
    trial's params as the sampler and optuna-dashboard expect."""

    def __init__(self, study: optuna.Study, space_fn, stage: str, base_seed: int = 0, audit_fraction: float = 0.0,
                 seed: int = 0):
        self.study, self.space_fn, self.stage, self.base_seed = study, space_fn, stage, base_seed
        self.audit_fraction, self.seed = audit_fraction, seed
        mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("stage") == stage]
        made = [t for t in mine if t.state != TrialState.WAITING]
        self.points = Counter(point_key(t.user_attrs["point"]) for t in made)
        self.made = len(made)
        self.waiting = len(mine) - len(made)
        study.sampler = compat.RecentTPE(seed=seed + self.made)  # a fresh, seeded stream after a resume

    def ask(self) -> Job | None:
        """The next trial; None once a confirmation stage has no enqueued job left (it never samples)."""
        if self.stage != SEARCH and self.waiting <= 0:
            return None
        trial = self.study.ask()
        constants = self.space_fn(trial) or {}
        if "stage" in trial.user_attrs:  # a pinned point, enqueued with its attrs
            self.waiting -= 1
        else:
            point = {**trial.params, **constants}
            for key, value in self.attrs(trial.number, point).items():
                trial.set_user_attr(key, value)
        frozen = compat.frozen_trial(self.study, trial.number)
        self.points[point_key(frozen.user_attrs["point"])] += 1
        self.made += 1
        return job_of(frozen)

    def attrs(self, number: int, point: dict) -> dict:
        """A proposal's user attrs; `stage` last: a trial without it was cut short here (complete_attrs)."""
        return {"trial_id": trial_id_of(number), "point": point, "seed": self.base_seed + self.points[point_key(point)],
                "audited": audit_schedule(self.audit_fraction, self.seed, self.made), "params": None,
                "gflops": None, "device_seconds": 0.0, "stage": SEARCH}


def enqueue_points(study: optuna.Study, points: list[dict], base_seed: int, audit_fraction: float,
                   seed: int) -> None:
    """A new study's pinned search points (INITIAL or GRID), in order, each with its attrs."""
    seen: Counter = Counter()
    for n, point in enumerate(points):
        number = len(study.get_trials(deepcopy=False))
        study.enqueue_trial(point, user_attrs={
            "trial_id": trial_id_of(number), "point": point, "seed": base_seed + seen[point_key(point)],
            "audited": audit_schedule(audit_fraction, seed, n), "params": None, "gflops": None,
            "device_seconds": 0.0, "stage": SEARCH})
        seen[point_key(point)] += 1


def enqueue_job(study: optuna.Study, stage: str, point: dict, seed: int) -> None:
    number = len(study.get_trials(deepcopy=False))
    study.enqueue_trial(point, user_attrs={
        "trial_id": trial_id_of(number), "point": point, "seed": seed, "audited": False, "params": None,
        "gflops": None, "device_seconds": 0.0, "stage": stage})


def complete_attrs(study: optuna.Study, space_fn, base_seed: int, audit_fraction: float, seed: int) -> int:
    """Give the attrs to RUNNING trials a killed driver asked but never labelled (SearchTrials.ask), exactly as
    that driver would have: their point from the params (constants from the space at those params), their
    seed and audit from their place among the search trials. Returns how many it completed."""
    trials = study.get_trials(deepcopy=False)
    half = [t for t in trials if t.state == TrialState.RUNNING and "stage" not in t.user_attrs]
    for t in half:
        earlier = [u for u in trials if u.number < t.number and u.user_attrs.get("stage") == SEARCH
                   and u.state != TrialState.WAITING]
        constants = space_fn(optuna.trial.FixedTrial(t.params)) or {}
        point = {**t.params, **constants}
        same = sum(point_key(u.user_attrs["point"]) == point_key(point) for u in earlier)
        attrs = {"trial_id": trial_id_of(t.number), "point": point, "seed": base_seed + same,
                 "audited": audit_schedule(audit_fraction, seed, len(earlier)), "params": None, "gflops": None,
                 "device_seconds": 0.0, "stage": SEARCH}
        for key, value in attrs.items():
            compat.set_user_attr(study, t, key, value)
        log.info("completed the attrs of trial %s (asked by a driver killed before it labelled it)", t.number)
    return len(half)


# ----------------------------------------------------------------------------------------- ending trials
def tell_final(study: optuna.Study, number: int, status: str, value, epoch: int, max_epochs: int,
               stage: str) -> TrialState:
    """The one rule for a trial's final state: ERROR or a non-finite value -> FAIL; a search trial that stopped
    before max_epochs -> PRUNED; else COMPLETE with its last value."""
    if status == "ERROR" or not finite(value):
        state, value = TrialState.FAIL, None
    elif stage == SEARCH and epoch < max_epochs:
        state, value = TrialState.PRUNED, None
    else:
        state, value = TrialState.COMPLETE, float(value)
    study.tell(number, value, state=state, skip_if_finished=True)
    return state


def record_epoch(study: optuna.Study, trial: optuna.trial.FrozenTrial, epoch: int, value, seen: set[int]) -> None:
    """The study's copy of one reported epoch (the Parquet file is written first: search/executor.py)."""
    if epoch not in seen and finite(value):
        try:
            compat.set_intermediate(study, trial, int(epoch), float(value))
        except UpdateFinishedTrialError:
            pass
    seen.add(epoch)


def reconcile(study: optuna.Study, df: pd.DataFrame, metric: str, max_epochs: int) -> int:
    """Make the study hold what the Parquet file holds, for trials it still has RUNNING: the epochs it never heard
    of (a study restored from a storage URI can lag the Parquet parts by its last second), and, for trials the
    file records as ended (a driver killed between flushing a trial's end and telling the study), the costs and
    the end. df needs trial_id, epoch, status, stage, the metric, device_seconds, params, gflops. Returns how many
    trials it ended."""
    if df.empty:
        return 0
    last = df.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    settled = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tid = trial_id_of(t.number)
        if tid not in last.index:
            continue
        rows = df[(df.trial_id == tid) & (df.epoch > 0)]
        seen = set(t.intermediate_values)
        for epoch, value in rows[["epoch", metric]].itertuples(index=False):
            record_epoch(study, t, int(epoch), value, seen)
        row = last.loc[tid]
        if row["status"] == "RUNNING":
            continue
        costs = {"device_seconds": float(rows["device_seconds"].sum())}
        if len(rows):
            costs.update(params=int(rows["params"].iloc[-1]), gflops=float(rows["gflops"].iloc[-1]))
        for key, value in costs.items():
            compat.set_user_attr(study, t, key, value)
        tell_final(study, t.number, row["status"], row[metric], int(row["epoch"]), max_epochs, row["stage"])
        settled += 1
    return settled


def finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
