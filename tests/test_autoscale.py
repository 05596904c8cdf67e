"""The sweep driver against an autoscaling Ray cluster, and its connection never hanging (search/connect.py).

The cluster is Ray's `fake_multinode` provider: a real autoscaler whose "machines" are Ray nodes it starts on this
one, from a head with nothing to run trials on. Everything here starts its processes in sessions of their own and
stops exactly those (other Rays may run on this machine: no `ray stop`), under a private RAY_TMPDIR."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import ROOT, TINY_SET, free_port, session_members, stop_sessions

TINY_SWEEP = ["--space", str(ROOT / "search/spaces/branches.py"), "--num-samples", "2", "--max-epochs", "1",
              "--confirm-max-seeds", "0", *TINY_SET]
WORKER_TYPE, HEAD_TYPE = "cpu_worker", "ray.head.default"


def _cluster_yaml(gcs_address: str) -> dict:
    """A head with nothing to run trials on and one worker type of 1 CPU, started from zero, up to two."""
    return {
        "cluster_name": "pbn-fake",
        "max_workers": 2,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True,
                     # the provider's nodes join this address, else <ip>:6379 whatever port the head has
                     "gcs_address": gcs_address},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            # the fake provider tags its head with this type: another name makes the autoscaler launch a "head"
            HEAD_TYPE: {"resources": {"CPU": 0, "GPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {"resources": {"CPU": 1, "GPU": 0, "object_store_memory": 100_000_000}, "node_config": {},
                          "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": HEAD_TYPE,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class FakeCluster:
    def __init__(self, address: str, tmpdir: Path, env: dict, session: int):
        self.address, self.tmpdir, self.env, self.session = address, tmpdir, env, session

    def kill(self) -> None:
        """SIGKILL every process of the cluster, as a crash would: `ray_current_cluster` stays behind."""
        stop_sessions({self.session}, grace_s=10, sigs=(signal.SIGKILL,))


def _decoy_monitor() -> subprocess.Popen:
    """A process that looks like the autoscaler monitor of another, config-less Ray on this machine (as a plain
    `ray start --head` or ray.init of someone else runs), started before the cluster so that /proc lists it first."""
    fake = "/nonexistent/ray/autoscaler/_private/monitor.py"
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)", fake,
                             "--gcs-address=127.0.0.1:9"], start_new_session=True)


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    import ray.util

    tmpdir = Path(tempfile.mkdtemp(prefix="pbn-as-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    token = tmpdir / "auth_token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_TMPDIR=str(tmpdir), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), OMP_NUM_THREADS="1",
               PBN_CACHE=str(tmp_path_factory.getbasetemp() / "cache"))  # trials run in the cluster's processes
    decoy = _decoy_monitor()
    sessions = {decoy.pid}
    try:
        for attempt in range(2):  # `ray start` on a loaded machine has failed once to reach its own new GCS
            port = free_port()
            config = tmpdir / "cluster.yaml"
            config.write_text(yaml.safe_dump(_cluster_yaml(f"{ray.util.get_node_ip_address()}:{port}"),
                                             sort_keys=False))
            head = [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}", "--num-cpus=0",
                    "--num-gpus=0", f"--autoscaling-config={config}", "--object-store-memory=100000000",
                    "--include-dashboard=false", "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}",
                    "--dashboard-agent-listen-port=0", "--disable-usage-stats"]
            log = tmpdir / f"ray-start-{attempt}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(head, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
            sessions.add(proc.pid)
            proc.wait(timeout=120)
            if proc.returncode == 0:
                break
            print(f"\n`ray start --head` failed (attempt {attempt + 1}):\n{log.read_text()[-2000:]}")
            stop_sessions({proc.pid})
        assert proc.returncode == 0, log.read_text()[-3000:]
        yield FakeCluster(f"127.0.0.1:{port}", tmpdir, env, proc.pid)
    finally:
        stop_sessions(sessions)
        assert not session_members(sessions), "processes of the fake cluster survived SIGKILL"
        shutil.rmtree(tmpdir, ignore_errors=True)


def _driver(tmp_path: Path, name: str, *args: str, env: dict, timeout: float) -> tuple[int | None, str, str, float]:
    """`python search/run.py` in a session of its own (a local Ray it starts is stopped with it). Returns (exit
    code, or None if it was still running at `timeout` (then killed), stdout, stderr, seconds)."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    cmd = [sys.executable, str(ROOT / "search" / "run.py"), "--results", str(tmp_path / "results"), "--name", name,
           *args]
    t0 = time.time()
    with open(out, "w") as o, open(err, "w") as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=tmp_path, env=env, start_new_session=True)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = None
    took = time.time() - t0
    stop_sessions({p.pid})
    p.wait()
    return rc, out.read_text(), err.read_text(), took


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.slow
def test_sweep_waits_for_the_autoscaler_to_start_nodes(fake_cluster, tmp_path):
    """No node alive can run a trial (the head has 0 CPU): the sweep says it waits for the autoscaler, which starts
    1-CPU workers from zero, and both trials finish."""
    t0 = time.time()
    # storage: the default (<results>/tune), a local path the fake provider's nodes on this machine all reach
    rc, out, err, took = _driver(tmp_path, "scale", *TINY_SWEEP, "--address", fake_cluster.address,
                                 env=fake_cluster.env, timeout=240)
    print(f"\nautoscaling sweep: exit {rc} after {took:.1f} s wall; its first 20 console lines:\n"
          + "\n".join(out.splitlines()[:20]))
    assert rc == 0, out[-3000:] + err[-3000:]
    assert re.search(rf"^no node alive can run a trial \(1 CPU, 0 GPU\): waiting for the autoscaler to start "
                     rf"{WORKER_TYPE} nodes$", out, re.M), out[:3000]
    df = pd.read_parquet(tmp_path / "results" / "scale.parquet")
    assert df.trial_id.nunique() == 2 and set(df.status) == {"TERMINATED"}, df[["trial_id", "epoch", "status"]]
    # the trials ran on workers the autoscaler started (the head has no CPU)
    status = subprocess.run([str(Path(sys.executable).with_name("ray")), "status", "--address",
                             fake_cluster.address], capture_output=True, text=True, env=fake_cluster.env, timeout=60)
    assert re.search(rf"^\s*[12] {WORKER_TYPE}$", status.stdout, re.M), status.stdout + status.stderr
    workers = re.findall(rf"[12] {WORKER_TYPE}", status.stdout)
    print(f"(test {time.time() - t0:.1f} s; `ray status` after it: {workers})")


