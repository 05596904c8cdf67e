"""A sweep's state copied to its storage URI as it is written, so that losing the head loses nothing.

The driver works on local files (results/<name>.parquet, .optuna.log, .sweep.json): a journal is appended
once per reported epoch, which an object store cannot do. Where the sweep's storage is elsewhere (an S3/GCS
URI, or a shared path outside the results directory), every file the driver writes is also put there:
- `<storage>/<name>/<name>.parquet/part-*.parquet`: each part as it is written (the same layout, so
  `pandas.read_parquet("s3://.../<name>/<name>.parquet")` reads the sweep straight from the store);
- `<storage>/<name>/state/sweep.json`: the plan, once;
- `<storage>/<name>/state/optuna.log.d/<offset>`: the journal's new bytes since the last upload, one object
  each, concatenated in offset order on restore. Uploaded when a trial is made (before it can report: a
  restored study never lacks a trial the Parquet file names), when one ends, and at most once a second
  while results arrive, like the Parquet parts: a head lost mid-sweep loses at most its last second, which
  the resume settles exactly as after a local SIGKILL (study.reconcile; trials re-report from checkpoints).
A fresh head (new machine, empty results directory and home) given the same command plus --resume finds no
local plan and restores all three first; so does a head whose local copy is behind the store's.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import time
from pathlib import Path

import pyarrow.fs as pafs

from search.sweep import Paths
from search.trainable import filesystem

log = logging.getLogger(__name__)
JOURNAL_SECONDS = 1.0  # the most a lost head can lose of the journal, as of the Parquet parts


def mirrored(paths: Paths) -> bool:
    """Whether the sweep's storage is somewhere other than its results directory (so worth copying to)."""
    if "://" in paths.storage:
        return True
    storage, results = Path(paths.storage).resolve(), paths.results.resolve()
    return not (storage == results or results in storage.parents)


class Mirror:
    def __init__(self, paths: Paths):
        self.paths = paths
        self.fs, root = filesystem(paths.under_storage())
        self.root = root.rstrip("/")
        self.parquet = posixpath.join(self.root, paths.parquet.name)
        self.state = posixpath.join(self.root, "state")
        self.journal_dir = posixpath.join(self.state, "optuna.log.d")
        self.journal = None if "://" in paths.optuna else Path(paths.optuna)
        self.sent = self._remote_journal_size()
        self.last_sync = 0.0

    # -------------------------------------------------------------------------------------------- upload
    def put_plan(self) -> None:
        self._put(self.paths.plan, posixpath.join(self.state, "sweep.json"))

    def put_part(self, local: Path) -> None:
        """Called by the results table after each part write (the directory's schema part included)."""
        self._put(local, posixpath.join(self.parquet, local.name))

    def sync(self, force: bool = True) -> None:
        """Upload the journal's bytes appended since the last upload (complete lines only); without force, at
        most once per JOURNAL_SECONDS."""
        now = time.monotonic()
        if self.journal is None or (not force and now - self.last_sync < JOURNAL_SECONDS):
            return
        self.last_sync = now
        try:
            size = self.journal.stat().st_size
        except FileNotFoundError:
            return
        if size <= self.sent:
            return
        with open(self.journal, "rb") as f:
            f.seek(self.sent)
            data = f.read(size - self.sent)
        data = data[: data.rfind(b"\n") + 1]
        if not data:
            return
        self.fs.create_dir(self.journal_dir, recursive=True)
        with self.fs.open_output_stream(posixpath.join(self.journal_dir, f"{self.sent:016d}")) as out:
            out.write(data)
        self.sent += len(data)

    def _put(self, local: Path, remote: str) -> None:
        self.fs.create_dir(posixpath.dirname(remote), recursive=True)
        pafs.copy_files(str(local), remote, destination_filesystem=self.fs)  # one PUT: whole or absent

    # ------------------------------------------------------------------------------------------- restore
    def _chunks(self) -> list[tuple[int, str]]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.journal_dir, allow_not_found=True))
        return sorted((int(i.base_name), i.path) for i in infos if i.base_name.isdigit())

    def _remote_journal_size(self) -> int:
        end = 0
        for start, path in self._chunks():
            if start != end:  # a gap: what follows cannot be replayed
                break
            end += self.fs.get_file_info(path).size
        return end

    def remote_plan(self) -> bool:
        return self.fs.get_file_info(posixpath.join(self.state, "sweep.json")).type == pafs.FileType.File

    def behind(self) -> bool:
        """Whether the store holds more of this sweep than the local files (a fresh or an outdated head)."""
        if not self.remote_plan():
            return False
        if not self.paths.plan.exists():
            return True
        local = self.journal.stat().st_size if self.journal is not None and self.journal.exists() else 0
        return self.journal is not None and self.sent > local

    def restore(self) -> None:
        """Replace the local plan, journal and Parquet parts with the store's."""
        p = self.paths
        p.results.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(posixpath.join(self.state, "sweep.json"), str(p.plan), source_filesystem=self.fs)
        if self.journal is not None:
            tmp = self.journal.with_name(self.journal.name + ".restoring")
            with open(tmp, "wb") as out:
                end = 0
                for start, path in self._chunks():
                    if start != end:
                        break
                    with self.fs.open_input_stream(path) as f:
                        data = f.read()
                    out.write(data)
                    end += len(data)
            os.replace(tmp, self.journal)
            Path(str(self.journal) + ".snapshot").unlink(missing_ok=True)  # it describes the old journal
            self.sent = end
        infos = self.fs.get_file_info(pafs.FileSelector(self.parquet, allow_not_found=True))
        parts = [i for i in infos if i.base_name.startswith("part-")]
        if parts:
            tmp_dir = p.parquet.with_name(f".{p.parquet.name}.restoring")
            shutil.rmtree(tmp_dir, ignore_errors=True)
            tmp_dir.mkdir(parents=True)
            for i in parts:
                pafs.copy_files(i.path, str(tmp_dir / i.base_name), source_filesystem=self.fs)
            shutil.rmtree(p.parquet, ignore_errors=True)
            os.replace(tmp_dir, p.parquet)
        log.info("restored sweep %r from %s (%d journal bytes, %d Parquet parts)", p.name, self.root, self.sent,
                 len(parts))
