"""The sweep's state, piece by piece, without Ray running: checkpoints on storage, ASHA's rungs (pinned against
Ray's own scheduler), how the study makes and labels trials, and how a resume settles the study with the
Parquet file."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from search.asha import Rungs, percentile_sorted, replay_frame, rung_epochs


def test_checkpoints_keep_two_and_resume_from_the_newest_readable(tmp_path):
    from pbn.train import CHECKPOINT
    from search.trainable import CheckpointStore

    store = CheckpointStore(str(tmp_path / "ckpt"), "t0003")
    local = tmp_path / CHECKPOINT
    assert store.newest() is None and store.epochs() == []
    for epoch in (1, 2, 3):
        torch.save({"epoch": epoch, "history": []}, local)
        store.save(local, epoch)
    assert store.epochs() == [3, 2]  # the last two kept
    assert not list((tmp_path / "ckpt" / "t0003").glob("*.tmp"))  # nothing half-written left behind
    newest = tmp_path / "ckpt" / "t0003" / "epoch-0003.pt"
    newest.write_bytes(newest.read_bytes()[:40])  # cut short by a kill
    assert store.newest()["epoch"] == 2
    (tmp_path / "ckpt" / "t0003" / "epoch-0002.pt").write_bytes(b"")
    assert store.newest() is None  # nothing readable: the trial starts from epoch 1
    assert store.nonfinite() is None
    store.mark_nonfinite("non-finite training loss (nan) at epoch 2, step 3")
    assert store.nonfinite().startswith("non-finite training loss")


@pytest.mark.parametrize("grace,rf,max_t", [(1, 2, 8), (2, 2, 5), (1, 3, 10), (5, 3, 50), (2, 2, 4)])
def test_rungs_decide_exactly_as_rays_asha(grace, rf, max_t):
    """Random streams of results through Ray Tune's public ASHAScheduler and through asha.Rungs: the same
    STOP/CONTINUE for every result below max_t (so the report's rung epochs need no Ray)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    rng = np.random.default_rng(grace * 100 + max_t)
    ray_asha = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=max_t, grace_period=grace,
                             reduction_factor=rf)
    ours = Rungs(grace, rf, max_t)
    trials = [Trial(f"t{i}") for i in range(40)]
    for t in trials:
        ray_asha.on_trial_add(None, t)
    epoch = dict.fromkeys(range(40), 0)
    live = set(range(40))
    decisions = 0
    while live:
        i = int(rng.choice(sorted(live)))
        epoch[i] += 1
        value = float(rng.normal(epoch[i], 2))
        if epoch[i] >= max_t:
            live.discard(i)
            continue
        want = ray_asha.on_trial_result(None, trials[i], {"epoch": epoch[i], "m": value}) == TrialScheduler.STOP
        assert ours.on_result(f"t{i}", epoch[i], value) == want
        decisions += want
        if want:
            live.discard(i)
    assert decisions > 0  # the streams do exercise stopping
    assert rung_epochs(grace, rf, max_t) == sorted(m for m in ours.epochs())


def test_rung_cutoff_is_numpys_percentile_to_the_last_bit():
    """The O(1) cutoff from a rung's sorted values equals np.nanpercentile (what Ray's ASHA calls) exactly, on
    continuous values and on a discrete metric's ties, at ASHA's quantiles and others."""
    rng = np.random.default_rng(7)
    for case in range(3000):
        n = int(rng.integers(1, 60))
        values = (rng.normal(0, 10, n) if case % 2 else rng.integers(0, 8, n) * 0.3125).tolist()
        q = (1 - 1 / [2, 3, 4, 2.5][case % 4]) * 100 if case % 3 else float(rng.uniform(0, 100))
        assert percentile_sorted(sorted(values), q) == float(np.nanpercentile(values, q)), (values, q)
    assert percentile_sorted([], 50) is None


def test_report_modules_import_without_ray():
    code = "import search.report, search.analysis, search.asha, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_replaying_the_history_reproduces_the_live_decisions():
    """What a resumed driver relies on: the Parquet history fed back in report order gives every trial the
    decision it got live."""
    rng = np.random.default_rng(5)
    live = Rungs(1, 2, 8)
    rows, stopped = [], {}
    epoch = {f"t{i}": 0 for i in range(12)}
    order = 0
    while running := [t for t, e in epoch.items() if e < 8 and t not in stopped]:
        t = str(rng.choice(running))
        epoch[t] += 1
        value = float(rng.normal(epoch[t], 1.5))
        rows.append({"trial_id": t, "epoch": epoch[t], "pckh": value, "reported_at": float(order)})
        order += 1
        if epoch[t] < 8 and live.on_result(t, epoch[t], value):
            stopped[t] = epoch[t]
    assert 0 < len(stopped) < 12
    history = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # the file's row order is not report order
    again = Rungs(1, 2, 8)
    assert replay_frame(again, history, "pckh", "max") == stopped
    assert again.sizes() == live.sizes()


def _space(trial):
    grouping = trial.suggest_categorical("grouping", ["shared", "human"])
    trial.suggest_int("width", 16, 32, step=16)
    return {"depth": 1} if grouping == "human" else None


