"""The sweep's Optuna study in a real Optuna storage, one study trial per Parquet trial.

The searcher asks and tells through it while the sweep runs; optuna-dashboard, `optuna.load_study` and
the report read it. Storage URLs: a path ending in .log (Optuna's JournalStorage on a file: the default,
`results/<name>.optuna.log`), `sqlite:///file.db`, or a PostgreSQL/MySQL URL for a shared database on a
cluster. Study name = sweep name. A new sweep never loads an older study; a resumed one refuses a study
whose direction, metric or space differ.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import optuna
import pandas as pd
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._base import BaseJournalSnapshot
from optuna.trial import TrialState

from pbn.atomic import atomic_write
from search.results import SEARCH

DIRECTION = {"max": "maximize", "min": "minimize"}


class StudyError(RuntimeError):
    """The Optuna study cannot be created or resumed as asked."""


_STORAGES: dict[str, optuna.storages.BaseStorage] = {}
# Optuna 5.0 (pinned) pickles its whole replayed state every 100 new trials: 1.2 s at 34,000 trials, a
# stall of the driver's event loop. Every 1,000 trials costs the same per trial as 1.2 ms, and a resume
# replays at most 1,000 trials' lines after the snapshot (under a second).
optuna.storages.journal._storage.SNAPSHOT_INTERVAL = 1000


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`: a file path (JournalStorage on AppendJournal: one line per operation) or
    an SQLAlchemy URL (RDBStorage). One object per URL per process: a journal is loaded once (from its
    snapshot and the lines after it), then read incrementally."""
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


class AppendJournal(JournalFileBackend, BaseJournalSnapshot):
    """Optuna's journal file, written by one process with one O_APPEND write per batch of operations.

    Optuna's own backend takes a symlink lock and fsyncs on every operation: 2-8 ms each here, paid once
    per reported epoch and a dozen times per new trial. A sweep has one writer (the driver, which holds
    the sweep's lock), an O_APPEND write of a few lines is atomic against other appenders and readers, and
    a killed process loses nothing the kernel already has. What it gives up is durability against a power
    loss of the driver's machine, which the Parquet file (also written without fsync) shares; after such
    a loss, the driver settles the study from the Parquet file. Same file format: optuna-dashboard and
    optuna.load_study read it as any journal."""

    def __init__(self, file_path: str):
        super().__init__(file_path)
        self._fd: int | None = None  # open for the process's life, like the storage cached in _STORAGES
        self._snapshot = file_path + ".snapshot"

    def append_logs(self, logs: list[dict]) -> None:
        if self._fd is None:
            self._fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
        os.write(self._fd, ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode())

    # Optuna's JournalStorage saves a pickle of its replayed state every SNAPSHOT_INTERVAL trials through
    # these, and starts from the newest one instead of replaying the whole journal: resuming a study of 10^6
    # intermediate values takes ~4 s instead of ~20 s. A snapshot carries the journal's size when it was
    # taken; one that claims more than the journal now holds (a torn line was cut) is ignored.
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


class RecentTPE(optuna.samplers.TPESampler):
    """Optuna's TPE over at most WINDOW trials of each kind it asks for: the most recent ones. TPE's cost
    per proposal grows with the study (0.2 s at 1,700 trials here); over the last 500 it stays at ~11 ms
    (p90 20 ms), and 500 recent trials are ample to model a space of a few names. Below 500 trials nothing
    changes. One view per proposal: TPE lists the study's trials several times for one ask, and each full
    listing costs O(trials)."""

    WINDOW = 500

    def _view(self, study):
        if getattr(self, "_current", None) is None or self._current._study is not study:
            self._current = _Recent(study, self.WINDOW)
        return self._current

    def before_trial(self, study, trial):
        self._current = _Recent(study, self.WINDOW)  # a fresh view for each proposal
        super().before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return super().infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(self._view(study), trial, param_name, param_distribution)


