"""What the sweep driver prints: one line per trial event, a progress line per batch, the verdict at the end."""

from __future__ import annotations

import sys
import time

from search.analysis import point_label


class Console:
    def __init__(self, plan, verbose: bool = False, out=None):
        self.plan, self.verbose = plan, verbose
        self.out = out or sys.stdout
        self.t0 = time.time()

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def batch_started(self, stage: str, continuing: list, new: int, table) -> None:
        self.line(f"{stage} stage: {len(continuing)} trials to continue, {new} new")

    def started(self, job) -> None:
        self.line(f"[{job.stage}] {job.trial_id} started: {point_label(job.point)} seed {job.seed}")

    def epoch(self, job, result: dict, stopped: bool) -> None:
        if stopped:
            self.line(f"[{job.stage}] {job.trial_id} stopped by ASHA at epoch {result['epoch']}")

    def recovering(self, job, reason: str) -> None:
        self.line(f"[{job.stage}] {job.trial_id} failed, retrying: {reason}")

    def ended(self, job, status: str, last: int, row: dict, reason: str) -> None:
        self.line(f"[{job.stage}] {job.trial_id} {'finished' if status == 'TERMINATED' else 'failed'} at epoch "
                  f"{last}{': ' + reason if reason else ''}")

    def closing(self, paths, seconds: float) -> None:
        from search.report import summary_lines
        from search.results import read_results

        df = read_results(paths.parquet)
        self.line(f"\nSweep {paths.name!r}: {df['trial_id'].nunique()} trials, {len(df)} epoch rows, "
                  f"{seconds:.0f} s wall")
        self.line("\n".join(summary_lines(df, self.plan)))
        self.line(f"\nresults: {paths.parquet}\n  pandas.read_parquet({str(paths.parquet)!r})")
        self.line(f"Optuna study {paths.name!r}: {paths.optuna}\nreport: python -m search.report {paths.parquet}")
