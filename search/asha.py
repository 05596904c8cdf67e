"""Asynchronous successive halving (ASHA) as plain data: the rungs a sweep's search stage is judged at.

The same rungs serve the live driver (search/executor.py wraps them in a Tune scheduler), a resumed driver
(the Parquet history replayed into them, in the order it was reported, reproduces every decision the
interrupted driver made) and the report (what ASHA would have done with the audited trials). No Ray here:
the report computes rung epochs without it. The rule is Ray Tune's ASHA with one bracket, pinned by a test
against `ray.tune.schedulers.ASHAScheduler`: rungs at grace * rf^k; the first time a trial reaches a rung
its value is recorded there, and it is stopped if it is below the rung's (1 - 1/rf) quantile of the values
recorded before it (so the first trial to reach a rung always goes on).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

import numpy as np


class Rungs:
    def __init__(self, grace: int, reduction_factor: float, max_t: int):
        if grace < 1 or reduction_factor < 2 or max_t < grace:
            raise ValueError(f"ASHA needs 1 <= grace <= max_t and reduction factor >= 2, got grace {grace}, "
                             f"reduction factor {reduction_factor}, max_t {max_t}")
        self.grace, self.rf, self.max_t = grace, reduction_factor, max_t
        count = int(np.log(max_t / grace) / np.log(reduction_factor) + 1)
        self.milestones = [grace * reduction_factor**k for k in reversed(range(count))]  # highest first
        self.recorded: dict[float, dict[str, float]] = {m: {} for m in self.milestones}
        self._sorted: dict[float, list[float]] = {m: [] for m in self.milestones}  # the same values, ascending

    def epochs(self) -> list[int]:
        """The epochs below max_t at which trials are judged, ascending."""
        return sorted(int(m) for m in self.milestones if m < self.max_t)

    def cutoff(self, milestone: float) -> float | None:
        """The rung's (1 - 1/rf) quantile of the values recorded so far (None for none): numpy's default
        ("linear") percentile, as Ray's ASHA computes it, to the last bit, from the rung's sorted values in
        O(1), so replaying 10^6 rows is not quadratic."""
        return percentile_sorted(self._sorted[milestone], (1 - 1 / self.rf) * 100)

    def judge(self, trial_id: str, epoch: int, value: float) -> str | None:
        """Record a result (`value` signed so that higher is better): "stop" or "keep" when it is the trial's
        first at a rung, None when no rung records it (not a rung epoch, a non-finite value, or a resumed trial
        re-reporting an epoch its rung already holds)."""
        if value is None or not math.isfinite(value):
            return None
        for milestone in self.milestones:
            recorded = self.recorded[milestone]
            if epoch < milestone or trial_id in recorded:
                continue
            cutoff = self.cutoff(milestone)
            recorded[trial_id] = value
            bisect.insort(self._sorted[milestone], value)
            return "stop" if cutoff is not None and value < cutoff else "keep"
        return None

    def on_result(self, trial_id: str, epoch: int, value: float) -> bool:
        """judge(): True if the trial is stopped here."""
        return self.judge(trial_id, epoch, value) == "stop"

    def replay(self, results: Iterable[tuple[str, int, float]]) -> dict[str, int]:
        """Feed (trial_id, epoch, signed value) in the order they were reported; returns trial -> the first epoch
        at which it would have been stopped (whether or not it was, e.g. an audited trial). Only rung epochs
        change the rungs (a trial's epochs are contiguous), so callers may pass those rows alone."""
        stops: dict[str, int] = {}
        for trial_id, epoch, value in results:
            if epoch < self.max_t and self.on_result(trial_id, int(epoch), value) and trial_id not in stops:
                stops[trial_id] = int(epoch)
        return stops

    def sizes(self) -> list[tuple[int, int]]:
        """(rung epoch, trials recorded there), highest first."""
        return [(int(m), len(self.recorded[m])) for m in self.milestones]


def percentile_sorted(values: list[float], q: float) -> float | None:
    """`np.percentile(values, q)` (method "linear") of an ascending list of finite floats, bit for bit: numpy's
    virtual index (n - 1) * q / 100 and its two-sided interpolation (from below for a fraction under 0.5, from
    above otherwise). None for an empty list."""
    n = len(values)
    if not n:
        return None
    index = (n - 1) * (q / 100)
    lo = math.floor(index)
    hi = min(lo + 1, n - 1)
    a, b, t = values[lo], values[hi], index - lo
    return float(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)


def rung_epochs(grace: int | None, reduction_factor: float | None, max_t: int) -> list[int]:
    """ASHA's judging epochs below max_t for a sweep's settings ([] without early stopping)."""
    return Rungs(grace, reduction_factor, max_t).epochs() if grace else []


def replay_frame(rungs: Rungs, history, metric: str, mode: str) -> dict[str, int]:
    """Replay a Parquet frame (trial_id, epoch, the metric, reported_at) into `rungs` in report order. Reads only
    rung-epoch rows, so 10^6 rows replay in about a second."""
    sign = 1.0 if mode == "max" else -1.0
    epochs = {int(m) for m in rungs.milestones if m < rungs.max_t}
    rows = history[history["epoch"].isin(epochs)].sort_values("reported_at", kind="stable")
    return rungs.replay(zip(rows["trial_id"].to_numpy(), rows["epoch"].to_numpy(),
                            sign * rows[metric].to_numpy(dtype=float)))
