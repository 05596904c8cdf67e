"""What a person watches during a sweep: the console, and TensorBoard runs named by what they trained.

Console (stdout): the plan; one line per trial event (started, judged at a rung: kept or stopped, finished,
failed with its one-line reason); a progress line per stage (done / running / pending, elapsed, an estimate of
the time left from the epoch times measured so far), as a live bar on a terminal and as plain lines otherwise;
each look of the confirmation race; the verdict. Numbers carry the decimals their interval justifies, and a
search-stage result is only ever a single seed at one epoch, and says so. Ray Tune's own tables appear with
--verbose only.

TensorBoard (`<results>/<name>/tensorboard`): one run per trial, `<stage>/<point> seed <s>`, with the scalars
that mean something (the metric and its interval, visible and occluded PCKh, losses, lr, images per second)
and an HParams entry per finished trial. The runs are a view of the Parquet file: a trial continued by a new
driver has its run rewritten from its rows first, so its curve goes on without a duplicate step.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

from search.analysis import point_label

TB_SCALARS = {"pckh": "PCKh/mean", "pckh_lo": "PCKh/ci_low", "pckh_hi": "PCKh/ci_high",
              "pckh_visible": "PCKh/visible", "pckh_occluded": "PCKh/occluded", "train_loss": "loss/train",
              "val_loss": "loss/val", "lr": "lr", "images_per_second": "images_per_second"}
WORDS = {"better": "better", "worse": "worse", "equivalent": "equivalent", "undecided": "undecided"}


def decimals(lo: float, hi: float) -> int:
    """Decimals an interval of this width justifies: its half-width's first significant digit, 0 to 2."""
    half = (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else math.nan
    if not math.isfinite(half) or half == 0:  # no interval, or one the metric's resolution collapsed
        return 1
    return 0 if half >= 2 else 1 if half >= 0.2 else 2


def value_text(v: float, lo: float = math.nan, hi: float = math.nan, signed: bool = False) -> str:
    """'21.3 [20.5, 22.1]': a value and its interval at the precision the interval justifies."""
    if v is None or not math.isfinite(v):
        return "n/a"
    d = decimals(lo, hi)
    f = f"{{:{'+' if signed else ''}.{d}f}}"
    text = f.format(v)
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{f.format(lo)}, {f.format(hi)}]"
    return text