def test_trials_are_made_with_their_seed_and_audit_from_the_study_alone(tmp_path):
    """Pinned points come first (enqueued with their attrs); a repeated point gets the next seed; the audit
    schedule follows the trial's place; and a trial a killed driver asked but never labelled is labelled on
    resume exactly as that driver would have."""
    import optuna
    from optuna.trial import TrialState

    from search.study import (
        TrialMaker,
        audit_schedule,
        complete_attrs,
        create_study,
        enqueue_points,
        job_of,
        trial_id_of,
    )

    url = str(tmp_path / "s.optuna.log")
    study = create_study(url, "s", "max", "pckh", "digest")
    pinned = [{"grouping": "shared", "width": 16}, {"grouping": "shared", "width": 16}]
    enqueue_points(study, pinned, base_seed=0, audit_fraction=0.5, seed=3)
    maker = TrialMaker(study, _space, "search", base_seed=0, audit_fraction=0.5, seed=3)
    jobs = [maker.ask() for _ in range(6)]
    assert [j.point for j in jobs[:2]] == pinned and [j.seed for j in jobs[:2]] == [0, 1]
    assert [j.trial_id for j in jobs] == [trial_id_of(i) for i in range(6)]
    for i, j in enumerate(jobs):
        earlier = sum(k.point_key == j.point_key for k in jobs[:i])
        assert j.seed == earlier and j.audited == audit_schedule(0.5, 3, i)
        assert j.point.get("depth") == (1 if j.point["grouping"] == "human" else None)
    assert sum(j.audited for j in jobs) == 3
    # a killed driver asked a proposal but never gave it its attrs
    half = study.ask()
    _space(half)
    assert "stage" not in half.user_attrs
    point = {**half.params, **(_space(optuna.trial.FixedTrial(half.params)) or {})}
    seed = sum(j.point == point for j in jobs)  # the earlier search trials of the same point
    assert complete_attrs(study, _space, 0, 0.5, 3) == 1
    done = job_of(study.trials[-1])
    assert (done.point, done.seed, done.audited, done.trial_id) == (point, seed, audit_schedule(0.5, 3, 6), "t0006")
    assert study.trials[-1].state == TrialState.RUNNING and complete_attrs(study, _space, 0, 0.5, 3) == 0


def test_a_confirmation_maker_only_pops_its_jobs(tmp_path):
    from search.study import TrialMaker, create_study, enqueue_job

    study = create_study(str(tmp_path / "c.optuna.log"), "c", "max", "pckh", "digest")
    enqueue_job(study, "confirm", {"grouping": "human", "width": 32, "depth": 1}, 1000)
    maker = TrialMaker(study, _space, "confirm")
    job = maker.ask()
    assert (job.stage, job.seed, job.point["width"]) == ("confirm", 1000, 32)
    assert maker.ask() is None and len(study.trials) == 1  # never samples


def test_reconcile_tells_the_study_what_the_parquet_file_recorded(tmp_path):
    from optuna.trial import TrialState

    from search.study import create_study, reconcile

    study = create_study(str(tmp_path / "r.optuna.log"), "r", "max", "pckh", "d")
    for _ in range(3):
        study.ask().report(1.0, 1)
    df = pd.DataFrame([{"trial_id": tid, "epoch": e, "status": status, "stage": "search", "pckh": 10.0 * e,
                        "device_seconds": 2.0, "params": 7, "gflops": 0.5}
                       for tid, last, status in (("t0000", 4, "TERMINATED"), ("t0001", 2, "TERMINATED"),
                                                 ("t0002", 3, "RUNNING"))
                       for e in range(1, last + 1)])
    assert reconcile(study, df, "pckh", 4) == 2
    done, stopped, live = study.get_trials()
    assert done.state == TrialState.COMPLETE and done.value == 40.0
    assert done.intermediate_values == {1: 1.0, 2: 20.0, 3: 30.0, 4: 40.0}  # the epochs it missed, added
    assert (done.user_attrs["device_seconds"], done.user_attrs["params"], done.user_attrs["gflops"]) == (8.0, 7, 0.5)
    assert stopped.state == TrialState.PRUNED and live.state == TrialState.RUNNING
    assert live.intermediate_values == {1: 1.0, 2: 20.0, 3: 30.0}  # caught up with the file, still running


def test_the_plan_round_trips_and_refuses_a_foreign_file(tmp_path):
    from search.sweep import Paths, Plan, SweepError

    plan = Plan(name="p", space="s.py", space_digest="d", metric="pckh", mode="max", num_samples=4, max_epochs=5,
                grace_period=2, reduction_factor=2, fixed={"preset": "small", "epochs": 5}, seed=1,
                audit_fraction=0.25, confirm_top=0, confirm_max_seeds=8, verdict={"margin": 3.0}, storage="/x",
                optuna_storage="/y", created=1.0)
    paths = Paths(tmp_path, "p")
    paths.write_plan(plan)
    assert paths.read_plan() == plan and plan.base_seed == 0
    paths.plan.write_text(json.dumps({"name": "p"}))
    with pytest.raises(SweepError, match="not a sweep plan this version can read"):
        paths.read_plan()
    with pytest.raises(SweepError, match="no sweep named 'q'"):
        Paths(tmp_path, "q").read_plan()


def test_compat_refuses_other_versions():
    from search.compat import CompatError, check_versions

    check_versions()  # the installed, pinned ones
    with pytest.raises(CompatError, match=r"ray 2\.99\.0 \(this project pins 2\.60\.0\).*search/compat.py"):
        check_versions(ray_version="2.99.0")
    with pytest.raises(CompatError, match=r"optuna 6\.0\.0"):
        check_versions(optuna_version="6.0.0")
