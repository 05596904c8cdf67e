"""The searcher and the scheduler of a sweep, written against Ray Tune 2.60's Searcher/ASHA interfaces.

StudySearcher asks and tells a persistent Optuna study (search/study.py), one study trial per sweep
trial. In the search stage it proposes points with Optuna's TPE (GRID/INITIAL points first); in the
confirmation stage it hands out a fixed list of (point, seed) jobs. Both stages:
- report one intermediate value per epoch (not per training_iteration, which restarts on restore) and
  tell ASHA-stopped trials PRUNED (stock OptunaSearch tells them COMPLETE with a low-epoch score);
- give a proposal that repeats an earlier search point the next seed instead of retraining the same
  deterministic run, so every study trial is a real trial;
- pickle only a little state (trial id -> study trial number): the study itself lives in its storage, so
  Tune's experiment snapshot stays cheap however many trials the study holds;
- adopt orphans: a trial the study holds as RUNNING but the restored snapshot never heard of (it started
  after the last snapshot) is handed to the next new Tune trial, which continues it from its own
  checkpoints and reports under its original id.

ReplayASHA: Tuner.restore brings ASHA back with empty rungs (ray-project/ray#30838). It replays the
sweep's Parquet history into them before the first trial is added, keys the rungs by the sweep's trial id
(an adopting trial continues its orphan's record), and never stops an audited trial.

limit_snapshot_share: the period of Tune's experiment snapshot, set from its measured cost.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from pbn.config import resolve
from search import analysis
from search.results import CONFIRM, ENDED, SEARCH, read_results
from search.study import RecentTPE, load_study, tell_final

ADOPT = "_adopt"  # trial config key: the sweep trial id this trial continues
AUDIT = "_audit"  # trial config key: exempt from early stopping
META = (ADOPT, AUDIT, "seed")
# Target share of the driver's wall time spent in Tune's experiment snapshot: half the 5% budget, because a
# snapshot can take twice as long as the one before (limit_snapshot_share).
SNAPSHOT_SHARE = 0.025


def limit_snapshot_share(share: float = SNAPSHOT_SHARE) -> None:
    """Tune's adaptive snapshot period (TUNE_GLOBAL_CHECKPOINT_S=auto) is max(10 s, 19 x the last snapshot's
    duration): 5% of the driver's time only if every snapshot takes as long as the one before. Measured
    (benchmarks/driver_scale.py --snapshot-trials), they do not: the cost grows with the trials (Tune keeps
    ~26 KB of state per trial, mostly moving statistics of the ~50 metrics a trial reports: 2-3.4 ms of CPU
    per trial and snapshot) and its wall time varies with the load on the driver's machine: 4.6% and 7.5%
    of the driver's wall time in two runs of 1,000 trials. So the period is max(10 s, (1/share - 1) x the last
    duration). Resuming does not depend on a recent snapshot (trials resume from their own newest
    checkpoint; trials the snapshot never saw are adopted from the study)."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    if not hasattr(_ExperimentCheckpointManager, "_update_auto_checkpoint_time"):
        raise RuntimeError("this Ray version has no _ExperimentCheckpointManager._update_auto_checkpoint_time: "
                           "the project pins ray[tune]==2.60.0 (pyproject.toml)")
    factor = 1 / share - 1

    def update(self, time_taken: float) -> None:
        if self._auto_checkpoint_enabled:
            self._checkpoint_period = max(10.0, time_taken * factor)

    _ExperimentCheckpointManager._update_auto_checkpoint_time = update


def sweep_trial_id(trial) -> str:
    """The id under which a Tune trial's rows, rungs and study trial are kept."""
    return trial.config.get(ADOPT) or trial.trial_id


def point_of(config: dict) -> dict:
    """The searched values of a trial config (without the driver's seed and bookkeeping keys)."""
    return {k: v for k, v in config.items() if k not in META}


def point_json(config: dict) -> str:
    return json.dumps(point_of(config), sort_keys=True)


def trial_config(fixed: dict, config: dict):
    """A trial's resolved pbn Config: the sweep's fixed values overlaid by the trial's point and seed."""
    return resolve({**fixed, **point_of(config), "seed": config.get("seed", fixed.get("seed", 0))})


def audit_schedule(fraction: float, seed: int, n: int) -> bool:
    """Whether the n-th search trial (0-based) is audited: evenly spread with a seeded random offset, so
    round(N x fraction) of any N consecutive trials are, independent of how good they are."""
    if fraction <= 0:
        return False
    u = np.random.default_rng([seed, 7]).random()
    return int((n + 1) * fraction + u) > int(n * fraction + u)


