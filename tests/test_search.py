"""End-to-end sweeps with real Ray, Optuna and Parquet (subprocesses, tiny budgets)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from search.results import read_results

from .conftest import ROOT, TINY_SET, sweep


@pytest.mark.slow
def test_sweep_end_to_end_parquet_schema(tmp_path):
    r = sweep(tmp_path, "--name", "e2e", "--num-samples", "5", "--max-epochs", "4", "--concurrency", "2", *TINY_SET)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "rank grouping" in r.stdout and "e2e.parquet" in r.stdout
    df = pd.read_parquet(tmp_path / "results" / "e2e.parquet")
    assert df["trial_id"].nunique() == 5
    assert not df.duplicated(["trial_id", "epoch"]).any()
    assert df["grouping"].notna().all()
    assert set(df["grouping"]) == {"shared", "per-part", "human", "mi"}  # the seeded first trials, nothing else
    assert str(df["clusters"].dtype) == "Int64" and df.loc[df.grouping != "mi", "clusters"].isna().all()
    assert df.loc[df.grouping == "mi", "clusters"].notna().all()
    for col, kind in [("epoch", "int64"), ("width", "int64"), ("pckh", "float64"), ("pckh_occluded", "float64"),
                      ("stopped_early", "boolean"), ("status", "string")]:
        assert str(df[col].dtype) == kind, col
    assert set(df["status"]) == {"TERMINATED"}
    last = df.groupby("trial_id")["epoch"].max()
    early = df.groupby("trial_id")["stopped_early"].first()
    assert ((last < 4) == early).all()
    assert early.any(), "ASHA (grace 2, rf 2) stops at least one of 5 trials"
    assert df["pckh"].between(0, 100).all() and df["git_commit"].str.len().gt(6).all()
    cfg = json.loads(df["config"].iloc[0])
    assert cfg["synthetic_train"] == 32 and cfg["epochs"] == 4
    assert (df["groups"].str.count(r"\|") + 1 == df.apply(
        lambda r: {"shared": 1, "per-part": 16, "human": 6}.get(r.grouping, r.clusters), axis=1)).all()
    again = sweep(tmp_path, "--name", "e2e", "--num-samples", "5", *TINY_SET)
    assert again.returncode == 2 and "already exists" in again.stderr and "--resume" in again.stderr
    assert pd.read_parquet(tmp_path / "results" / "e2e.parquet").equals(df)  # nothing overwritten


@pytest.mark.slow
def test_diverging_trial_is_recorded_as_error_without_retraining(tmp_path):
    """A NaN loss ends the trial as ERROR after one attempt of training (Tune's retries fail at once,
    the same seed would diverge again), the sweep goes on, and the Parquet file shows the trial."""
    r = sweep(tmp_path, "--name", "nan", "--num-samples", "1", "--max-epochs", "2", *TINY_SET, "--set", "lr=1e12")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "non-finite training loss" in out
    assert "in an earlier attempt of this trial: not retrained" in out
    df = read_results(tmp_path / "results" / "nan.parquet")
    assert len(df) == 1 and df["status"].iloc[0] == "ERROR" and df["epoch"].iloc[0] == 0
    assert df["pckh"].isna().all() and df["grouping"].iloc[0] == "shared" and df["num_failures"].iloc[0] == 4
    assert json.loads(df["config"].iloc[0])["lr"] == 1e12


def test_second_driver_on_a_running_sweep_is_refused(tmp_path):
    from search.run import lock_sweep

    fd = lock_sweep(tmp_path / "results" / "busy.lock", "busy")  # this process plays the running driver
    try:
        for extra in ([], ["--resume"]):
            r = sweep(tmp_path, "--name", "busy", "--num-samples", "1", *extra)
            assert r.returncode == 2 and "is already running" in r.stderr, r.stderr[-2000:]
            assert f"pid {os.getpid()}" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "results" / "busy.parquet").exists()
    finally:
        os.close(fd)
    r = sweep(tmp_path, "--name", "busy", "--resume")  # released: the next refusal is about the sweep itself
    assert r.returncode == 2 and "no sweep named 'busy'" in r.stderr


def test_malformed_space_and_unknown_resume_refused_before_ray(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("METRIC = 'pckh'\ndef space(trial):\n    return None\n")
    r = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(bad)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "missing MODE" in r.stderr and "Traceback" not in r.stderr
    assert "ray.init" not in r.stderr and "Started a local Ray instance" not in r.stdout + r.stderr  # before Ray
    bad.write_text((ROOT / "search/spaces/branches.py").read_text().replace('"preset": "small"', '"presett": 1'))
    r = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(bad)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "presett" in r.stderr
    r = sweep(tmp_path, "--name", "never", "--resume")
    assert r.returncode == 2 and "no sweep named 'never'" in r.stderr


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tmp_path):
    """Kill -9 the driver while trials run; --resume finishes with exactly N trials, no duplicate rows,
    no finished trial re-run, and ASHA's rungs replayed from the Parquet history."""
    n, epochs = 4, 6
    args = ["--name", "kill", "--num-samples", str(n), "--max-epochs", str(epochs), "--concurrency", "2",
            *TINY_SET]
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
           "--results", str(tmp_path / "results"), *args]
    parquet = tmp_path / "results" / "kill.parquet"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if parquet.exists() and len(read_results(parquet)) >= 5:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    before = pd.read_parquet(parquet)
    assert 5 <= len(before) and (before["status"] == "RUNNING").any()
    finished_before = set(before.loc[before.status == "TERMINATED", "trial_id"])
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=60)
    # Leave one in-flight trial as the worst-timed kill does: Tune has already deleted the checkpoints
    # the experiment snapshot names (the trial moved on after the snapshot), and the newest checkpoint
    # was cut short mid-copy. It must resume from the newest whole one and number new ones past both.
    victim = before.loc[before.status == "RUNNING", "trial_id"].iloc[0]
    trial_dir = next((tmp_path / "results" / "tune" / "kill").glob(f"train_trial_{victim}_*"))
    *older, newest = sorted(trial_dir.glob("checkpoint_*"))
    for d in older:
        shutil.rmtree(d)
    idx = int(newest.name.split("_")[1])
    whole, cut = trial_dir / f"checkpoint_{idx + 3:06d}", trial_dir / f"checkpoint_{idx + 4:06d}"
    newest.rename(whole)
    cut.mkdir()
    payload = (whole / "checkpoint.pt").read_bytes()
    (cut / "checkpoint.pt").write_bytes(payload[: len(payload) // 2])
    r = sweep(tmp_path, "--resume", *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "unreadable checkpoint" in r.stdout + r.stderr
    assert not any(idx < int(d.name.split("_")[1]) < idx + 3 for d in trial_dir.glob("checkpoint_*"))
    after = pd.read_parquet(parquet)
    assert after["trial_id"].nunique() == n
    assert not after.duplicated(["trial_id", "epoch"]).any()
    assert set(after["status"]) == {"TERMINATED"}, r.stdout[-4000:] + r.stderr[-4000:]
    for _, grp in after.groupby("trial_id"):
        assert sorted(grp["epoch"]) == list(range(1, grp["epoch"].max() + 1))  # epochs continue, no gaps
    # finished trials were not re-run: their rows are byte-identical
    for tid in finished_before:
        a = before[before.trial_id == tid].drop(columns=["status", "stopped_early"]).reset_index(drop=True)
        b = after[after.trial_id == tid].drop(columns=["status", "stopped_early"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    # in-flight trials continued from their last checkpoint: at most one already-reported epoch is redone
    merged = before.merge(after, on=["trial_id", "epoch"], suffixes=("_before", "_after"))
    redone = merged[merged.reported_at_before != merged.reported_at_after].groupby("trial_id").size()
    assert (redone <= 1).all(), redone
    assert f"ASHA: replayed {len(before)}" in r.stdout
    changed = tmp_path / "changed.py"
    changed.write_text((ROOT / "search/spaces/branches.py").read_text() + "\n# edit\n")
    r = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), "--space", str(changed), "--name", "kill",
                        "--resume", "--results", str(tmp_path / "results")], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "changed" in r.stderr


@pytest.mark.slow
def test_ctrl_c_then_resume(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while a trial is in its first epochs:
    exit 130 with the resume hint, that trial is not recorded as finished, and --resume completes it."""
    n = 4
    args = ["--name", "intr", "--num-samples", str(n), "--max-epochs", "6", "--concurrency", "2", *TINY_SET]
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
           "--results", str(tmp_path / "results"), *args]
    parquet = tmp_path / "results" / "intr.parquet"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline, victim = time.time() + 240, None
    while time.time() < deadline and victim is None:  # a trial that reported epoch 1 only: ASHA's first
        if parquet.exists():  # rung is epoch 2, so nothing but the interruption can end it now
            last = read_results(parquet).groupby("trial_id")["epoch"].max()
            victim = next(iter(last[last == 1].index), None)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=180)[1]
    assert victim is not None and proc.returncode == 130, err[-3000:]
    m = re.search(r"interrupted: (\d+) of 4 trials unfinished: resume with the same command plus --resume", err)
    assert m, err[-3000:]
    before = pd.read_parquet(parquet)
    last = before.groupby("trial_id").agg(epoch=("epoch", "max"), status=("status", "first"))
    assert not ((last.epoch < 2) & (last.status == "TERMINATED")).any(), last  # Tune's clean-up is no finish
    finished_before = set(last.index[last.status == "TERMINATED"])
    assert len(finished_before) <= n - int(m.group(1))
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=60)
    r = sweep(tmp_path, "--resume", *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = pd.read_parquet(parquet)
    assert after["trial_id"].nunique() == n and set(after["status"]) == {"TERMINATED"}
    assert not after.duplicated(["trial_id", "epoch"]).any()
    assert after.loc[after.trial_id == victim, "epoch"].max() >= 2  # the interrupted trial went on
    for tid, grp in after.groupby("trial_id"):
        assert sorted(grp["epoch"]) == list(range(1, grp["epoch"].max() + 1))
        if tid in finished_before:
            assert grp["epoch"].max() == last.loc[tid, "epoch"]


def test_a_resumed_trial_takes_its_newest_readable_checkpoint(tmp_path, capsys):
    import torch
    from ray.train._internal.storage import StorageContext

    from pbn.train import CHECKPOINT
    from search.trainable import _fetch_newest

    storage = StorageContext(str(tmp_path), "exp", trial_dir_name="t", current_checkpoint_index=2)
    trial = tmp_path / "exp" / "t"
    for idx in (1, 4):
        (trial / f"checkpoint_{idx:06d}").mkdir(parents=True)
        torch.save({"epoch": idx + 1, "history": []}, trial / f"checkpoint_{idx:06d}" / CHECKPOINT)
    (trial / "checkpoint_000007").mkdir()  # its copy never began: not a candidate
    newest = trial / "checkpoint_000004" / CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:40])  # cut short by the interruption
    assert _fetch_newest(storage)["epoch"] == 2
    err = capsys.readouterr().err
    assert "skipping" in err and "checkpoint_000004" in err and "unreadable checkpoint" in err
    assert storage.current_checkpoint_index == 5  # new checkpoints go past every stored one
    whole = trial / "checkpoint_000001" / CHECKPOINT
    whole.write_bytes(whole.read_bytes()[:40])
    assert _fetch_newest(storage) is None  # nothing readable: the trial starts from epoch 1


def test_asha_replay_restores_rungs(tmp_path):
    from search.results import ResultsTable
    from search.tune_ext import ReplayASHA

    table = ResultsTable(tmp_path / "h.parquet", "h", 8)
    cfg = json.dumps({"grouping": "shared", "clusters": None, "width": 16, "depth": 1, "stacks": 2})
    for i, (tid, epoch, v) in enumerate([("a", 1, 10.0), ("a", 2, 20.0), ("b", 1, 5.0), ("b", 2, 8.0),
                                         ("c", 1, 30.0), ("a", 3, 25.0), ("a", 4, 40.0)]):
        table.add(tid, {"epoch": epoch, "pckh": v, "resolved_config": cfg, "groups": "x"})
        table.rows[(tid, epoch)]["reported_at"] = float(i)
    table.write()
    sched = ReplayASHA(str(tmp_path / "h.parquet"), time_attr="epoch", max_t=8, grace_period=1, reduction_factor=2,
                       metric="pckh", mode="max")
    sched._replay()
    assert sched.replayed_results == 7
    assert dict(sched.rung_sizes()) == {8: 0, 4: 1, 2: 2, 1: 3}
    # a new trial scoring below the recorded epoch-1 median is stopped, exactly as without a restart
    from ray.tune.schedulers import TrialScheduler

    class T:
        trial_id = "d"

    assert sched._brackets[0].on_result(T(), 1, 6.0) == TrialScheduler.STOP


def test_searcher_resamples_repeated_proposals_and_prunes_stopped_trials():
    from optuna.trial import TrialState

    from search.tune_ext import PruneAwareOptuna

    def tiny_space(trial):
        trial.suggest_categorical("grouping", ["shared", "human"])
        trial.suggest_int("width", 16, 32, step=16)

    s = PruneAwareOptuna(space=tiny_space, metric="pckh", mode="max", seed=0, max_epochs=4,
                         points_to_evaluate=[{"grouping": "shared", "width": 16}, {"grouping": "shared", "width": 16}])
    seen = [tuple(sorted(s.suggest(f"t{i}").items())) for i in range(4)]
    assert len(set(seen)) == 4, seen  # all 4 points of the space, although the 2nd seed repeats the 1st
    assert s.resampled >= 1
    s.on_trial_result("t0", {"pckh": 10.0, "epoch": 1})
    s.on_trial_complete("t0", {"pckh": 10.0, "epoch": 2})  # ASHA stopped it at epoch 2 of 4
    s.on_trial_result("t1", {"pckh": 20.0, "epoch": 4})
    s.on_trial_complete("t1", {"pckh": 20.0, "epoch": 4})
    states = {t.number: t.state for t in s._ot_study.get_trials() if t.state != TrialState.FAIL}
    assert TrialState.PRUNED in states.values() and TrialState.COMPLETE in states.values()
    pruned = next(t for t in s._ot_study.get_trials() if t.state == TrialState.PRUNED)
    assert pruned.intermediate_values == {1: 10.0, 2: 10.0}  # keyed by epoch, for TPE's pruned ranking
    assert tuple(sorted(s.suggest("t4").items())) in seen  # space exhausted: a repeat is accepted


def test_snapshot_detection_needs_an_experiment_state(tmp_path):
    """tuner.pkl alone (written before any trial) is not restorable state."""
    from search.run import _has_snapshot

    (tmp_path / "tuner.pkl").write_bytes(b"x")
    assert not _has_snapshot(str(tmp_path)) and not _has_snapshot(str(tmp_path / "missing"))
    (tmp_path / "experiment_state-2026-11-24_12-00-00.json").write_text("{}")
    assert _has_snapshot(str(tmp_path))
