"""Driver-side Tune callback that keeps results/<sweep>.parquet current.

A result costs a dictionary update; the parts that changed are written within about a second, a few
milliseconds' worth per controller step (search/results.py), so the cost of a result does not grow with
the sweep and a SIGKILLed driver loses at most the last second.
"""

from __future__ import annotations

from ray.tune import Callback

from pbn.config import ConfigError
from search.results import ResultsTable
from search.tune_ext import AUDIT, point_json, point_of, sweep_trial_id, trial_config


class ParquetCallback(Callback):
    def __init__(self, path: str, sweep: str, max_epochs: int, fixed: dict, stage: str):
        self.path, self.sweep, self.max_epochs, self.fixed, self.stage = path, sweep, max_epochs, fixed, stage
        self.table: ResultsTable | None = None
        self.ended_before: set[str] = set()
        self.metas: dict[str, dict] = {}

    def setup(self, **info):
        # Loaded here, not in __init__: after Tuner.restore this object comes back from a pickle made
        # when the stage started, while the files on disk hold everything reported since.
        self.table = ResultsTable(self.path, self.sweep, self.max_epochs)
        self.ended_before = self.table.ended()  # their status is final; a restored no-op run must not change it

    def _table(self) -> ResultsTable:
        if self.table is None:
            self.setup()
        return self.table

    def _meta(self, trial) -> dict:
        """Stage, seed, point and audit of a trial: fixed at its start (computed once per Tune trial)."""
        if trial.trial_id not in self.metas:
            self.metas[trial.trial_id] = {"stage": self.stage, "seed": trial.config.get("seed"),
                                          "point": point_json(trial.config),
                                          "audited": bool(trial.config.get(AUDIT, False))}
        return self.metas[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._table().start(sweep_trial_id(trial), self._meta(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result and "resolved_config" in result:
            key, table = sweep_trial_id(trial), self._table()
            if result.get("replayed") and table.has(key, int(result["epoch"])):
                return  # a resumed trial re-announcing the epoch of its checkpoint, already recorded
            table.add(key, result, trial.run_metadata.num_failures, self._meta(trial))

    def on_step_end(self, iteration, trials, **info):
        # Tune calls this after every event (a result, a trial's start or end) and at least every 0.1 s.
        if self.table is not None:
            self.table.flush(force=False)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "ERROR")

    def on_experiment_end(self, trials, **info):
        if self.table is not None:
            self.table.flush()

    def _config(self, trial) -> dict:
        """The trial's config as the trial resolved it (as-is if resolving it was the trial's error)."""
        try:
            return trial_config(self.fixed, trial.config).to_dict()
        except ConfigError:
            return {**self.fixed, **point_of(trial.config)}

    def _end(self, trial, status: str) -> None:
        key, table = sweep_trial_id(trial), self._table()
        if key not in self.ended_before:
            if status == "ERROR":
                table.add_unreported(key, self._config(trial), trial.run_metadata.num_failures, self._meta(trial))
            table.end(key, status, trial.run_metadata.num_failures)