@pytest.mark.slow
def test_a_trial_no_node_type_fits_is_refused(fake_cluster, tmp_path):
    """--gpus-per-trial 1 where neither the nodes alive nor the one worker type have a GPU: exit 2 at once, one line
    naming the resources asked and what the node types offer; nothing queued, no traceback."""
    rc, out, err, took = _driver(tmp_path, "gpu", *TINY_SWEEP, "--address", fake_cluster.address,
                                 "--storage", str(tmp_path / "storage"), "--gpus-per-trial", "1",
                                 env=fake_cluster.env, timeout=300)
    lines = _error_lines(err)
    print(f"\ninfeasible trial refused after {took:.1f} s (exit {rc}):\n" + "\n".join(lines))
    assert rc == 2 and took < 240, (rc, took, err[-3000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: no node can ever run a trial with 1 CPU, 1 GPU"), lines[0]
    assert f"{WORKER_TYPE} 1 CPU, 0 GPU (up to 2)" in lines[0], lines[0]
    assert not (tmp_path / "results" / "gpu.parquet").exists()


@pytest.mark.slow
def test_a_dead_record_is_never_waited_on(fake_cluster, tmp_path):
    """The cluster killed without `ray stop` leaves `ray_current_cluster` naming its dead GCS. A sweep without an
    address (RAY_ADDRESS unset, same RAY_TMPDIR) must not wait on it: it starts its own Ray and finishes, or exits
    2 naming the address; never hangs."""
    record = fake_cluster.tmpdir / "ray" / "ray_current_cluster"
    port = fake_cluster.address.rpartition(":")[2]
    assert record.read_text().strip().endswith(f":{port}"), record.read_text()
    fake_cluster.kill()
    assert record.exists()
    rc, _, err, took = _driver(tmp_path, "dead", *TINY_SWEEP, env=fake_cluster.env, timeout=180)
    assert rc is not None, f"the driver hung on the dead record (killed after {took:.0f} s):\n{err[-3000:]}"
    notes = [line for line in err.splitlines() if line.startswith(("note: the Ray cluster", "error: "))]
    if rc == 0:
        df = pd.read_parquet(tmp_path / "results" / "dead.parquet")
        assert df.trial_id.nunique() == 2 and set(df.status) == {"TERMINATED"}
        print(f"\ndead record: the sweep started its own local Ray and finished in {took:.1f} s\n" + "\n".join(notes))
    else:
        print(f"\ndead record: exit {rc} after {took:.1f} s\n" + "\n".join(notes))
        assert rc == 2 and took < 60 + 30, (rc, took, err[-3000:])  # 60 s bound + the driver's start
        assert any(port in line for line in _error_lines(err)), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert any(f":{port}" in line for line in notes), err[-3000:]  # the dead address is named either way


class SilentServer:
    """Something that accepts TCP at an address and never answers a byte."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.first: float | None = None  # when the first connection came
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
                self.first = self.first or time.time()

    def connections(self) -> int:
        with self.lock:
            return len(self.conns)

    def close(self) -> None:
        self.sock.close()
        with self.lock:
            for c in self.conns:
                c.close()


@pytest.mark.slow
def test_connecting_is_bounded_and_interruptible(tmp_path):
    """A driver connecting to an address that accepts TCP and never answers: SIGTERM or SIGINT ends it within 10 s,
    nonzero, no traceback; left alone it exits 2 within the 60 s bound naming the address."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                             "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_TMPDIR=tempfile.mkdtemp(prefix="pbn-sig-", dir="/tmp"), OMP_NUM_THREADS="1")
    servers = {what: SilentServer() for what in ("SIGTERM", "SIGINT", "alone")}
    procs, t_start = {}, {}
    try:
        for what, server in servers.items():
            out = open(tmp_path / f"{what}.err", "w")
            procs[what] = subprocess.Popen(
                [sys.executable, str(ROOT / "search" / "run.py"), "--results", str(tmp_path / "results"), "--name",
                 what, *TINY_SWEEP, "--address", server.address],
                stdout=subprocess.DEVNULL, stderr=out, cwd=tmp_path, env=env, start_new_session=True)
            out.close()
            t_start[what] = time.time()
        ended = {}
        for what in ("SIGTERM", "SIGINT"):
            p, server = procs[what], servers[what]
            # its TCP probe, then Ray's own connection: now it is waiting inside Ray for an answer
            deadline = time.time() + 90
            while server.connections() < 2 and p.poll() is None and time.time() < deadline:
                time.sleep(0.1)
            assert p.poll() is None and server.connections() >= 2, (what, p.poll(), server.connections())
            time.sleep(2)
            t0 = time.time()
            p.send_signal(getattr(signal, what))
            try:
                rc = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                rc = None
            ended[what] = (rc, time.time() - t0, time.time() - t_start[what])
        p = procs["alone"]
        try:
            rc = p.wait(timeout=max(1.0, t_start["alone"] + 150 - time.time()))
        except subprocess.TimeoutExpired:
            rc = None
        ended["alone"] = (rc, time.time() - t_start["alone"], None)
        first = servers["alone"].first
        connecting = time.time() - first if first else None  # from its first TCP connection to its exit
        report = {what: (tmp_path / f"{what}.err").read_text() for what in procs}
        for what, (rc, took, since_start) in ended.items():
            lines = [line for line in report[what].splitlines() if line.startswith(("error:", "interrupted"))]
            extra = f", {since_start:.1f} s after its start" if since_start else ""
            print(f"\n{what}: exit {rc} {took:.1f} s after {'the signal' if since_start else 'its start'}{extra}: "
                  f"{lines}")
        for what in ("SIGTERM", "SIGINT"):
            rc, took, _ = ended[what]
            assert rc not in (None, 0) and took < 10, (what, rc, took, report[what][-3000:])
            assert "Traceback" not in report[what], report[what][-3000:]
        rc, took, _ = ended["alone"]
        print(f"alone: connecting took {connecting:.1f} s (from its first TCP connection to its exit)")
        assert rc == 2, (rc, took, report["alone"][-3000:])
        assert connecting is not None and connecting < 60 + 3, connecting  # every connection attempt: 60 s at most
        assert "Traceback" not in report["alone"]
        errors = _error_lines(report["alone"])
        assert len(errors) == 1 and servers["alone"].address in errors[0], report["alone"][-3000:]
    finally:
        stop_sessions({p.pid for p in procs.values()})
        for p in procs.values():
            p.wait()
        for server in servers.values():
            server.close()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
