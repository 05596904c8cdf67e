"""Every use of a private Ray or Optuna API in this project, behind one check of the installed versions.

The rest of the project uses Ray's and Optuna's public interfaces only (Tuner, Searcher, FIFOScheduler,
Callback, tune.report; Optuna's create/load_study, enqueue_trial, ask, tell, FixedTrial). What is left here
has no public equivalent:
- Optuna: writing an intermediate value or a user attr to a trial the driver no longer holds as a live
  `Trial` (a resumed sweep's trial, told from the Parquet file); the journal's snapshot hook and interval;
  a TPE sampler that reads only the newest trials of a large journal study.
- Ray: asking a cluster's GCS whether it accepts this driver's token (an immediate answer, where ray.init
  retries for ~20 s); reading the autoscaler's published status; validating a cluster launcher YAML.

Each was read in the pinned versions (pyproject.toml). An upgrade of either package fails here, at
import, with what to do, instead of somewhere deep inside a sweep.
"""

from __future__ import annotations

import copy
import json
from importlib.metadata import version

import optuna

RAY_VERSION, OPTUNA_VERSION = "2.60.0", "5.0.0"


class CompatError(RuntimeError):
    """The installed Ray or Optuna is not the version this module was written against."""


def check_versions(ray_version: str | None = None, optuna_version: str | None = None) -> None:
    """Read from the installed distributions' metadata, so that checking does not import Ray."""
    found = {"ray": (ray_version or version("ray"), RAY_VERSION),
             "optuna": (optuna_version or version("optuna"), OPTUNA_VERSION)}
    wrong = [f"{name} {have} (this project pins {want})" for name, (have, want) in found.items() if have != want]
    if wrong:
        raise CompatError(
            f"installed {' and '.join(wrong)}: search/compat.py reaches into private APIs of the pinned versions. "
            "Reinstall with `pip install -e .` (pyproject.toml pins them), or, to upgrade, re-read each use in "
            "search/compat.py against the new sources and change the pins.")


check_versions()

from optuna.storages.journal import _storage as _journal_storage  # noqa: E402
from optuna.storages.journal._base import BaseJournalSnapshot  # noqa: E402  (after the version check)

# Optuna 5.0 pickles its whole replayed journal state every 100 new trials: 1.2 s at 34,000 trials, a stall of
# the driver's event loop. Every 1,000 trials costs ~1.2 ms per trial, and a resume replays at most 1,000
# trials' lines after the snapshot (benchmarks/driver_scale.py).
_journal_storage.SNAPSHOT_INTERVAL = 1000
JournalSnapshot = BaseJournalSnapshot  # a journal backend that also implements save/load_snapshot


# ------------------------------------------------------------------------------------------------ Optuna
def set_intermediate(study: optuna.Study, trial: optuna.trial.FrozenTrial, step: int, value: float) -> None:
    """trial.report(value, step) for a trial this process did not ask (a resumed one)."""
    study._storage.set_trial_intermediate_value(trial._trial_id, step, value)


def set_user_attr(study: optuna.Study, trial: optuna.trial.FrozenTrial, key: str, value) -> None:
    """trial.set_user_attr(key, value) for a trial this process did not ask."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def save_journal_snapshot(storage) -> None:
    """Have a JournalStorage write the snapshot it writes every SNAPSHOT_INTERVAL trials, now."""
    import pickle

    storage._backend.save_snapshot(pickle.dumps(storage._replay_result))


def frozen_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """One trial by number without listing the study (a journal study lists in O(trials))."""
    storage = study._storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))


class RecentTPE(optuna.samplers.TPESampler):
    """Optuna's TPE over at most WINDOW trials of each kind it asks for: the most recent ones. TPE's cost per
    proposal grows with the study; over the last 500 it stays flat (benchmarks/driver_scale.py), and 500 recent
    trials are ample to model a space of a few names. Below WINDOW trials nothing changes. One view per
    proposal: TPE lists the study's trials several times for one ask."""

    WINDOW = 500

    def _view(self, study):
        if getattr(self, "_current", None) is None or self._current._study is not study:
            self._current = _Recent(study, self.WINDOW)
        return self._current

    def before_trial(self, study, trial):
        self._current = _Recent(study, self.WINDOW)
        super().before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return super().infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(self._view(study), trial, param_name, param_distribution)


class _Recent:
    """A study as TPE sees it: everything delegated, except that trial lists keep their last `window`."""

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
        # A JournalStorage lists a study by scanning every trial: walk its trial ids from the newest instead.
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


# --------------------------------------------------------------------------------------------------- Ray
def gcs_accepts(address: str) -> bool | None:
    """Whether the GCS at `address` accepts this process's credentials: True, False (an authentication failure),
    or None when it cannot tell (not a GCS, another failure), in which case ray.init decides as it always did."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address)
    except AuthenticationError:
        return False
    except Exception:
        return None
    return True


def autoscaler_status() -> dict | None:
    """The status an autoscaler (v1 monitor) publishes in the cluster's KV store every update, as a dict;
    None if no autoscaler publishes one. Needs a connected driver."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return None
    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    return json.loads(raw) if raw else None


def validate_cluster_config(config: dict) -> None:
    """What `ray up` checks of a cluster launcher config before it launches anything (no cloud access)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
