"""End-to-end sweeps with real Ray, Optuna and Parquet (subprocesses, tiny budgets)."""

import contextlib
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

from .conftest import ROOT, SAMPLES, SLOWER_SET, TINY_SET, run_cli, sweep


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
    r = sweep(tmp_path, "--name", "e2e", "--num-samples", "5", "--max-epochs", "3", "--concurrency", "2",
              "--confirm-top", "2", "--confirm-max-seeds", "3", *TINY_SET)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "Verdict:" in out and "e2e.parquet" in out and "confirmation race (look at 3 seeds)" in out
    assert "Checkpoint successfully created" not in out and "Current best trial" not in out
    df = pd.read_parquet(tmp_path / "results" / "e2e.parquet")
    assert not df.duplicated(["trial_id", "epoch"]).any() and set(df["status"]) == {"TERMINATED"}
    search, confirm = df[df.stage == "search"], df[df.stage == "confirm"]
    assert search["trial_id"].nunique() == 5
    # a point proposed again is trained with the next seed: per point, seeds 0, 1, ... and never twice
    seeds = search.groupby("point")["seed"].apply(lambda s: sorted(set(s)))
    assert all(v == list(range(len(v))) for v in seeds), seeds
    assert search.drop_duplicates("trial_id").groupby(["point", "seed"]).size().max() == 1
    assert set(search["grouping"]) == {"shared", "per-part", "human", "mi"}  # the pinned first trials, nothing else
    assert str(df["clusters"].dtype) == "Int64" and df.loc[df.grouping != "mi", "clusters"].isna().all()
    assert df.loc[df.grouping == "mi", "clusters"].notna().all()
    for col, kind in [("epoch", "int64"), ("seed", "int64"), ("stage", "string"), ("pckh", "float64"),
                      ("pckh_lo", "float64"), ("pckh_occluded_hi", "float64"), ("params", "int64"),
                      ("gflops", "float64"), ("device_seconds", "float64"), ("stopped_early", "boolean"),
                      ("audited", "boolean"), ("status", "string")]:
        assert str(df[col].dtype) == kind, col
    last = search.groupby("trial_id")["epoch"].max()
    early = search.groupby("trial_id")["stopped_early"].first()
    assert ((last < 3) == early).all()
    # the confirmation race: each grouping's representative (the top 2 are among them), one look of 3 paired seeds
    # (the cap), every replicate of a point the same model: the same joint groups (mi included)
    points = confirm.groupby("point")["seed"].apply(lambda s: sorted(set(s)))
    assert len(points) == 4 and all(s == [1000, 1001, 1002] for s in points)  # never a search-stage seed
    assert (confirm.groupby("trial_id").epoch.max() == 3).all() and not confirm["stopped_early"].any()
    assert (confirm.groupby("point")["groups"].nunique() == 1).all()
    mi = df[df.grouping == "mi"]
    assert mi.groupby("point")["groups"].nunique().max() == 1  # search and confirmation trials alike
    epochs = df[df.epoch > 0]
    assert epochs[["params", "gflops", "device_seconds", "pckh_lo", "pckh_hi"]].notna().all().all()
    assert (epochs.pckh_lo <= epochs.pckh).all() and (epochs.pckh <= epochs.pckh_hi).all()
    assert df["pckh"].between(0, 100).all() and df["git_commit"].str.len().gt(6).all()
    cfg = json.loads(df["config"].iloc[0])
    assert cfg["synthetic_train"] == 32 and cfg["epochs"] == 3
    assert (df["groups"].str.count(r"\|") + 1 == df.apply(
        lambda r: {"shared": 1, "per-part": 16, "human": 6}.get(r.grouping, r.clusters), axis=1)).all()
    assert_study_matches(df, study_of(tmp_path, "e2e"), 3)
    rep = run_cli("search.report", str(tmp_path / "results" / "e2e.parquet"))
    assert rep.returncode == 0, rep.stderr
    report = tmp_path / "results" / "e2e"
    assert "\n## Verdict\n" in (report / "summary.md").read_text()
    verdict = json.loads((report / "verdict.json").read_text())
    # 3 contrasts vs shared, on PCKh and on occluded PCKh, each with a decision
    assert len(verdict) == 2 * 3 and all(v["epoch"] == 3 and v["n_seeds"] == 3 and v["b"] == "shared W=64 D=1" and
                                         v["decision"] in ("better", "worse", "equivalent", "undecided")
                                         for v in verdict)
    for name in ("pareto.png", "cost_curve.png", "importance.png", "per_seed.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
    events = list((report / "tensorboard" / "confirm").glob("mi k=5 W=64 D=1 seed 100[0-2]/events.out.tfevents.*"))
    assert len(events) == 3  # TensorBoard runs named by point, seed and stage
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
    r = sweep(tmp_path, "--name", "mine", "--confirm-max-seeds", "0", space=space)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = read_results(tmp_path / "results" / "mine.parquet")
    assert df["trial_id"].nunique() == 2 and (df[column] == value).all() and (df["depth"] == 0).all()
    configs = [json.loads(c) for c in df["config"]]
    assert all(c[column] == value and c["depth"] == 0 and c["channels"] == 32 for c in configs)
    assert set(df["width"]) <= {8, 16} and set(df["point"]) <= {'{"width": 8}', '{"width": 16}'}


def driver(tmp_path, *args, space=ROOT / "search/spaces/branches.py") -> tuple[int, str, str]:
    """search/run.py's main(argv) in this process: (exit status, stdout, stderr). For refusals, which happen
    before Ray starts (asserted: no Ray in this process afterwards); a subprocess would add nothing but its start."""
    import contextlib
    import io

    import ray

    from search.run import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--space", str(space), "--results", str(tmp_path / "results"), *args])
    assert not ray.is_initialized(), "Ray was started before the refusal"
    return rc, out.getvalue(), err.getvalue()


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
        rc, _, err = driver(tmp_path, *args, space=space)
        assert rc == 2 and message in err and err.count("\n") == 1, err[-2000:]  # one line
    assert not list(tmp_path.glob("results/*.sweep.json"))


@pytest.mark.slow
def test_the_ablation_grid_trains_every_point(tmp_path):
    r = sweep(tmp_path, "--name", "abl", "--max-epochs", "1", "--confirm-max-seeds", "0", "--concurrency", "2",
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
    rc, _, err = driver(tmp_path, "--name", "bad", "--data", "mpii", "--data-root", str(root), "--set", "batch_size=2")
    assert rc == 2 and bad.name in err and "truncated" in err, err[-2000:]
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

    r = sweep(tmp_path, "--name", "nan", "--num-samples", "1", "--max-epochs", "2", "--confirm-max-seeds", "0",
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
    from search.sweep import lock_sweep

    fd = lock_sweep(tmp_path / "results" / "busy.lock", "busy")  # this process plays the running driver
    try:
        for extra in ([], ["--resume"]):  # a subprocess: flock locks are per process
            r = sweep(tmp_path, "--name", "busy", "--num-samples", "1", *extra)
            assert r.returncode == 2 and "is already running" in r.stderr, r.stderr[-2000:]
            assert f"pid {os.getpid()}" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "results" / "busy.parquet").exists()
    finally:
        os.close(fd)
    rc, _, err = driver(tmp_path, "--name", "busy", "--resume")  # released: the refusal is about the sweep itself
    assert rc == 2 and "no sweep named 'busy'" in err


def test_malformed_space_and_unknown_resume_refused_before_ray(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("METRIC = 'pckh'\ndef space(trial):\n    return None\n")
    r = sweep(tmp_path, space=bad)  # the one subprocess smoke test of search/run.py's refusals
    assert r.returncode == 2 and "missing MAX_EPOCHS, FIXED" in r.stderr and "Traceback" not in r.stderr
    assert "Started a local Ray instance" not in r.stdout + r.stderr  # refused before Ray
    text = (ROOT / "search/spaces/branches.py").read_text()
    cases = [(text.replace('"preset": "small"', '"presett": 1'), "presett"),
             (text.replace('METRIC = "pckh"', 'METRIC = "val_loss"\nMODE = "max"'),
              "MODE 'max' contradicts METRIC 'val_loss'"),
             (text.replace("MARGIN = 3.0", ""), "CONFIRM_MAX_SEEDS needs MARGIN"),
             (text.replace("LOOKS = (3, 5, 8, 12)", "LOOKS = (5, 3)"), "looks must be strictly increasing"),
             (text + "\nFAMILY = 'vs-reference'\nREFERENCE = {'grouping': 'nope'}\n", "needs REFERENCE")]
    for source, message in cases:
        bad.write_text(source)
        rc, _, err = driver(tmp_path, space=bad)
        assert rc == 2 and message in err, err
    rc, _, err = driver(tmp_path, "--name", "never", "--resume")
    assert rc == 2 and "no sweep named 'never'" in err
    rc, _, err = driver(tmp_path, "--name", "m", "--margin", "-1")
    assert rc == 2 and "margin must be a positive number" in err, err


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
    """Kill -9 the driver (and its Ray) while search trials run, cut the newest checkpoint of an in-flight trial
    short, delete Tune's files, resume; kill it again while confirmation trials run, delete Tune's files again,
    resume: the sweep ends with exactly the asked trials, no (trial, epoch) twice, no finished trial re-run,
    in-flight trials continued from their newest readable checkpoint, and the study matching the Parquet file.
    Nothing of Tune's survives a kill here: the study and the Parquet file are the whole state."""
    n, epochs = 4, 5
    args = ["--name", "kill", "--num-samples", str(n), "--max-epochs", str(epochs), "--concurrency", "2",
            "--confirm-max-seeds", "3", "--confirm-top", "0", *TINY_SET]
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
           "--results", str(tmp_path / "results"), *args]
    parquet, ckpts = tmp_path / "results" / "kill.parquet", tmp_path / "results" / "tune" / "kill" / "checkpoints"

    def in_flight(df, stage, at_least):
        last = df[(df.stage == stage) & (df.status == "RUNNING")].groupby("trial_id").epoch.max()
        return [t for t, e in last.items() if at_least <= e < epochs and len(list((ckpts / t).glob("epoch-*.pt"))) >= 2]

    start = dict(cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    before = _kill_when(subprocess.Popen(cmd, **start), parquet, lambda df: bool(in_flight(df, "search", 2)))
    killed_at = time.time()
    finished_before = set(before.loc[before.status == "TERMINATED", "trial_id"])
    victim = in_flight(before, "search", 2)[0]
    newest = sorted((ckpts / victim).glob("epoch-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # as if the kill came mid-write
    cut_epoch = int(newest.stem.split("-")[1])
    shutil.rmtree(tmp_path / "results" / "tune" / "kill" / "tune")

    mid = _kill_when(subprocess.Popen([*cmd, "--resume"], **start), parquet,
                     lambda df: len(in_flight(df, "confirm", 1)) >= 1)
    shutil.rmtree(tmp_path / "results" / "tune" / "kill" / "tune")
    r = sweep(tmp_path, "--resume", *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = pd.read_parquet(parquet)
    assert after.loc[after.stage == "search", "trial_id"].nunique() == n
    assert after.loc[after.stage == "confirm", "trial_id"].nunique() == 4 * 3  # 4 strategies x 3 seeds (the cap)
    assert not after.duplicated(["trial_id", "epoch"]).any()
    assert set(after["status"]) == {"TERMINATED"}, r.stdout[-4000:] + r.stderr[-4000:]
    for _, grp in after.groupby("trial_id"):
        assert sorted(grp["epoch"]) == list(range(1, grp["epoch"].max() + 1))  # epochs continue, no gaps
    assert (after[after.stage == "confirm"].groupby("trial_id").epoch.max() == epochs).all()
    # the victim trained its cut epoch again, after the kill: from the checkpoint before it, not from scratch
    redo = after[(after.trial_id == victim) & (after.epoch == cut_epoch)]
    assert redo["reported_at"].iloc[0] > killed_at
    earlier_rows = after[(after.trial_id == victim) & (after.epoch < cut_epoch - 1)]
    assert (earlier_rows["reported_at"] < killed_at).all()
    # finished trials were not re-run: their rows are byte-identical
    for tid in finished_before:
        a = before[before.trial_id == tid].reset_index(drop=True)
        b = after[after.trial_id == tid].reset_index(drop=True)
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
            "--confirm-max-seeds", "0", *SLOWER_SET]
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
           "--results", str(tmp_path / "results"), *args]
    parquet = tmp_path / "results" / "intr.parquet"
    with open(tmp_path / "stderr.txt", "w") as log:  # a file, not a pipe nobody reads until the end
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    deadline, victim = time.time() + 240, None
    while time.time() < deadline and victim is None and proc.poll() is None:  # a trial that reported epoch 1
        if parquet.exists():  # only: ASHA's first rung is epoch 2, so nothing but the interruption can end it now
            last = read_results(parquet).groupby("trial_id")["epoch"].max()
            victim = next(iter(last[last == 1].index), None)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=180)
    err = (tmp_path / "stderr.txt").read_text()
    assert victim is not None and proc.returncode == 130, (victim, proc.returncode, err[-3000:])
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




@pytest.mark.slow
def test_sigterm_ends_a_running_sweep_within_ten_seconds_and_resumably(tmp_path):
    """SIGTERM to the driver alone (as a batch scheduler sends it): exit within 10 s with the resume hint, and the
    trial it cut short is neither finished nor failed in the Parquet file or the study."""
    from optuna.trial import TrialState

    args = ["--name", "term", "--num-samples", "2", "--max-epochs", "6", "--concurrency", "2", "--confirm-max-seeds",
            "0", *SLOWER_SET]
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
           "--results", str(tmp_path / "results"), *args]
    parquet = tmp_path / "results" / "term.parquet"
    with open(tmp_path / "stderr.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (parquet.exists() and (read_results(parquet).epoch == 1).any()):
            time.sleep(0.1)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.time() - t0
        err = (tmp_path / "stderr.txt").read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the Ray processes the driver started, if any are left
        subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=60)
    assert proc.returncode == 130 and took < 10, (proc.returncode, took, err[-6000:])
    assert "resume with the same command plus --resume" in err
    df = pd.read_parquet(parquet)
    last = df.groupby("trial_id").agg(epoch=("epoch", "max"), status=("status", "first"))
    assert (last.status == "RUNNING").any() and "ERROR" not in set(last.status)
    assert not ((last.epoch < 6) & (last.status == "TERMINATED")).any()
    states = {t.state for t in study_of(tmp_path, "term").trials}
    assert TrialState.FAIL not in states and TrialState.RUNNING in states
    print(f"\nSIGTERM -> exit {proc.returncode} after {took:.1f} s")
