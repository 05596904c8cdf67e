import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MPII = SHARED / "mpii"
VALID = MPII / "valid_subset"
SAMPLES = SHARED / "samples" / "mpii"
LSP_JSON = SHARED / "lsp" / "lsp_train_half_im0001-im1000.json"
KAGGLE_CSV = MPII / "mpii_train_kaggle_one_person_per_image.csv"

# A model/data size that trains in seconds on one CPU core.
TINY = dict(input_size=64, channels=32, hg_depth=2, stacks=2, width=16, depth=1, batch_size=8,
            synthetic_train=48, synthetic_val=16, epochs=2, threads=1, lr=1e-3)


@pytest.fixture(scope="session", autouse=True)
def _shared_data_present():
    if not SHARED.is_dir():
        raise RuntimeError(f"{SHARED} not found: the tests need ../shared beside the project")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PBN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# Sweep settings that train in seconds: tiny synthetic splits, a narrow trunk.
TINY_SET = ["--set", "synthetic_train=32", "--set", "synthetic_val=16", "--set", "channels=32",
            "--set", "batch_size=8"]
# The same with epochs of 1-2 s, not 0.3 s: longer than the results file's write period (about 1 s), so a test
# waiting for a trial at a given epoch sees it before the next epoch is written.
SLOWER_SET = ["--set", "synthetic_train=256", *TINY_SET[2:]]


def run_cli(*args, timeout=300):
    """`python -m <module> <args>` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


def sweep(tmp_path, *args, space=ROOT / "search/spaces/branches.py", timeout=400):
    """`python search/run.py` in a subprocess with results under tmp_path."""
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--space", str(space),
           "--results", str(tmp_path / "results"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the time of asking."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_members(sessions: set[int]) -> list[int]:
    """Pids of the live processes in these sessions (a process started with start_new_session=True leads one, and
    every process it starts stays in it unless it starts a session of its own): exactly what a test started."""
    pids = []
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = st.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) in sessions and fields[0] != "Z":
            pids.append(int(st.parent.name))
    return pids


def stop_sessions(sessions: set[int], grace_s: float = 15, sigs=(15, 9)) -> None:
    """Stop exactly the processes of these sessions (`ray stop` would stop every Ray on this machine): SIGTERM, then
    SIGKILL what is left after grace_s. sigs=(9,) kills at once, as a crash would."""
    import contextlib
    import time

    for sig in sigs:
        for pid in session_members(sessions):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + grace_s
        while session_members(sessions) and time.time() < deadline:
            time.sleep(0.2)
        if not session_members(sessions):
            return