class StudySearcher(Searcher):
    def __init__(self, *, space, metric: str, mode: str, max_epochs: int, storage_url: str, study_name: str,
                 stage: str, results: str, seed: int = 0, base_seed: int = 0, initial: list[dict] | None = None,
                 jobs: list[dict] | None = None, audit_fraction: float = 0.0):
        """stage "search": propose with TPE (seeded), INITIAL points first, training seed base_seed (+1 per
        repeat of a point). stage "confirm": `jobs` = [{"point": {...}, "seed": s}], each once. results: the
        sweep's Parquet path, which says which trials have ended."""
        super().__init__(metric=metric, mode=mode)
        self.results = str(results)
        self.space, self.max_epochs, self.stage = space, max_epochs, stage
        self.storage_url, self.study_name, self.seed, self.base_seed = storage_url, study_name, seed, base_seed
        self.initial, self.jobs, self.audit_fraction = list(initial or []), list(jobs or []), audit_fraction
        self.numbers: dict[str, int] = {}  # Tune trial id -> study trial number
        self.proposed = 0
        self.completed: set[str] = set()
        self.reported: dict[str, set[int]] = {}  # epochs already reported to the study, per Tune trial
        self.device_seconds: dict[str, float] = {}  # per Tune trial: the last device_seconds_total
        self._study = None
        self._orphans: list | None = None
        self._points: Counter | None = None  # how often each point was proposed in this stage
        self._ended_at_start: set[str] | None = None
        self._ids: dict[int, int] = {}  # study trial number -> the storage's trial id

    # ------------------------------------------------------------------------------- state
    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_study", "_orphans", "_points", "_ended_at_start"):  # the study lives in its storage
            state[k] = None
        state["_ids"] = {}
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    @property
    def study(self):
        if self._study is None:
            study = load_study(self.storage_url, self.study_name)
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("stage") == self.stage]
            if not self.numbers:  # a fresh searcher over a study this stage already used (no snapshot to restore)
                ended = self._ended()
                self.proposed = sum(t.user_attrs.get("trial_id") in ended for t in mine)
            self._points = Counter(json.dumps(t.user_attrs.get("point"), sort_keys=True) for t in mine)
            study.sampler = RecentTPE(seed=self.seed + self.proposed)  # a fresh stream after a resume
            # ask() first looks for trials enqueued in WAITING state, scanning the whole study (20 ms at 34,000
            # trials). This searcher never enqueues (it pins a point through the trial itself, _ask below).
            study._pop_waiting_trial_id = lambda: None
            self._study = study
        return self._study

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric, mode and space are this searcher's own

    # ------------------------------------------------------------------------------- proposing
    def _ended(self) -> set[str]:
        """Sweep trials whose end the Parquet file recorded when this searcher started (it may lag the study
        by its last second)."""
        if self._ended_at_start is None:
            self._ended_at_start = set()
            if Path(self.results).exists():
                df = read_results(self.results, ["trial_id", "status"])
                self._ended_at_start = set(df.loc[df["status"].isin(ENDED), "trial_id"])
        return self._ended_at_start

    def _find_orphans(self) -> list:
        """Trials of this stage that no trial of the restored experiment holds and whose end the Parquet file
        does not record: started after Tune's last snapshot, or finished in the study in the last second
        before the driver died, their last rows unwritten. An adopter continues (or just re-reports) them."""
        mine, ended = set(self.numbers.values()), self._ended()
        return [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("stage") == self.stage
                and t.number not in mine and t.user_attrs.get("trial_id") not in ended]

    def suggest(self, trial_id: str):
        if self._orphans is None:
            self._orphans = self._find_orphans()
        if self._orphans:
            t = self._orphans.pop(0)
            self.proposed += 1  # the orphan was proposed after the snapshot this searcher was restored from
            self.numbers[trial_id] = t.number
            cfg = {**t.user_attrs["point"], "seed": t.user_attrs["seed"], ADOPT: t.user_attrs["trial_id"]}
            return {**cfg, AUDIT: True} if t.user_attrs.get("audited") else cfg
        if self.stage == CONFIRM:
            if self.proposed >= len(self.jobs):
                return Searcher.FINISHED
            job = self.jobs[self.proposed]
            return self._ask(trial_id, job["point"], job["seed"], audited=False)
        point = self.initial[self.proposed] if self.proposed < len(self.initial) else None
        return self._ask(trial_id, point, None, audited=audit_schedule(self.audit_fraction, self.seed,
                                                                       self.proposed))

    def _ask(self, trial_id: str, point: dict | None, seed: int | None, audited: bool) -> dict:
        trial = self.study.ask()
        if point is not None:
            # What enqueue_trial arranges (optuna 5.0, pinned), without leaving a WAITING trial in the
            # study if the driver dies between enqueue and ask: the space's suggest_* return these values.
            trial._fixed_params = dict(point)
        constants = self.space(trial) or {}
        params = {**trial.params, **constants}
        if point is not None and params != point:
            raise ValueError(f"point {point} is not in the space: it suggested {params}")
        key = json.dumps(params, sort_keys=True)
        if seed is None:  # a search proposal: the next seed of its point
            seed = self.base_seed + self._points[key]
        self._points[key] += 1
        self.proposed += 1
        self.numbers[trial_id] = trial.number
        # params/gflops arrive with the first epoch (null for a trial that fails before it builds a model).
        # `stage` last: a trial without it was cut short here by a kill, and the driver fails it (run.py).
        for k, v in {"trial_id": trial_id, "point": params, "seed": seed, "audited": audited, "params": None,
                     "gflops": None, "device_seconds": 0.0, "stage": self.stage}.items():
            trial.set_user_attr(k, v)
        cfg = {**params, "seed": seed}
        return {**cfg, AUDIT: True} if audited else cfg

    # ------------------------------------------------------------------------------- telling
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        number = self.numbers.get(trial_id)
        if number is None or trial_id in self.completed or "epoch" not in result:
            return
        storage, tid = self.study._storage, self._study_trial_id(number)
        seen = self.reported.setdefault(trial_id, set())
        try:
            if not seen:
                frozen = storage.get_trial(tid)
                seen |= set(frozen.intermediate_values)  # an adopted/resumed trial's earlier epochs
                for k in ("params", "gflops"):
                    if k in result and frozen.user_attrs.get(k) is None:
                        storage.set_trial_user_attr(tid, k, result[k])
            self.device_seconds[trial_id] = result.get("device_seconds_total", 0.0)
            epoch, value = int(result["epoch"]), result.get(self.metric)
            if epoch not in seen and value is not None and np.isfinite(value):
                storage.set_trial_intermediate_value(tid, epoch, float(value))
            seen.add(epoch)
        except UpdateFinishedTrialError:
            pass  # the study already holds this trial's end (settled from the Parquet file after a crash)

    def _study_trial_id(self, number: int) -> int:
        if number not in self._ids:
            self._ids[number] = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id,
                                                                                          number)
        return self._ids[number]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self.numbers.get(trial_id)
        if number is None or trial_id in self.completed:
            return
        result = result or {}
        if result:  # Tune passes the last result here only (a STOP decision skips on_trial_result)
            self.on_trial_result(trial_id, result)
        self.completed.add(trial_id)
        self.reported.pop(trial_id, None)
        try:  # one write per trial, not per epoch: the journal stays one line per reported epoch
            self.study._storage.set_trial_user_attr(self._study_trial_id(number), "device_seconds",
                                                    self.device_seconds.get(trial_id, 0.0))
        except UpdateFinishedTrialError:
            return
        tell_final(self.study, number, "ERROR" if error else "TERMINATED", result.get(self.metric),
                   int(result.get("epoch", 0)), self.max_epochs, self.stage)


