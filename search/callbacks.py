"""Driver-side Tune callback that keeps results/<sweep>.parquet current (one atomic rewrite per result)."""

from __future__ import annotations

from ray.tune import Callback

from pbn.config import ConfigError, resolve
from search.results import ResultsTable


class ParquetCallback(Callback):
    def __init__(self, path: str, sweep: str, max_epochs: int, fixed: dict):
        self.path, self.sweep, self.max_epochs, self.fixed = path, sweep, max_epochs, fixed
        self.table: ResultsTable | None = None
        self.ended_before: set[str] = set()

    def setup(self, **info):
        # Loaded here, not in __init__: after Tuner.restore this object comes back from a pickle made
        # when the sweep started, while the file on disk holds everything reported since.
        self.table = ResultsTable(self.path, self.sweep, self.max_epochs)
        self.ended_before = self.table.ended()  # their status is final; a restored no-op run must not change it

    def _table(self) -> ResultsTable:
        if self.table is None:
            self.setup()
        return self.table

    def on_trial_start(self, iteration, trials, trial, **info):
        self._table().start(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result and "resolved_config" in result:
            if result.get("replayed") and (trial.trial_id, int(result["epoch"])) in self._table().rows:
                return  # a resumed trial re-announcing the epoch of its checkpoint, already recorded
            self._table().add(trial.trial_id, result, trial.run_metadata.num_failures)
            self.table.write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "ERROR")

    def _config(self, searched: dict) -> dict:
        """The trial's config as the trial resolved it (as-is if resolving it was the trial's error)."""
        try:
            return resolve({**self.fixed, **searched}).to_dict()
        except ConfigError:
            return {**self.fixed, **searched}

    def _end(self, trial, status: str) -> None:
        table = self._table()
        if trial.trial_id not in self.ended_before:
            if status == "ERROR":
                table.add_unreported(trial.trial_id, self._config(trial.config), trial.run_metadata.num_failures)
            table.end(trial.trial_id, status, trial.run_metadata.num_failures)
            table.write()
