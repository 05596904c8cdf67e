"""Ray Tune as an executor: one batch of trials, from the study and the Parquet file, back into both.

A batch is a stage of a sweep, or one round of the confirmation race. The driver (search/run.py) decides its
work from the sweep's state: trials to continue (RUNNING in the study, not ended in the Parquet file) and how
many new ones to make. A fresh Tuner runs them; nothing here reads Tune's experiment snapshot, and nothing a
later driver does depends on one. Three pieces, all on the driver:
- `JobSearcher` hands Tune the continuing trials, then asks the study for new ones (study.TrialMaker);
- `RungScheduler` is ASHA (search/asha.py) over the sweep's trial ids, its rungs replayed from the Parquet
  history before the batch starts;
- `Recorder` is the one writer of trial state: each reported epoch goes to the Parquet table, then to the
  study; a trial's end is flushed to the Parquet file, then told to the study. So the study never lacks
  what the Parquet file holds, and a trial's end on disk always precedes its end in the study; a resumed
  driver settles the one possible difference (study.reconcile). A trial is finished when it reached its
  last epoch, when ASHA stopped it, or when its retries ran out (ERROR); an interruption (Ctrl-C, a
  killed driver) finishes nothing, and the next driver continues such trials from their checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from ray.tune import Callback, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from pbn.config import ConfigError
from search import compat
from search.asha import Rungs
from search.results import ResultsTable
from search.study import Job, record_epoch, tell_final
from search.trainable import AUDIT, PRECISION, TRIAL, trial_config

log = logging.getLogger(__name__)
# Tune's own loggers (JSON, CSV, TensorBoard of every reported key) are off: the Parquet file and the driver's
# TensorBoard runs (search/console.py) hold what a user reads. The experiment snapshot is never read (module
# doc); taken rarely, it costs the driver nothing while trials run.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3600")


@dataclass
class Batch:
    """What one batch shares between the searcher, the scheduler and the recorder."""

    stage: str
    study: optuna.Study
    table: ResultsTable
    metric: str
    mode: str
    max_epochs: int
    continuing: list[Job]
    ask: Callable[[], Job | None]  # a new trial, or None when the batch has made all it should
    fixed: dict = field(default_factory=dict)  # the sweep's fixed config (for the row of a trial that never reported)
    rungs: Rungs | None = None
    events: list = field(default_factory=list)  # listeners (search/console.py: Console, TensorBoard)
    sync: Callable[[bool], None] = lambda force: None  # copy the study to the sweep's storage (search/mirror.py)
    precision: str | None = None  # the sweep's pinned precision ("auto" resolved by its first trial), if any
    pin_precision: bool = False  # whether the study leaves precision to "auto" (so the first report pins it)
    jobs: dict[str, Job] = field(default_factory=dict)  # trial id -> job, as handed to Tune
    stopped: set[str] = field(default_factory=set)  # trials ASHA stopped in this batch
    judged: dict = field(default_factory=dict)  # (trial, rung epoch) -> "kept" / "stopped" / "would stop"
    failures: dict[str, int] = field(default_factory=dict)  # restarts after a failure, per trial

    def emit(self, event: str, *args) -> None:
        for listener in self.events:
            method = getattr(listener, event, None)
            if method is not None:
                method(*args)


class _DriverOnly:
    """Tune pickles its search algorithm, scheduler and callbacks into the experiment's files, which nothing
    here reads back (module doc): they pickle as empty shells instead of dragging the study and the table."""

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__dict__.update(state)


def _trial_dirname(trial) -> str:
    """Tune's directory for a trial: the sweep's trial id (a module-level function: Tune pickles it)."""
    return trial.config[TRIAL]


class JobSearcher(_DriverOnly, Searcher):
    def __init__(self, batch: Batch):
        super().__init__()
        self.batch, self.queue = batch, list(batch.continuing)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the batch knows its metric; the study its space

    def suggest(self, trial_id: str):
        if self.queue:
            job = self.queue.pop(0)
        else:
            job = self.batch.ask()
            self.batch.sync(True)  # the new trial is on the storage before it can report anything
        if job is None:
            return Searcher.FINISHED
        self.batch.jobs[job.trial_id] = job
        config = {**job.point, "seed": job.seed, TRIAL: job.trial_id}
        if self.batch.precision:
            config[PRECISION] = self.batch.precision
        return {**config, AUDIT: True} if job.audited else config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the Recorder tells the study

    def save(self, checkpoint_path: str) -> None:
        pass  # the study is the searcher's state

    def restore(self, checkpoint_path: str) -> None:
        pass


class RungScheduler(_DriverOnly, FIFOScheduler):
    """ASHA over the sweep's trial ids; an audited trial is recorded in the rungs and never stopped."""

    def __init__(self, batch: Batch):
        super().__init__()
        self.batch, self.sign = batch, 1.0 if batch.mode == "max" else -1.0

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        b = self.batch
        if "epoch" not in result or b.metric not in result or result["epoch"] >= b.max_epochs:
            return TrialScheduler.CONTINUE
        tid = trial.config[TRIAL]
        value = result[b.metric]
        epoch = int(result["epoch"])
        verdict = b.rungs.judge(tid, epoch, self.sign * value if value is not None else math.nan)
        stop = verdict == "stop"
        if verdict:
            b.judged[(tid, epoch)] = ("would stop" if trial.config.get(AUDIT) else "stopped") if stop else "kept"
        if stop and not trial.config.get(AUDIT):
            b.stopped.add(tid)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