class _Key:
    """What ASHA's bracket reads of a trial: its id (here the sweep's id)."""

    __slots__ = ("trial_id",)

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
        df = read_results(self._history_path, ["trial_id", "epoch", self._metric, "reported_at", "stage"])
        df = df[df["stage"] == SEARCH]
        analysis.asha_replay(self._brackets[0], df, self._metric, self._mode, self._max_t)
        self.replayed_results = int(df[self._metric].notna().sum())
        print(f"ASHA: replayed the {self.replayed_results} search-stage results into the rungs (rung epoch, "
              f"trials): {self.rung_sizes()}", flush=True)

    def on_trial_add(self, tune_controller, trial):
        if not self._replayed:
            self._replay()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        epoch = result[self._time_attr]
        # A resumed trial re-reporting its checkpoint's epochs goes the same way: an epoch already in its rung
        # passes (ASHA judged it when it first ran); one the driver lost is judged now.
        if epoch >= self._max_t:
            return TrialScheduler.STOP
        action = self._brackets[0].on_result(_Key(sweep_trial_id(trial)), epoch,
                                             self._metric_op * result[self._metric])
        if action == TrialScheduler.STOP and trial.config.get(AUDIT):
            return TrialScheduler.CONTINUE  # audited: recorded in the rungs like any trial, never stopped
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict):
        # Stock ASHA records the last result under Tune's trial id; an adopter's belongs to its sweep id. At
        # max_t there is nothing to record: every trial that gets there stops, as the replay assumes.
        if result and self._metric in result and result.get(self._time_attr, self._max_t) < self._max_t:
            self._brackets[0].on_result(_Key(sweep_trial_id(trial)), result[self._time_attr],
                                        self._metric_op * result[self._metric])
        self._trial_info.pop(trial.trial_id, None)

    def rung_sizes(self) -> list[tuple[float, int]]:
        return [(milestone, len(recorded)) for milestone, recorded in self._brackets[0]._rungs]