class _Recent:
    """A study as TPE sees it: everything delegated, except that trial lists keep their last `window`, each
    listing made once per view."""

    def __init__(self, study: optuna.Study, window: int):
        self._study, self._window, self._lists = study, window, {}

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        key = (deepcopy, None if states is None else tuple(states))
        if key not in self._lists:
            self._lists[key] = self._newest(deepcopy, states, use_cache)
        return self._lists[key]

    def _newest(self, deepcopy: bool, states, use_cache: bool) -> list:
        storage = self._study._storage
        replay = getattr(storage, "_replay_result", None)
        if replay is None:  # not a JournalStorage: list everything, keep the tail
            return self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)[-self._window:]
        # A JournalStorage (optuna 5.0, pinned) lists a study by scanning every trial (20 ms at 34,000):
        # walk its trial ids from the newest instead, and stop at `window`.
        with storage._thread_lock:
            storage._sync_with_backend()
            found = []
            for tid in reversed(replay._study_id_to_trial_ids[self._study._study_id]):
                trial = replay._trials[tid]
                if states is None or trial.state in states:
                    found.append(trial)
                    if len(found) == self._window:
                        break
        found.reverse()
        return copy.deepcopy(found) if deepcopy else found

    def get_trials(self, deepcopy: bool = True, states=None):
        return self._get_trials(deepcopy=deepcopy, states=states)


def repair_journal(path: str) -> int:
    """Cut a journal's torn last line (a writer killed mid-append). Optuna skips such a line on reading,
    but glues the next append onto it, after which the whole file no longer parses. Returns the bytes cut."""
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


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_exists(url: str, name: str) -> bool:
    if "://" not in url and not os.path.exists(url):
        return False
    _quiet()
    return name in optuna.study.get_all_study_names(open_storage(url))


def refuse_existing(url: str, name: str) -> None:
    """An older sweep's study is never reused."""
    if study_exists(url, name):
        raise StudyError(f"Optuna storage {url} already holds a study named {name!r}: resume it with --resume, "
                         "or choose another --name")


def create_study(url: str, name: str, mode: str, metric: str, space_digest: str) -> optuna.Study:
    """A new study; refuses a name the storage already holds."""
    _quiet()
    refuse_existing(url, name)
    if "://" not in url and not os.path.exists(url):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        Path(url + ".snapshot").unlink(missing_ok=True)  # a stale snapshot must not seed a new journal
    study = optuna.create_study(storage=open_storage(url), study_name=name, direction=DIRECTION[mode])
    study.set_user_attr("metric", metric)
    study.set_user_attr("space_digest", space_digest)
    return study


def load_study(url: str, name: str, mode: str | None = None, metric: str | None = None,
               space_digest: str | None = None, sampler=None) -> optuna.Study:
    """The sweep's study; with mode/metric/space_digest given, refuses one that differs."""
    _quiet()
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url), sampler=sampler)
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


def reconcile(study: optuna.Study, df: pd.DataFrame, metric: str, max_epochs: int) -> int:
    """Tell the study what the Parquet file says of trials it still holds as RUNNING (a driver killed
    between the two writes): the epochs it never heard of, the costs, then the end: finished -> COMPLETE,
    stopped early -> PRUNED, ERROR or a non-finite value -> FAIL. df needs trial_id, epoch, status, stage,
    the metric, device_seconds, params, gflops. Returns how many it settled."""
    if df.empty:
        return 0
    last = df.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    settled = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tid = t.user_attrs.get("trial_id")
        if tid not in last.index or last.at[tid, "status"] == "RUNNING":
            continue
        row, rows = last.loc[tid], df[(df.trial_id == tid) & (df.epoch > 0)]
        for epoch, value in rows[["epoch", metric]].itertuples(index=False):
            if epoch not in t.intermediate_values and _finite(value):
                study._storage.set_trial_intermediate_value(t._trial_id, int(epoch), float(value))
        costs = {"device_seconds": float(rows["device_seconds"].sum())}
        if len(rows):
            costs.update(params=int(rows["params"].iloc[-1]), gflops=float(rows["gflops"].iloc[-1]))
        for key, value in costs.items():
            study._storage.set_trial_user_attr(t._trial_id, key, value)
        tell_final(study, t.number, row["status"], row[metric], int(row["epoch"]), max_epochs, row["stage"])
        settled += 1
    return settled


def tell_final(study: optuna.Study, number: int, status: str, value, epoch: int, max_epochs: int,
               stage: str) -> TrialState:
    """The one rule for a trial's final state: ERROR or a non-finite value -> FAIL; a search trial that
    stopped before max_epochs -> PRUNED; else COMPLETE with its last value."""
    if status == "ERROR" or not _finite(value):
        state, value = TrialState.FAIL, None
    elif stage == SEARCH and epoch < max_epochs:
        state, value = TrialState.PRUNED, None
    else:
        state, value = TrialState.COMPLETE, float(value)
    study.tell(number, value, state=state, skip_if_finished=True)
    return state


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