class Recorder(_DriverOnly, Callback):
    def __init__(self, batch: Batch):
        self.batch = batch
        self.seen: dict[str, set[int]] = {}  # epochs the study holds, per trial
        self.frozen: dict[str, optuna.trial.FrozenTrial] = {}
        self.costs: dict[str, float] = {}  # device seconds so far, per trial
        self.before: dict[str, int] = {}  # failures recorded before this batch, per trial

    def _job(self, trial) -> Job:
        return self.batch.jobs[trial.config[TRIAL]]

    def _frozen(self, job: Job) -> optuna.trial.FrozenTrial:
        if job.trial_id not in self.frozen:
            self.frozen[job.trial_id] = compat.frozen_trial(self.batch.study, job.number)
            self.seen[job.trial_id] = set(self.frozen[job.trial_id].intermediate_values)
        return self.frozen[job.trial_id]

    def _meta(self, job: Job) -> dict:
        return {"stage": job.stage, "seed": job.seed, "point": job.point_key, "audited": job.audited}

    def _failures(self, job: Job) -> int:
        """Restarts after a failure: in earlier batches (as the table had them) and in this one."""
        return self.before.get(job.trial_id, 0) + self.batch.failures.get(job.trial_id, 0)

    def on_trial_start(self, iteration, trials, trial, **info):
        job = self._job(trial)
        if job.trial_id not in self.before:
            known = self.batch.table.trials.get(job.trial_id)
            self.before[job.trial_id] = known.num_failures if known else 0
        self.batch.table.start(job.trial_id, self._meta(job))
        self.batch.emit("started", job)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or "resolved_config" not in result:
            return
        b, job = self.batch, self._job(trial)
        epoch = int(result["epoch"])
        if result.get("replayed") and b.table.has(job.trial_id, epoch):
            return  # a restarted trial re-announcing an epoch of its checkpoint, already recorded
        b.table.add(job.trial_id, result, self._failures(job), self._meta(job))
        frozen = self._frozen(job)
        record_epoch(b.study, frozen, epoch, result.get(b.metric), self.seen[job.trial_id])
        if job.trial_id not in self.costs:  # the trial's first result in this batch: its model's cost
            for key in ("params", "gflops"):
                if key in result and frozen.user_attrs.get(key) is None:
                    compat.set_user_attr(b.study, frozen, key, result[key])
        self.costs[job.trial_id] = result.get("device_seconds_total", 0.0)
        self._check_precision(job, result.get("precision"))
        b.emit("epoch", job, result, b.judged.pop((job.trial_id, epoch), None))

    def _check_precision(self, job: Job, precision: str | None) -> None:
        """The first trial's resolved precision becomes the sweep's (later trials are given it); a trial that
        started before that and resolved otherwise (a mixed cluster) is reported."""
        b = self.batch
        if not b.pin_precision or precision is None:
            return
        if b.precision is None:
            b.precision = precision
            b.study.set_user_attr("precision", precision)
        elif precision != b.precision:
            log.warning("trial %s trains in %s where the sweep trains in %s (a cluster of mixed hardware?): its "
                        "point's replicates mix precisions; pin one with --set precision=...", job.trial_id,
                        precision, b.precision)

    def on_trial_recover(self, iteration, trials, trial, **info):
        job = self._job(trial)
        self.batch.failures[job.trial_id] = self.batch.failures.get(job.trial_id, 0) + 1
        self.batch.emit("recovering", job, _error_line(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        job = self._job(trial)
        self.batch.failures[job.trial_id] = self.batch.failures.get(job.trial_id, 0) + 1
        self._end(job, "ERROR", _error_line(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        b, job = self.batch, self._job(trial)
        info_ = b.table.trials.get(job.trial_id)
        last = info_.last if info_ else 0
        if last >= b.max_epochs or job.trial_id in b.stopped:
            self._end(job, "TERMINATED")
        else:  # Tune stopped it for no reason of the sweep's (an interruption): it is continued later
            log.info("trial %s left at epoch %d of %d: not finished", job.trial_id, last, b.max_epochs)
            b.emit("interrupted", job)

    def _end(self, job: Job, status: str, reason: str = "") -> None:
        b = self.batch
        if status == "ERROR":  # a row even if it never reported (add_unreported keeps existing rows)
            b.table.add_unreported(job.trial_id, self._config(job), self._failures(job), self._meta(job))
        b.table.end(job.trial_id, status, self._failures(job))
        b.table.flush_trial(job.trial_id)  # on disk before the study hears of it
        frozen = self._frozen(job)
        compat.set_user_attr(b.study, frozen, "device_seconds", self.costs.get(job.trial_id, 0.0))
        info = b.table.trials[job.trial_id]
        last_row = b.table.rows.get(job.trial_id, {}).get(info.last, {})
        tell_final(b.study, job.number, status, last_row.get(b.metric), info.last, b.max_epochs, job.stage)
        b.sync(True)
        b.emit("ended", job, status, info.last, last_row, reason)

    def _config(self, job: Job) -> dict:
        """The trial's resolved config (as the sweep wrote it, if resolving it was the trial's error)."""
        config = {**job.point, "seed": job.seed}
        try:
            return trial_config(self.batch.fixed, config).to_dict()
        except ConfigError:
            return {**self.batch.fixed, **config}

    def on_step_end(self, iteration, trials, **info):
        # Tune calls this after every event and at least every 0.1 s: a Parquet write when one is due.
        self.batch.table.flush(force=False)
        self.batch.sync(False)

    def on_experiment_end(self, trials, **info):
        self.batch.table.flush()
        self.batch.sync(True)


class _NoRestoreHint(logging.Filter):
    """Tune answers an interruption with "Resume experiment with: Tuner.restore(...)": not how a sweep resumes
    (the driver prints its own hint: the same command plus --resume)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


def _error_line(trial) -> str:
    """The last line of a trial's error, e.g. 'NonFiniteLossError: non-finite training loss ...'."""
    path = getattr(trial, "error_file", None)
    try:
        text = open(path).read().strip() if path else ""
    except OSError:
        text = ""
    return text.splitlines()[-1][:300] if text else ""


def run_batch(batch: Batch, trainable, *, num_samples: int, storage_path: str, name: str,
              concurrency: int | None, verbose: bool) -> float:
    """Run one batch to its end (or an interruption); returns its wall seconds."""
    t0 = time.time()
    # Tune's console: its tables with --verbose; otherwise silent (its legacy engine at verbosity 0 prints
    # nothing; the new one prints a box per experiment whatever the verbosity). With no per-trial result files
    # (loggers off), its ResultGrid warns about each trial: that grid is never read here.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose else "0"
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.WARNING if verbose else logging.ERROR)
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoRestoreHint())
    tuner = Tuner(
        trainable,
        tune_config=TuneConfig(search_alg=JobSearcher(batch), scheduler=RungScheduler(batch) if batch.rungs else None,
                               num_samples=num_samples, max_concurrent_trials=concurrency, reuse_actors=True,
                               trial_dirname_creator=_trial_dirname),
        run_config=RunConfig(name=name, storage_path=storage_path, verbose=2 if verbose else 0,
                             callbacks=[Recorder(batch)], failure_config=FailureConfig(max_failures=3)),
    )
    try:
        tuner.fit()
    finally:
        batch.emit("batch_ended")
    return time.time() - t0