class Console:
    def __init__(self, plan, verbose: bool = False, out=None, concurrency: int | None = None):
        self.plan, self.verbose, self.concurrency = plan, verbose, concurrency
        self.out = out or sys.stdout
        self.live = hasattr(self.out, "isatty") and self.out.isatty()
        self.bar = None
        self.t0 = time.time()
        self.stage_t0 = time.time()
        self.counts = {"done": 0, "running": 0, "pending": 0, "total": 0}
        self.epoch_seconds: list[float] = []
        self.epochs_left: dict[str, int] = {}
        self.last_progress = time.time()

    # -------------------------------------------------------------------------------------------- output
    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def plan_lines(self, space, resources: dict, resumed: bool, measured: float | None = None) -> None:
        p = self.plan
        rungs = ""
        if p.grace_period:
            from search.asha import rung_epochs

            epochs = rung_epochs(p.grace_period, p.reduction_factor, p.max_epochs)
            rungs = (f", ASHA judging at epochs {', '.join(map(str, epochs))} ({p.audit_fraction:.0%} audited: never "
                     "stopped)")
        self.line(f"{'Resuming' if resumed else 'Sweep'} {p.name!r} ({Path(p.space).name}): metric {p.metric} "
                  f"({p.mode}imised)")
        self.line(f"  search stage: {p.num_samples} trials of up to {p.max_epochs} epochs{rungs}")
        if p.confirm_max_seeds:
            v = p.verdict
            ref = ", ".join(f"{k} {val}" for k, val in (v["reference"] or {}).items())
            fam = {"vs-reference": f"each point vs the {ref} representative", "all-pairs": "all pairs",
                   "best": "comparisons with the best"}[v["family"]]
            looks = [n for n in p.design().looks]
            second = (f"; {v['secondary']} at alpha {v['secondary_alpha']:g}" if v["secondary"] and
                      v["secondary_alpha"] else (f"; {v['secondary']} descriptive" if v["secondary"] else ""))
            top = f" and the top {p.confirm_top}" if p.confirm_top else ""
            self.line(f"  confirmation race: each grouping's representative{top}, {fam}, "
                      f"looks at {', '.join(map(str, looks))} paired seeds, margin {v['margin']:g} {v['primary']}, "
                      f"family-wise error {v['alpha']:g} ({v['primary']} at "
                      f"{v['alpha'] - (v['secondary_alpha'] if v['secondary'] else 0):g}{second})")
        else:
            self.line("  no confirmation stage (--confirm-max-seeds 0): single-seed results only")
        gpu = f", {resources['gpu']:g} GPU" if resources.get("gpu") else ""
        self.line(f"  each trial: {resources['cpu']:g} CPU{gpu}; at once: "
                  f"{self.concurrency or 'as many as the cluster fits'}")
        self.line("  " + cost_line(p, space, resources, measured))

    # ------------------------------------------------------------------------------------ batch events
    def batch_started(self, stage: str, continuing: list, new: int, table) -> None:
        self.stage_t0 = time.time()
        done = sum(1 for t in table.trials.values() if t.meta.get("stage") == stage and t.status != "RUNNING")
        self.counts = {"done": done, "running": 0, "pending": len(continuing) + new,
                       "total": done + len(continuing) + new}
        self.epochs_left = {}
        parts = [f"{len(continuing)} to continue"] if continuing else []
        parts += [f"{new} new"] if new else []
        self.line(f"\n{stage} stage: {', '.join(parts)} ({done} already finished)")
        if self.live:
            from tqdm import tqdm

            self.bar = tqdm(total=self.counts["total"], initial=done, desc=stage, unit="trial", file=self.out,
                            leave=False, dynamic_ncols=True)

    def batch_ended(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _progress(self) -> None:
        c = self.counts
        left = self.time_left()
        text = (f"{c['done']}/{c['total']} done, {c['running']} running, {c['pending']} pending, "
                f"{_duration(time.time() - self.stage_t0)} elapsed" + (f", ~{_duration(left)} left" if left else ""))
        if self.bar is not None:
            self.bar.n = c["done"]
            self.bar.set_postfix_str(text.split(", ", 1)[1], refresh=True)
            return
        step = max(1, c["total"] // 5)  # plain lines: about five per stage, and the last
        if c["done"] % step == 0 or c["done"] == c["total"] or time.time() - self.last_progress > 300:
            self.last_progress = time.time()
            self.line(f"  progress: {text}")

    def time_left(self) -> float | None:
        """Epochs still to train (running trials' and pending ones' at most MAX_EPOCHS each) x the mean measured
        epoch time / the trials that run at once (as many as ran so far)."""
        if not self.epoch_seconds:
            return None
        epochs = sum(self.epochs_left.values()) + self.counts["pending"] * self.plan.max_epochs
        parallel = max(1, self.concurrency or max(1, self.counts["running"]))
        return epochs * (sum(self.epoch_seconds) / len(self.epoch_seconds)) / parallel

    def started(self, job) -> None:
        self.counts["running"] += 1
        self.counts["pending"] = max(0, self.counts["pending"] - 1)
        self.epochs_left[job.trial_id] = self.plan.max_epochs
        self.line(f"[{job.stage}] {job.trial_id} started: {point_label(job.point)}, seed {job.seed}"
                  + (" (audited: never stopped early)" if job.audited else ""))

    def epoch(self, job, result: dict, judged: str | None) -> None:
        """judged: None (not a rung epoch), "kept", "stopped" or "would stop" (an audited trial)."""
        epoch = int(result["epoch"])
        if not result.get("replayed") and "epoch_seconds" in result:
            self.epoch_seconds.append(float(result["epoch_seconds"]))
        self.epochs_left[job.trial_id] = max(0, self.plan.max_epochs - epoch)
        if judged:
            m = self.plan.metric
            v = value_text(result.get(m, math.nan), result.get(f"{m}_lo", math.nan), result.get(f"{m}_hi", math.nan))
            self.line(f"[{job.stage}] {job.trial_id} epoch {epoch}: {m} {v} (single seed) -> {judged} by ASHA")

    def recovering(self, job, reason: str) -> None:
        self.line(f"[{job.stage}] {job.trial_id} failed, retrying from its last checkpoint: {reason or 'see Ray log'}")

    def ended(self, job, status: str, last: int, row: dict, reason: str) -> None:
        self.counts["running"] = max(0, self.counts["running"] - 1)
        self.counts["done"] += 1
        self.epochs_left.pop(job.trial_id, None)
        if status == "ERROR":
            self.line(f"[{job.stage}] {job.trial_id} FAILED at epoch {last}: {reason or 'see the Ray log above'}")
        else:
            m = self.plan.metric
            v = value_text(row.get(m, math.nan), row.get(f"{m}_lo", math.nan), row.get(f"{m}_hi", math.nan))
            what = "stopped early" if last < self.plan.max_epochs else "finished"
            self.line(f"[{job.stage}] {job.trial_id} {what} at epoch {last}: {m} {v} (single seed, epoch {last})")
        self._progress()

    def interrupted(self, job) -> None:
        self.counts["running"] = max(0, self.counts["running"] - 1)

    # ------------------------------------------------------------------------------------------ the race
    def race_look(self, state, points: list[str], reference: str | None) -> None:
        decided = [c for c in state.contrasts if c["decision"] != "undecided"]
        where = f"look at {state.look} seeds" if state.look else "final"
        self.line(f"\nconfirmation race ({where}): {len(decided)} of {len(state.contrasts)} contrasts decided")
        for c in state.contrasts:
            if c["n_seeds"] == 0:
                continue
            b = "the others' best" if c["b"] == "max(others)" else point_label(c["b"])
            lo, hi = (c["eq_lo"], c["eq_hi"]) if c["decision"] == "equivalent" else (c["lo"], c["hi"])
            self.line(f"  {point_label(c['a'])} vs {b}: {c['decision']} "
                      f"({value_text(c['diff'], lo, hi, signed=True)} {c['metric']}, {c['n_seeds']} seeds)")
        if not state.finished:
            seeds = sorted({i for idx in state.next_seeds.values() for i in idx})
            self.line(f"  next: seed{'s' if len(seeds) > 1 else ''} {_ranges(seeds)} for "
                      f"{len(state.next_seeds)} point{'s' if len(state.next_seeds) > 1 else ''}: "
                      f"{', '.join(point_label(p) for p in state.next_seeds)}")

    # ------------------------------------------------------------------------------------------- closing
    def closing(self, paths, seconds: float) -> None:
        from search.report import summary_lines
        from search.results import read_results

        df = read_results(paths.parquet)
        self.line(f"\nSweep {paths.name!r}: {df['trial_id'].nunique()} trials, {len(df)} epoch rows, "
                  f"{_duration(seconds)} wall")
        self.line("\n".join(summary_lines(df, self.plan)))
        self.line(f"\nresults: pandas.read_parquet({str(paths.parquet)!r})")
        self.line(f"report:  python -m search.report {paths.parquet}")
        self.line(f"curves:  tensorboard --logdir {paths.tensorboard}")
        self.line(f"study:   optuna-dashboard {paths.optuna}" if "://" not in paths.optuna else
                  f"study:   {paths.optuna} (study {paths.name!r})")


def cost_line(plan, space, resources: dict, measured: float | None) -> str:
    """The sweep's expected cost in device-hours (GPUs per trial, else CPUs, x wall hours), from the epochs
    analysis.expected_epochs predicts and an epoch's seconds: measured (a resumed sweep's median) or the study's
    SECONDS_PER_EPOCH estimate."""
    from search.analysis import expected_epochs

    points = space.groupings + plan.confirm_top if plan.confirm_max_seeds else 0
    e = expected_epochs(plan, points)
    devices, unit = (resources["gpu"], "GPU") if resources.get("gpu") else (resources["cpu"], "CPU")
    seconds, source = (measured, "measured median") if measured else (space.seconds_per_epoch,
                                                                       "the study's SECONDS_PER_EPOCH estimate")
    epochs = (f"~{e['search']:.0f} search epochs" + (f" + {e['race_min']}-{e['race_max']} race epochs ({points} "
              f"points, first look to the cap)" if e["race_max"] else ""))
    if not seconds:
        return f"expected: {epochs} (set SECONDS_PER_EPOCH in the study file for a cost in {unit}-hours)"
    low = (e["search"] + e["race_min"]) * seconds * devices / 3600
    high = (e["search"] + e["race_max"]) * seconds * devices / 3600
    scale, per = (1, "hours") if high >= 1 else (60, "minutes")
    amount = f"{low * scale:.1f}-{high * scale:.1f}" if high > low else f"{low * scale:.1f}"
    return (f"expected cost: {epochs} x {seconds:.{1 if seconds < 10 else 0}f} s ({source}) x {devices:g} {unit} = "
            f"{amount} {unit}-{per}")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def _ranges(xs: list[int]) -> str:
    if not xs:
        return "none"
    return f"{xs[0]}" if len(xs) == 1 else f"{xs[0]}-{xs[-1]}" if xs == list(range(xs[0], xs[-1] + 1)) else str(xs)


class TensorBoard:
    """Event files per trial under `root`, written by the driver as results arrive (the same events as Console)."""

    def __init__(self, root: Path, metric: str):
        self.root, self.metric = Path(root), metric
        self.writers: dict[str, object] = {}
        self.table = None

    def run_dir(self, job) -> Path:
        label = point_label(job.point).replace("/", "_")
        return self.root / job.stage / f"{label} seed {job.seed}"

    def batch_started(self, stage: str, continuing: list, new: int, table) -> None:
        self.table = table

    def epoch(self, job, result: dict, judged: str | None) -> None:
        w = self.writers.get(job.trial_id)
        if w is not None:
            self._scalars(w, result)
            return
        from tensorboardX import SummaryWriter

        d = self.run_dir(job)
        shutil.rmtree(d, ignore_errors=True)  # a view of the Parquet rows: rewritten whole, no step twice
        w = self.writers[job.trial_id] = SummaryWriter(str(d), flush_secs=5)
        for row in sorted(self.table.rows.get(job.trial_id, {}).values(), key=lambda r: r["epoch"]):
            self._scalars(w, row)  # every epoch recorded so far, this one included

    def _scalars(self, w, row: dict) -> None:
        epoch = int(row["epoch"])
        for key, tag in TB_SCALARS.items():
            v = row.get(key)
            if epoch >= 1 and isinstance(v, int | float) and math.isfinite(v):
                w.add_scalar(tag, float(v), epoch)

    def ended(self, job, status: str, last: int, row: dict, reason: str) -> None:
        w = self.writers.pop(job.trial_id, None)
        if w is None:
            return
        value = row.get(self.metric)
        if status == "TERMINATED" and isinstance(value, int | float) and math.isfinite(value):
            hparams = {k: v for k, v in job.point.items() if isinstance(v, bool | int | float | str)}
            hparams.update(seed=job.seed, stage=job.stage, epochs=last)
            w.add_hparams(hparams, {f"hparam/{self.metric}": float(value)}, name="hparams")
        w.close()

    def batch_ended(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()
