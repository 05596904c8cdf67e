"""Two corrections to stock Ray Tune 2.60 behaviour that a sweep's conclusions depend on.

ReplayASHA: Tuner.restore brings ASHA back with empty rungs (ray-project/ray#30838), so after a resume
it would judge trials against partial history. It replays the sweep's Parquet history (every reported
epoch, in report order) into its rungs before the first trial is added.

PruneAwareOptuna: stock OptunaSearch tells Optuna that an ASHA-stopped trial COMPLETED with its last,
low-epoch score, and TPE then learns from it as if final. Here intermediate values are reported per
epoch (not per training_iteration, which restarts on restore) and stopped trials are told PRUNED.
It also resamples a proposal identical to an existing trial (TPE re-proposes points of a discrete
space; training is deterministic, so a repeat would spend a whole trial to learn nothing).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from search.results import read_results


class _Replayed:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class ReplayASHA(ASHAScheduler):
    def __init__(self, history_path: str, **kwargs):
        super().__init__(**kwargs)
        self._history_path = str(history_path)
        self._replayed = False
        self.replayed_results = 0

    def _replay(self) -> None:
        self._replayed = True
        if not Path(self._history_path).exists():
            return
        df = read_results(self._history_path).sort_values("reported_at")
        bracket = self._brackets[0]
        for tid, epoch, value in zip(df["trial_id"], df["epoch"], df[self._metric]):
            if pd.notna(value):
                bracket.on_result(_Replayed(tid), int(epoch), self._metric_op * float(value))
                self.replayed_results += 1
        print(f"ASHA: replayed {self.replayed_results} reported results into the rungs "
              f"{[(m, len(rec)) for m, rec in bracket._rungs]}", flush=True)

    def on_trial_add(self, tune_controller, trial):
        if not self._replayed:
            self._replay()
        super().on_trial_add(tune_controller, trial)

    def rung_sizes(self) -> list[tuple[float, int]]:
        return [(milestone, len(recorded)) for milestone, recorded in self._brackets[0]._rungs]


class PruneAwareOptuna(OptunaSearch):
    RESAMPLE_ATTEMPTS = 32  # then accept a repeat (a space smaller than num_samples has nothing new)

    def __init__(self, *args, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self.resampled = 0

    def suggest(self, trial_id: str):
        for _ in range(self.RESAMPLE_ATTEMPTS):
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if not isinstance(config, dict) or ot_trial is None or not self._is_repeat(ot_trial):
                return config
            # Failed trials teach TPE nothing, so this discards the proposal without biasing the model.
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            del self._ot_trials[trial_id]
            self.resampled += 1
        return super().suggest(trial_id)

    def _is_repeat(self, ot_trial) -> bool:
        params = ot_trial.params
        return any(t.number != ot_trial.number and t.state != TrialState.FAIL and t.params == params
                   for t in self._ot_study.get_trials(deepcopy=False))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        step = int(result["epoch"])
        if step not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(result[self.metric], step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stopped = (not error and result and self.metric in result
                   and int(result.get("epoch", self._max_epochs)) < self._max_epochs)
        if stopped and trial_id not in self._completed_trials and trial_id in self._ot_trials:
            self.on_trial_result(trial_id, result)
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)
