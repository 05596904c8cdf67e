"""A sweep whose storage is S3 (a moto server on this machine): checkpoints, Tune's files and a copy of the
sweep's state live there, pandas reads the results straight from the bucket, a SIGKILLed driver resumes, and a
fresh head (empty results directory, empty home) resumes from the bucket alone."""

import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from search.results import read_results

from .conftest import ROOT, TINY_SET

BUCKET = "pbn-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port, and the environment a driver (and its Ray workers) needs to use it."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import pyarrow.fs as pafs

    pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(BUCKET)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def _driver(tmp_path, results, name, *extra, home=None):
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(ROOT / "search/spaces/branches.py"),
           "--results", str(results), "--name", name, "--storage", f"s3://{BUCKET}/sweeps", "--num-samples", "3",
           "--max-epochs", "3", "--concurrency", "2", "--confirm-max-seeds", "0", *TINY_SET, *extra]
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    return cmd, env


def _kill_when(cmd, env, cwd, parquet, ready, timeout=300) -> None:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if parquet.exists() and ready(read_results(parquet)):
            break
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=60)


def _remote(name: str) -> pd.DataFrame:
    return pd.read_parquet(f"s3://{BUCKET}/sweeps/{name}/{name}.parquet")


def _check_complete(df: pd.DataFrame, n: int, study) -> None:
    from .test_search import assert_study_matches

    assert df["trial_id"].nunique() == n and set(df["status"]) == {"TERMINATED"}
    assert not df.duplicated(["trial_id", "epoch"]).any()
    for _, g in df.groupby("trial_id"):
        assert sorted(g["epoch"]) == list(range(1, g["epoch"].max() + 1))
    assert_study_matches(df, study, 3)


def _study(url: str, name: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(url)))


@pytest.mark.slow
def test_an_s3_sweep_killed_and_resumed_reads_back_from_the_bucket(tmp_path, s3):
    results = tmp_path / "results"
    cmd, env = _driver(tmp_path, results, "s3kill")
    parquet = results / "s3kill.parquet"
    _kill_when(cmd, env, tmp_path, parquet, lambda df: len(df) >= 3 and (df.status == "RUNNING").any())
    before = _remote("s3kill")
    r = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    local, remote = read_results(parquet), _remote("s3kill")
    pd.testing.assert_frame_equal(local.sort_values(["trial_id", "epoch"]).reset_index(drop=True),
                                  remote.sort_values(["trial_id", "epoch"]).reset_index(drop=True))
    _check_complete(remote, 3, _study(str(results / "s3kill.optuna.log"), "s3kill"))
    assert set(before["trial_id"]) <= set(remote["trial_id"])
    # the trials' checkpoints went to the bucket, not to the results directory
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(f"s3://{BUCKET}/sweeps/s3kill/checkpoints")
    stored = [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if i.path.endswith(".pt")]
    assert stored and not list(results.rglob("*.pt"))


@pytest.mark.slow
def test_a_fresh_head_resumes_from_the_bucket_alone(tmp_path, s3):
    """The head dies (SIGKILL) mid-sweep and its disk with it: a new head, with an empty results directory and
    an empty home, runs the same command plus --resume and finishes the sweep, losing nothing and repeating
    nothing that the bucket held."""
    first, second = tmp_path / "head1", tmp_path / "head2"
    for d in (first, second):
        (d / "home").mkdir(parents=True)
    cmd, env = _driver(first, first / "results", "lost", home=first / "home")
    _kill_when(cmd, env, first, first / "results" / "lost.parquet",
               lambda df: (df.status == "TERMINATED").any() and (df.status == "RUNNING").any())
    time.sleep(0.5)
    held = _remote("lost")  # what the lost head had put in the bucket
    cmd2, env2 = _driver(second, second / "results", "lost", "--resume", home=second / "home")
    r = subprocess.run(cmd2, cwd=second, env=env2, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = _remote("lost")
    _check_complete(after, 3, _study(str(second / "results" / "lost.optuna.log"), "lost"))
    finished = set(held.loc[held.status == "TERMINATED", "trial_id"])
    assert finished
    for tid in finished:  # finished on the lost head: not re-run
        pd.testing.assert_frame_equal(held[held.trial_id == tid].reset_index(drop=True),
                                      after[after.trial_id == tid].reset_index(drop=True))
    merged = held.merge(after, on=["trial_id", "epoch"], suffixes=("_held", "_after"))
    assert len(merged) == len(held)  # every row the bucket held is still there
    redone = merged[merged.reported_at_held != merged.reported_at_after].groupby("trial_id").size()
    assert (redone <= 1).all(), redone  # in-flight trials continued from their checkpoints
    print(f"\nlost head: the bucket held {len(held)} rows of {held.trial_id.nunique()} trials "
          f"({len(finished)} finished); after the fresh head's resume {len(after)} rows of "
          f"{after.trial_id.nunique()} trials")
