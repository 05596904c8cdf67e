"""End-to-end sweeps with real Ray, Optuna and Parquet (subprocesses, tiny budgets)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from search.results import read_results

from .conftest import ROOT, SAMPLES, TINY_SET, run_cli, sweep


def study_of(tmp_path, name: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "results" / f"{name}.optuna.log")))
    return optuna.load_study(study_name=name, storage=storage)


def assert_study_matches(df: pd.DataFrame, study, max_epochs: int) -> None:
    """The Optuna study holds exactly the Parquet file's trials, none RUNNING, each in the state its rows
    say, with one intermediate value per reported epoch and the user attrs the README lists."""
    from optuna.trial import TrialState

    trials = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert len(trials) == len(study.trials) and set(trials) == set(df["trial_id"])
    last = df.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    for tid, t in trials.items():
        row = last.loc[tid]
        assert {"trial_id", "seed", "stage", "params", "gflops", "device_seconds", "point"} <= set(t.user_attrs)
        assert (t.user_attrs["seed"], t.user_attrs["stage"]) == (row["seed"], row["stage"])
        want = (TrialState.FAIL if row["status"] == "ERROR" else TrialState.PRUNED if row["stopped_early"]
                else TrialState.COMPLETE)
        assert t.state == want, (tid, t.state, row["status"], row["epoch"])
        rows = df[(df.trial_id == tid) & (df.epoch > 0)]
        assert t.intermediate_values == dict(zip(rows["epoch"].astype(int), rows["pckh"])), tid
        if len(rows):
            assert (t.user_attrs["params"], t.user_attrs["gflops"]) == (rows["params"].iloc[0], rows["gflops"].iloc[0])
        if want == TrialState.COMPLETE:
            assert t.value == row["pckh"] and row["epoch"] == max_epochs
            assert t.user_attrs["device_seconds"] == pytest.approx(rows["device_seconds"].sum(), rel=1e-6)


@pytest.mark.slow
def test_sweep_end_to_end_parquet_study_and_verdict(tmp_path):
    r = sweep(tmp_path, "--name", "e2e", "--num-samples", "5", "--max-epochs", "4", "--concurrency", "2",
              "--confirm-top", "2", "--confirm-seeds", "2", *TINY_SET)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Verdict:" in r.stdout and "e2e.parquet" in r.stdout
    df = pd.read_parquet(tmp_path / "results" / "e2e.parquet")
    assert not df.duplicated(["trial_id", "epoch"]).any() and set(df["status"]) == {"TERMINATED"}
    search, confirm = df[df.stage == "search"], df[df.stage == "confirm"]
    assert search["trial_id"].nunique() == 5
    # a point proposed again is trained with the next seed: per point, seeds 0, 1, ... and never twice
    seeds = search.groupby("point")["seed"].apply(lambda s: sorted(set(s)))
    assert all(v == list(range(len(v))) for v in seeds), seeds
    assert search.drop_duplicates("trial_id").groupby(["point", "seed"]).size().max() == 1
    assert set(search["grouping"]) == {"shared", "per-part", "human", "mi"}  # the seeded first trials, nothing else
    assert str(df["clusters"].dtype) == "Int64" and df.loc[df.grouping != "mi", "clusters"].isna().all()
    assert df.loc[df.grouping == "mi", "clusters"].notna().all()
    for col, kind in [("epoch", "int64"), ("seed", "int64"), ("stage", "string"), ("pckh", "float64"),
                      ("pckh_lo", "float64"), ("pckh_occluded_hi", "float64"), ("params", "int64"),
                      ("gflops", "float64"), ("device_seconds", "float64"), ("stopped_early", "boolean"),
                      ("audited", "boolean"), ("status", "string")]:
        assert str(df[col].dtype) == kind, col
    last = search.groupby("trial_id")["epoch"].max()
    early = search.groupby("trial_id")["stopped_early"].first()
    assert ((last < 4) == early).all()  # whether ASHA stops any of 5 near-chance tiny trials depends on ties
    # the confirmation stage: the best point of each of the 4 strategies (the top 2 are among them), each
    # trained to the last epoch with the same two seeds
    points = confirm.groupby("point")["seed"].apply(lambda s: sorted(set(s)))
    assert len(points) == 4 and all(seeds == [1000, 1001] for seeds in points)  # never a search-stage seed
    assert (confirm.groupby("trial_id")["epoch"].max() == 4).all() and not confirm["stopped_early"].any()
    epochs = df[df.epoch > 0]
    assert epochs[["params", "gflops", "device_seconds", "pckh_lo", "pckh_hi"]].notna().all().all()
    assert (epochs.pckh_lo <= epochs.pckh).all() and (epochs.pckh <= epochs.pckh_hi).all()
    assert df["pckh"].between(0, 100).all() and df["git_commit"].str.len().gt(6).all()
    cfg = json.loads(df["config"].iloc[0])
    assert cfg["synthetic_train"] == 32 and cfg["epochs"] == 4
    assert (df["groups"].str.count(r"\|") + 1 == df.apply(
        lambda r: {"shared": 1, "per-part": 16, "human": 6}.get(r.grouping, r.clusters), axis=1)).all()
    assert_study_matches(df, study_of(tmp_path, "e2e"), 4)
    rep = run_cli("search.report", str(tmp_path / "results" / "e2e.parquet"))
    assert rep.returncode == 0, rep.stderr
    out = tmp_path / "results" / "e2e"
    assert "\n## Verdict\n" in (out / "summary.md").read_text()
    verdict = json.loads((out / "verdict.json").read_text())
    assert len(verdict) == 2 * 3  # best vs each of the 3 others, on pckh and on pckh_occluded
    assert all(set(v) == {"a", "b", "metric", "epoch", "diff", "lo", "hi", "resolved", "n_seeds"} and
               v["epoch"] == 4 and v["n_seeds"] == 2 for v in verdict)
    for name in ("pareto.png", "cost_curve.png", "importance.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    again = sweep(tmp_path, "--name", "e2e", "--num-samples", "5", *TINY_SET)
    assert again.returncode == 2 and "already exists" in again.stderr and "--resume" in again.stderr
    assert pd.read_parquet(tmp_path / "results" / "e2e.parquet").equals(df)  # nothing overwritten


def write_space(tmp_path, name: str, fixed: dict, space_body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(f"METRIC = 'pckh'\nNUM_SAMPLES = 2\nMAX_EPOCHS = 1\nFIXED = {fixed!r}\n\n"
                    f"def space(trial):\n{space_body}\n")
    return path


TINY_FIXED = {"synthetic_train": 32, "synthetic_val": 16, "channels": 32, "batch_size": 8}


@pytest.mark.slow
@pytest.mark.parametrize("fixed,column,value", [
    ({"grouping": "per-part", "depth": 0}, "grouping", "per-part"),
    ({"grouping": "mi", "clusters": 4, "depth": 0}, "clusters", 4),  # fixing the cluster count is allowed
])
def test_what_a_study_fixes_stays_fixed(tmp_path, fixed, column, value):
    space = write_space(tmp_path, "mine", {**fixed, **TINY_FIXED},
                        "    trial.suggest_int('width', 8, 16, step=8)")
    r = sweep(tmp_path, "--name", "mine", "--confirm-seeds", "0", space=space)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = read_results(tmp_path / "results" / "mine.parquet")
    assert df["trial_id"].nunique() == 2 and (df[column] == value).all() and (df["depth"] == 0).all()
    configs = [json.loads(c) for c in df["config"]]
    assert all(c[column] == value and c["depth"] == 0 and c["channels"] == 32 for c in configs)
    assert set(df["width"]) <= {8, 16} and set(df["point"]) <= {'{"width": 8}', '{"width": 16}'}


def test_a_key_both_fixed_and_searched_is_refused_before_ray(tmp_path):
    both = write_space(tmp_path, "both", {"width": 32}, "    trial.suggest_int('width', 8, 16, step=8)")
    seeded = write_space(tmp_path, "seeded", {}, "    trial.suggest_int('seed', 0, 3)")
    cases = [
        (["--name", "both"], both, "FIXED fixes ['width'], which the space also searches"),
        (["--name", "b2", "--set", "grouping=human"], ROOT / "search/spaces/branches.py",
         "--set fixes ['grouping'], which the space also searches"),
        (["--name", "seeded"], seeded, "searches ['seed'], which the driver sets"),
        (["--name", "b3", "--set", "synthetic_train"], ROOT / "search/spaces/branches.py", "expected KEY=VALUE"),
    ]
    for args, space, message in cases:
        r = sweep(tmp_path, *args, space=space)
        assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr and "Started a local Ray instance" not in r.stdout + r.stderr
    assert not list(tmp_path.glob("results/*.sweep.json"))


@pytest.mark.slow
def test_the_ablation_grid_trains_every_point(tmp_path):
    r = sweep(tmp_path, "--name", "abl", "--max-epochs", "1", "--confirm-seeds", "0", "--concurrency", "2",
              "--set", "width=16", "--set", "stacks=1", "--set", "synthetic_val=16", "--set", "synthetic_train=32",
              "--set", "channels=32", "--set", "batch_size=8", space=ROOT / "search/spaces/ablation.py")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = read_results(tmp_path / "results" / "abl.parquet")
    per_trial = df.groupby("trial_id").agg(grouping=("grouping", "first"), k=("clusters", "first"))
    got = sorted((g, None if pd.isna(k) else int(k)) for g, k in per_trial.itertuples(index=False))
    assert got == sorted([("shared", None), ("per-part", None), ("human", None),
                          *(("mi", k) for k in range(4, 9))])
    assert (df["width"] == 16).all() and (df["depth"] == 1).all() and (df["stacks"] == 1).all()
    assert not df["stopped_early"].any() and set(df["status"]) == {"TERMINATED"}


def test_bad_data_is_refused_before_any_trial(tmp_path):
    """A truncated JPEG in an MPII root: the sweep and a single training run refuse with the file named,
    exit 2, before any training step, and write nothing."""
    root = tmp_path / "data"
    (root / "mpii" / "images").mkdir(parents=True)
    (root / "mpii" / "annotations").mkdir()
    for jpg in SAMPLES.glob("*.jpg"):
        shutil.copy(jpg, root / "mpii" / "images" / jpg.name)
    bad = sorted((root / "mpii" / "images").glob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    for split in ("train", "valid"):
        shutil.copy(SAMPLES / "test_mpii.json", root / "mpii" / "annotations" / f"{split}.json")
    r = sweep(tmp_path, "--name", "bad", "--data", "mpii", "--data-root", str(root), "--set", "batch_size=2")
    assert r.returncode == 2 and bad.name in r.stderr and "truncated" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Started a local Ray instance" not in r.stdout + r.stderr
    assert not [f for f in tmp_path.glob("results/bad.*") if f.suffix != ".lock"]  # only the driver's lock
    t = run_cli("pbn.train", "--data", "mpii", "--data-root", str(root), "--batch-size", "2", "--out",
                str(tmp_path / "run"))
    assert t.returncode == 2 and bad.name in t.stderr and "truncated" in t.stderr and "epoch" not in t.stdout
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_diverging_trial_is_recorded_as_error_without_retraining(tmp_path):
    """A NaN loss ends the trial as ERROR after one attempt of training (Tune's retries fail at once,
    the same seed would diverge again), the sweep goes on, and the Parquet file and the study show it."""
    from optuna.trial import TrialState

    r = sweep(tmp_path, "--name", "nan", "--num-samples", "1", "--max-epochs", "2", "--confirm-seeds", "0",
              *TINY_SET, "--set", "lr=1e12")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "non-finite training loss" in out
    assert "in an earlier attempt of this trial: not retrained" in out
    df = read_results(tmp_path / "results" / "nan.parquet")
    assert len(df) == 1 and df["status"].iloc[0] == "ERROR" and df["epoch"].iloc[0] == 0
    assert df["pckh"].isna().all() and df["grouping"].iloc[0] == "shared" and df["num_failures"].iloc[0] == 4
    assert json.loads(df["config"].iloc[0])["lr"] == 1e12
    assert [t.state for t in study_of(tmp_path, "nan").trials] == [TrialState.FAIL]


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
    r = sweep(tmp_path, space=bad)
    assert r.returncode == 2 and "missing MAX_EPOCHS, FIXED" in r.stderr and "Traceback" not in r.stderr
    assert "Started a local Ray instance" not in r.stdout + r.stderr  # refused before Ray
    bad.write_text((ROOT / "search/spaces/branches.py").read_text().replace('"preset": "small"', '"presett": 1'))
    r = sweep(tmp_path, space=bad)
    assert r.returncode == 2 and "presett" in r.stderr
    text = (ROOT / "search/spaces/branches.py").read_text()
    bad.write_text(text.replace('METRIC = "pckh"', 'METRIC = "val_loss"\nMODE = "max"'))
    r = sweep(tmp_path, space=bad)
    assert r.returncode == 2 and "MODE 'max' contradicts METRIC 'val_loss'" in r.stderr
    r = sweep(tmp_path, "--name", "never", "--resume")
    assert r.returncode == 2 and "no sweep named 'never'" in r.stderr


def _kill_when(proc, parquet: Path, ready, timeout: float = 300) -> pd.DataFrame:
    """SIGKILL the driver's process group (it and the Ray processes it started) once ready(rows) holds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if parquet.exists():
            df = read_results(parquet)
            if ready(df):
                break
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=60)
    return pd.read_parquet(parquet)


@pytest.mark.slow
def test_sigkill_in_both_stages_then_resume(tmp_path):
    """Kill -9 the driver while search trials run, resume; kill it again while confirmation trials run and
    lose the confirmation stage's experiment snapshot too, resume: the sweep ends with exactly the asked
    trials, no (trial, epoch) twice, no finished trial re-run, in-flight trials continued from their
    checkpoints under their own ids, ASHA's rungs replayed, and the Optuna study matching the Parquet file."""
    n, epochs = 4, 6
    args = ["--name", "kill", "--num-samples", str(n), "--max-epochs", str(epochs), "--concurrency", "2",
            "--confirm-seeds", "2", "--confirm-top", "0", *TINY_SET]
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
           "--results", str(tmp_path / "results"), *args]
    parquet = tmp_path / "results" / "kill.parquet"
    start = dict(cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    before = _kill_when(subprocess.Popen(cmd, **start), parquet, lambda df: len(df) >= 5)
    assert 5 <= len(before) and (before["status"] == "RUNNING").any()
    finished_before = set(before.loc[before.status == "TERMINATED", "trial_id"])
    # Leave one in-flight trial as the worst-timed kill does: Tune has already deleted the checkpoints
    # the experiment snapshot names (the trial moved on after the snapshot), and the newest checkpoint
    # was cut short mid-copy. It must resume from the newest whole one and number new ones past both.
    victim = before.loc[before.status == "RUNNING", "trial_id"].iloc[0]
    trial_dir = tmp_path / "results" / "tune" / "kill" / f"trial_{victim}"
    *older, newest = sorted(trial_dir.glob("checkpoint_*"))
    for d in older:
        shutil.rmtree(d)
    idx = int(newest.name.split("_")[1])
    whole, cut = trial_dir / f"checkpoint_{idx + 3:06d}", trial_dir / f"checkpoint_{idx + 4:06d}"
    newest.rename(whole)
    cut.mkdir()
    payload = (whole / "checkpoint.pt").read_bytes()
    (cut / "checkpoint.pt").write_bytes(payload[: len(payload) // 2])

    # Resume, and kill again once two confirmation trials have reported (the search stage is then done).
    log = tmp_path / "resume1.log"
    with log.open("w") as f:
        proc = subprocess.Popen([*cmd, "--resume"], **{**start, "stdout": f, "stderr": subprocess.STDOUT})
        mid = _kill_when(proc, parquet, lambda df: (df[df.stage == "confirm"].groupby("trial_id").epoch.max()
                                                     .between(1, epochs - 1)).sum() >= 2)
    out = log.read_text()
    assert "unreadable checkpoint" in out
    assert re.search(rf"ASHA: replayed the {len(before)} search-stage results into the rungs", out), out[-3000:]
    assert not any(idx < int(d.name.split("_")[1]) < idx + 3 for d in trial_dir.glob("checkpoint_*"))
    running = mid[(mid.stage == "confirm") & (mid.status == "RUNNING")]
    assert running["trial_id"].nunique() >= 1
    # The confirmation stage's snapshot is lost as well (as if the kill came before Tune wrote one): its
    # in-flight trials exist only in the study and the Parquet file, and must still be continued.
    for state in (tmp_path / "results" / "tune").glob("kill-confirm/experiment_state-*.json"):
        state.unlink()
    r = sweep(tmp_path, "--resume", *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = pd.read_parquet(parquet)
    jobs = json.loads((tmp_path / "results" / "kill.sweep.json").read_text())["confirm_jobs"]
    assert after.loc[after.stage == "search", "trial_id"].nunique() == n
    assert after.loc[after.stage == "confirm", "trial_id"].nunique() == len(jobs) == 4 * 2
    assert not after.duplicated(["trial_id", "epoch"]).any()
    assert set(after["status"]) == {"TERMINATED"}, r.stdout[-4000:] + r.stderr[-4000:]
    for _, grp in after.groupby("trial_id"):
        assert sorted(grp["epoch"]) == list(range(1, grp["epoch"].max() + 1))  # epochs continue, no gaps
    assert (after[after.stage == "confirm"].groupby("trial_id").epoch.max() == epochs).all()
    # finished trials were not re-run: their rows are byte-identical
    for tid in finished_before:
        a = before[before.trial_id == tid].drop(columns=["status", "stopped_early"]).reset_index(drop=True)
        b = after[after.trial_id == tid].drop(columns=["status", "stopped_early"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    # in-flight trials continued from their last checkpoint: at most one already-reported epoch is redone
    for earlier in (before, mid):
        merged = earlier.merge(after, on=["trial_id", "epoch"], suffixes=("_before", "_after"))
        redone = merged[merged.reported_at_before != merged.reported_at_after].groupby("trial_id").size()
        assert (redone <= 1).all(), redone
    assert_study_matches(after, study_of(tmp_path, "kill"), epochs)
    changed = tmp_path / "changed.py"
    changed.write_text((ROOT / "search/spaces/branches.py").read_text() + "\n# edit\n")
    r = sweep(tmp_path, "--name", "kill", "--resume", space=changed)
    assert r.returncode == 2 and "changed" in r.stderr


@pytest.mark.slow
def test_ctrl_c_then_resume(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while a trial is in its first epochs:
    exit 130 with the resume hint, that trial is not recorded as finished, and --resume completes it."""
    n = 4
    args = ["--name", "intr", "--num-samples", str(n), "--max-epochs", "6", "--concurrency", "2",
            "--confirm-seeds", "0", *TINY_SET]
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
    m = re.search(r"interrupted: (\d+) search-stage trials unfinished: resume with the same command plus --resume",
                  err)
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
    assert_study_matches(after, study_of(tmp_path, "intr"), 6)


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
    # an adopting trial (tune_ext.StudySearcher) with no checkpoint of its own starts from its orphan's
    orphan = tmp_path / "exp" / "trial_o1" / "checkpoint_000003"
    orphan.mkdir(parents=True)
    torch.save({"epoch": 4, "history": []}, orphan / CHECKPOINT)
    fresh = StorageContext(str(tmp_path), "exp", trial_dir_name="trial_new")
    assert _fetch_newest(fresh, adopt_from="o1")["epoch"] == 4


def test_asha_replay_restores_rungs(tmp_path):
    from ray.tune.schedulers import TrialScheduler

    from search.results import ResultsTable
    from search.tune_ext import ReplayASHA

    table = ResultsTable(tmp_path / "h.parquet", "h", 8)
    cfg = json.dumps({"grouping": "shared", "clusters": None, "width": 16, "depth": 1, "stacks": 2})
    for i, (tid, epoch, v) in enumerate([("a", 1, 10.0), ("a", 2, 20.0), ("b", 1, 5.0), ("b", 2, 8.0),
                                         ("c", 1, 30.0), ("a", 3, 25.0), ("a", 4, 40.0)]):
        table.add(tid, {"epoch": epoch, "pckh": v, "resolved_config": cfg, "groups": "x"},
                  meta={"stage": "search", "seed": 0, "point": "{}", "audited": False})
        table.rows[tid][epoch]["reported_at"] = float(i)
    table.flush()
    sched = ReplayASHA(str(tmp_path / "h.parquet"), time_attr="epoch", max_t=8, grace_period=1, reduction_factor=2,
                       metric="pckh", mode="max")
    sched._replay()
    assert sched.replayed_results == 7
    assert dict(sched.rung_sizes()) == {8: 0, 4: 1, 2: 2, 1: 3}

    class T:  # a new trial scoring below the recorded epoch-1 median is stopped, exactly as without a restart
        trial_id, config = "d", {}

    assert sched.on_trial_result(None, T(), {"epoch": 1, "pckh": 6.0}) == TrialScheduler.STOP
    T.trial_id, T.config = "e", {"_audit": True}  # ... unless it is audited: recorded, never stopped
    assert sched.on_trial_result(None, T(), {"epoch": 1, "pckh": 6.0}) == TrialScheduler.CONTINUE
    assert dict(sched.rung_sizes())[1] == 5


def test_snapshot_period_keeps_its_share_with_a_margin():
    """Tune's auto period is max(10 s, 19 x the last snapshot); the driver's is max(10 s, 39 x): a snapshot
    twice as long as the one before still stays within 5% of the driver's time."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from search.tune_ext import SNAPSHOT_SHARE, limit_snapshot_share

    original = _ExperimentCheckpointManager._update_auto_checkpoint_time
    try:
        limit_snapshot_share()
        m = _ExperimentCheckpointManager.__new__(_ExperimentCheckpointManager)
        m._auto_checkpoint_enabled, m._checkpoint_period = True, 10.0
        m._update_auto_checkpoint_time(time_taken=2.0)
        assert m._checkpoint_period == pytest.approx(2.0 * (1 / SNAPSHOT_SHARE - 1))
        assert 2 * 2.0 / (2 * 2.0 + m._checkpoint_period) <= 0.05
        m._update_auto_checkpoint_time(time_taken=0.01)
        assert m._checkpoint_period == 10.0
        m._auto_checkpoint_enabled = False  # a fixed TUNE_GLOBAL_CHECKPOINT_S stays as set
        m._update_auto_checkpoint_time(time_taken=5.0)
        assert m._checkpoint_period == 10.0
    finally:
        _ExperimentCheckpointManager._update_auto_checkpoint_time = original


def test_snapshot_period_refuses_a_ray_without_the_hook(monkeypatch):
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from search.tune_ext import limit_snapshot_share

    monkeypatch.delattr(_ExperimentCheckpointManager, "_update_auto_checkpoint_time")
    with pytest.raises(RuntimeError, match=r"pins ray\[tune\]==2.60.0"):
        limit_snapshot_share()
    assert not hasattr(_ExperimentCheckpointManager, "_update_auto_checkpoint_time")  # nothing patched in


def tiny_space(trial):
    trial.suggest_categorical("grouping", ["shared", "human"])


def test_searcher_repeats_get_the_next_seed_and_stopped_trials_are_pruned(tmp_path):
    """A proposal that repeats a point is trained with the next seed (not discarded: every study trial is
    a real trial); ASHA-stopped trials are PRUNED with per-epoch values; the state survives a pickle."""
    import pickle

    from optuna.trial import TrialState

    from search.study import create_study
    from search.tune_ext import StudySearcher

    url = str(tmp_path / "s.optuna.log")
    create_study(url, "s", "max", "pckh", "digest")
    s = StudySearcher(space=tiny_space, metric="pckh", mode="max", max_epochs=4, storage_url=url, study_name="s",
                      stage="search", results=tmp_path / "s.parquet", seed=0,
                      initial=[{"grouping": "shared"}, {"grouping": "shared"}])
    configs = [s.suggest(f"t{i}") for i in range(4)]
    assert configs[:2] == [{"grouping": "shared", "seed": 0}, {"grouping": "shared", "seed": 1}]
    assert all(c["seed"] == sum(d["grouping"] == c["grouping"] for d in configs[:i]) for i, c in enumerate(configs))
    s.on_trial_result("t0", {"pckh": 10.0, "epoch": 1, "params": 5, "gflops": 0.1, "device_seconds_total": 2.0})
    s.on_trial_complete("t0", {"pckh": 12.0, "epoch": 2, "device_seconds_total": 4.0})  # ASHA stopped it at 2 of 4
    s.on_trial_complete("t1", {"pckh": 20.0, "epoch": 4})
    s.on_trial_complete("t2", error=True)
    restored = pickle.loads(pickle.dumps(s))  # what Tune's snapshot keeps: no study, no storage
    restored.on_trial_complete("t3", {"pckh": 1.0, "epoch": 4})
    study = restored.study
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    t0 = study.trials[0]
    assert t0.intermediate_values == {1: 10.0, 2: 12.0} and t0.user_attrs["device_seconds"] == 4.0
    assert (t0.user_attrs["params"], t0.user_attrs["gflops"], t0.user_attrs["stage"]) == (5, 0.1, "search")


def test_a_torn_snapshot_is_moved_aside(tmp_path):
    """tuner.pkl alone (written before any trial) is not restorable state; a newest snapshot that does not
    parse would make Tune restart the whole experiment, and an older one would not match the newest searcher
    state: every snapshot file is moved aside, and the stage restarts from the study (tested end to end in
    test_sigkill_in_both_stages_then_resume)."""
    from search.run import usable_snapshot

    (tmp_path / "tuner.pkl").write_bytes(b"x")
    assert not usable_snapshot(str(tmp_path)) and not usable_snapshot(str(tmp_path / "missing"))
    (tmp_path / "experiment_state-2026-11-24_12-00-00.json").write_text("{}")
    assert usable_snapshot(str(tmp_path))
    (tmp_path / "experiment_state-2026-11-25_12-00-00.json").write_text('{"trial_data": [')
    (tmp_path / "searcher-state-2026-11-25_12-00-00.pkl").write_bytes(b"x")
    assert not usable_snapshot(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "torn-experiment_state-2026-11-24_12-00-00.json", "torn-experiment_state-2026-11-25_12-00-00.json",
        "torn-searcher-state-2026-11-25_12-00-00.pkl", "tuner.pkl"]
