"""Multi-node behaviour on a simulated Ray cluster (ray.cluster_utils.Cluster): CPU only, real Ray.
Also the cluster configs' security (token auth, listen addresses, AWS ingress and IAM), and a real token-auth
cluster started with the `ray start` CLI as the configs start it."""

import contextlib
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from search.results import read_results

from .conftest import ROOT, TINY_SET, free_port, session_members, stop_sessions, sweep

CONFIGS = ["gpu.yaml", "local.yaml"]


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def _start_commands(raw: dict) -> list[str]:
    return [c for c in raw["head_start_ray_commands"] + raw["worker_start_ray_commands"] if "ray start" in c]


def _auth_env(command: str) -> dict[str, str]:
    """The RAY_AUTH_* variables a shell command sets (before `ray start`, if it runs one)."""
    return dict(re.findall(r"\b(RAY_AUTH_\w+)=([^\s;']+)", command.split("ray start")[0]))


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_yaml_passes_ray_launcher_validation(name):
    from search.compat import validate_cluster_config

    raw = _config(name)
    validate_cluster_config(raw)
    modes = {_auth_env(c).get("RAY_AUTH_MODE") for c in _start_commands(raw)}
    assert modes == {"token"}, "every `ray start` must run with RAY_AUTH_MODE=token (identical on head and workers)"
    assert "2.60.0" in raw["docker"]["image"] and "py311" in raw["docker"]["image"]
    # the head runs the driver and no trials
    assert any("--head" in c and "--num-cpus=0" in c for c in raw["head_start_ray_commands"])
    if "available_node_types" in raw:
        assert raw["available_node_types"][raw["head_node_type"]]["resources"]["CPU"] == 0
        assert any(t.get("min_workers", 0) == 0 and t["resources"].get("GPU", 0) >= 1
                   for t in raw["available_node_types"].values())  # autoscaling GPU workers from zero
    text = (ROOT / "cluster" / name).read_text()
    assert "PBN_STORAGE" in text
    assert not [c for c in raw["setup_commands"] if "|| true" in c], "a failing setup step must fail the node's setup"


def test_every_yaml_key_is_commented():
    import re

    key = re.compile(r"^\s*(- )?[A-Za-z_][\w.]*:(\s|$)")
    for name in ("gpu.yaml", "local.yaml"):
        lines = (ROOT / "cluster" / name).read_text().splitlines()
        for i, line in enumerate(lines):
            if key.match(line):
                above = lines[i - 1].strip() if i else ""
                assert "#" in line or above.startswith("#") or (above.startswith("- ") and "#" in above), \
                    f"{name}:{i + 1}: {line.strip()!r} has no comment"


@pytest.mark.parametrize("name", CONFIGS)
def test_every_node_and_driver_uses_the_clusters_token(name):
    """Token mode on every `ray start`, with the token file that file_mounts copies from outside the checkout
    to the same path on every node; login shells (the `ray submit` driver) get the same two variables."""
    from search.cluster_token import FILE, token_dir

    raw = _config(name)
    mount = token_dir(raw["cluster_name"])
    assert raw["file_mounts"].get(mount) == mount, f"file_mounts must copy {mount} to every node"
    assert not mount.startswith(("./", "~/pbn-search/")) and raw["file_mounts"].get("~/pbn-search") == ".", \
        "the token lives outside the checkout the nodes install"
    token_path = "$HOME/" + mount.removeprefix("~/") + "/" + FILE
    for command in _start_commands(raw):
        assert _auth_env(command) == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}, command
    drivers = [_auth_env(c) for c in raw["setup_commands"] if "RAY_AUTH" in c]  # exported in ~/.bashrc
    assert drivers == [{"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}]
    text = (ROOT / "cluster" / name).read_text()
    assert "RAY_AUTH_TOKEN=" not in text and "RAY_AUTH_MODE=disabled" not in text  # no token, no opt-out, in config


@pytest.mark.parametrize("name", CONFIGS)
def test_nothing_of_ray_listens_on_a_public_address(name):
    raw = _config(name)
    head = [c for c in raw["head_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and "--dashboard-host=127.0.0.1" in head[0] and "--dashboard-port=8265" in head[0], \
        "dashboard and Jobs API on the head's loopback only, where `ray dashboard <yaml>` tunnels (port 8265)"
    for command in _start_commands(raw):
        assert "0.0.0.0" not in command and "--dashboard-host=::" not in command, command
        assert "--ray-debugger-external" not in command, command  # would bind the debugger to all interfaces
    values = json.dumps(raw)  # the config itself, not its comments
    assert "0.0.0.0/0" not in values and "::/0" not in values


def test_aws_ingress_is_ssh_from_the_users_cidr_only():
    """The named security group admits SSH from one EDIT-marked CIDR and nothing else; the launcher adds only the
    all-ports rule between the group's own members (Ray's ports). SecurityGroupIds would bypass the group."""
    raw = _config("gpu.yaml")
    group = raw["provider"]["security_group"]
    assert group["GroupName"]
    assert not any("SecurityGroupIds" in t["node_config"] for t in raw["available_node_types"].values())
    cidrs = []
    for rule in group["IpPermissions"]:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule
        assert not rule.get("Ipv6Ranges") and not rule.get("UserIdGroupPairs") and not rule.get("PrefixListIds")
        cidrs += [r["CidrIp"] for r in rule["IpRanges"]]
    assert cidrs
    for cidr in cidrs:
        assert ipaddress.ip_network(cidr).prefixlen > 0, f"{cidr} admits the whole internet"
        line = next(ln for ln in (ROOT / "cluster" / "gpu.yaml").read_text().splitlines() if cidr in ln)
        assert "EDIT" in line, "the user's SSH CIDR must be marked EDIT"


def test_iam_policy_grants_only_the_sweep_and_dataset_prefixes():
    """cluster/iam-policy.json: read/write under PBN_STORAGE's prefix, read under the dataset prefix, listing of
    those two prefixes only; nothing else, no wildcard actions."""
    raw = _config("gpu.yaml")
    setup = " ".join(raw["setup_commands"])
    bucket, storage = re.search(r"PBN_STORAGE=s3://([^/\s']+)/([^\s']+)", setup).groups()
    data_bucket, data = re.search(r"aws s3 sync \S* ?\S* ?s3://([^/\s]+)/(\S+)", setup).groups()
    assert data_bucket == bucket
    policy = json.loads((ROOT / "cluster" / "iam-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    writes, reads = set(), set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        assert all(a.startswith("s3:") and "*" not in a for a in actions), actions
        if actions == ["s3:ListBucket"]:
            assert resources == [f"arn:aws:s3:::{bucket}"]
            assert set(st["Condition"]["StringLike"]["s3:prefix"]) <= {storage, f"{storage}/*", data, f"{data}/*"}
            continue
        for a in actions:
            (writes if a != "s3:GetObject" else reads).update(resources)

    def under(prefix: str) -> set[str]:
        return {f"arn:aws:s3:::{bucket}/{prefix}", f"arn:aws:s3:::{bucket}/{prefix}/*"}

    assert writes and writes <= under(storage), writes
    assert reads <= under(storage) | under(data) and f"arn:aws:s3:::{bucket}/{data}/*" in reads


def test_cluster_token_command(tmp_path, monkeypatch, capsys):
    from search.cluster_token import main

    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / ".ray" / "pbn-search" / "auth_token"
    assert main([str(ROOT / "cluster" / "gpu.yaml")]) == 0
    first = token.read_text().strip()
    assert len(first) == 64 and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    assert main([str(ROOT / "cluster" / "gpu.yaml")]) == 0 and token.read_text().strip() == first  # kept
    assert main([str(ROOT / "cluster" / "gpu.yaml"), "--rotate"]) == 0
    assert token.read_text().strip() != first and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert first not in capsys.readouterr().out  # never printed
    assert list(token.parent.iterdir()) == [token]  # no temp file left behind


def test_connect_refuses_a_missing_token_file_at_once(tmp_path, monkeypatch):
    """Ray itself would abort the process on this (a failed RAY_CHECK); connect says what to do instead."""
    from search.connect import ConnectError, connect

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    with pytest.raises(ConnectError, match=r"RAY_AUTH_TOKEN_PATH=.*missing is not a readable"):
        connect("127.0.0.1:1")


@contextlib.contextmanager
def _token_cluster(tmp_path: Path, token_file: Path):
    """A head (0 CPUs) and a 1-CPU worker, started with the `ray start` CLI and token auth as cluster/*.yaml start
    them, minus the fixed ports two nodes on one machine cannot share. Yields (address, head's node IP, dashboard
    port); tears down only its own processes."""
    ray_cli = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="pbn-ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    common = ["--object-store-memory=100000000", "--dashboard-agent-listen-port=0", "--disable-usage-stats"]
    head = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0", f"--temp-dir={temp_dir}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", *common]
    worker = [ray_cli, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--num-gpus=0", *common]
    sessions: set[int] = set()
    logs = []
    try:
        for i, cmd in enumerate((head, worker)):
            log = tmp_path / f"ray-start-{i}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            sessions.add(proc.pid)
            proc.wait(timeout=180)
            logs.append(log.read_text())
            assert proc.returncode == 0, logs[-1][-3000:]
        ip = re.search(r"Local node IP: (\S+)", logs[0])
        yield f"127.0.0.1:{port}", ip.group(1) if ip else None, dashboard
    finally:
        stop_sessions(sessions)
        assert not session_members(sessions), "Ray processes of this test survived SIGKILL"
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_token_cluster_admits_only_drivers_with_its_token(tmp_path, monkeypatch):
    """A real multi-process cluster with token auth: a driver with the token runs a one-trial sweep through
    `search/run.py --address`; a driver without it, or with another token, is refused at once with the project's
    one-line message (exit 2, no traceback); the dashboard answers on loopback only."""
    token = tmp_path / "token" / "auth_token"
    token.parent.mkdir(mode=0o700)
    token.write_text(os.urandom(32).hex())
    wrong = tmp_path / "wrong_token"
    wrong.write_text(os.urandom(32).hex())
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    args = ["--num-samples", "1", "--max-epochs", "1", "--confirm-max-seeds", "0", *TINY_SET]
    with _token_cluster(tmp_path, token) as (address, node_ip, dashboard):
        if importlib.util.find_spec("aiohttp"):  # the dashboard needs ray[default] (the cluster image has it)
            deadline = time.time() + 60
            while True:  # the dashboard: up on 127.0.0.1 ...
                try:
                    socket.create_connection(("127.0.0.1", dashboard), timeout=2).close()
                    break
                except OSError:
                    assert time.time() < deadline, "dashboard never listened on 127.0.0.1"
                    time.sleep(0.5)
            if node_ip and not ipaddress.ip_address(node_ip).is_loopback:  # ... and not on the node's address
                with pytest.raises(OSError):
                    socket.create_connection((node_ip, dashboard), timeout=2).close()

        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        t0 = time.time()
        r = sweep(tmp_path, "--name", "authed", "--address", address, *args, timeout=400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        df = pd.read_parquet(tmp_path / "results" / "authed.parquet")
        assert len(df) >= 1 and set(df.status) == {"TERMINATED"}, df
        print(f"\nauthorized one-trial sweep: {time.time() - t0:.1f} s")

        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(wrong))
        t0 = time.time()
        r = sweep(tmp_path, "--name", "wrong", "--address", address, *args, timeout=120)
        took_wrong = time.time() - t0
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert re.search(r"^error: the Ray cluster at \S+ rejected this driver's token", r.stderr, re.M), r.stderr

        monkeypatch.delenv("RAY_AUTH_MODE")
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
        home = tmp_path / "home"  # no ~/.ray/auth_token of whoever runs the tests
        home.mkdir()
        monkeypatch.setenv("HOME", str(home))
        t0 = time.time()
        r = sweep(tmp_path, "--name", "intruder", "--address", address, *args, timeout=120)
        took = time.time() - t0
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert re.search(r"^error: the Ray cluster at \S+ requires token authentication and this driver sent no "
                         r"token \(RAY_AUTH_MODE is unset\): .*RAY_AUTH_TOKEN_PATH", r.stderr, re.M), r.stderr
        assert not list(tmp_path.glob("results/intruder.sweep.json")) and not list(tmp_path.glob("results/wrong.*.log"))
        # the time to the refusal, printed (a measurement, not a test threshold): Ray alone retries ~20 s
        print(f"refused: no token {took:.1f} s, wrong token {took_wrong:.1f} s (process start included)\n"
              f"{r.stderr.strip()}")


def _start_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    return cluster, workers


def _ray_rss_mib() -> float:
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            cmd = (status.parent / "cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if "ray" in cmd or "raylet" in cmd or "gcs_server" in cmd:
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["in-process", "address"])
def test_node_loss_mid_trial(tmp_path, driver):
    """Head with no CPUs + two 1-GPU workers; a worker dies mid-trial; its trials resume from their
    checkpoints on the other worker; the sweep completes with nothing lost or duplicated."""
    import ray

    cluster, workers = _start_cluster()
    n, epochs = 4, 6
    parquet = tmp_path / "results" / "nodeloss.parquet"
    argv = ["--space", str(ROOT / "search/spaces/branches.py"), "--results", str(tmp_path / "results"),
            "--name", "nodeloss", "--num-samples", str(n), "--max-epochs", str(epochs), "--address", cluster.address,
            "--cpus-per-trial", "1", "--gpus-per-trial", "1", "--confirm-max-seeds", "0", *TINY_SET,
            "--set", "synthetic_train=96"]
    loss = {}
    peak = [0.0]

    def kill_a_busy_worker():
        deadline = time.time() + 240
        while time.time() < deadline:
            peak[0] = max(peak[0], _ray_rss_mib())
            if parquet.exists():
                df = read_results(parquet)
                # A trial whose last report is epoch 1 is certainly mid-flight: ASHA's first rung is epoch 2,
                # so nothing can have stopped it (a trial at its final epoch may already be finishing).
                last = df[df.status == "RUNNING"].sort_values("epoch").groupby("trial_id").tail(1)
                fresh = last[last.epoch == 1]
                if len(set(df.node_id)) == 2 and len(fresh):
                    victim_id = fresh.node_id.iloc[0]
                    victim = next(w for w in workers if w.node_id == victim_id)
                    loss["trials"] = set(fresh[fresh.node_id == victim_id].trial_id)
                    loss["time"] = time.time()
                    loss["survivor"] = next(w.node_id for w in workers if w is not victim)
                    cluster.remove_node(victim, allow_graceful=False)
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_a_busy_worker, daemon=True)
    watcher.start()
    try:
        if driver == "in-process":
            from search.run import main

            rc = main(argv)
            ray.shutdown()
        else:
            r = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), *argv], capture_output=True,
                               text=True, timeout=500, cwd=tmp_path)
            rc = r.returncode
            assert rc == 0, r.stdout[-3000:] + r.stderr[-3000:]
        watcher.join(timeout=5)
        assert rc == 0
        assert loss, "no trial was ever running on both workers"
        df = pd.read_parquet(parquet)
        assert df.trial_id.nunique() == n and set(df.status) == {"TERMINATED"}, df[["trial_id", "epoch", "status"]]
        assert not df.duplicated(["trial_id", "epoch"]).any()
        for _, g in df.groupby("trial_id"):
            assert sorted(g.epoch) == list(range(1, g.epoch.max() + 1))
        hit = df[df.trial_id.isin(loss["trials"])]
        failed = hit.groupby("trial_id").num_failures.max()
        assert (failed >= 1).all(), failed
        # every hit trial finished on the surviving worker (rows in flight at the kill may still name the victim)
        finals = hit.sort_values("epoch").groupby("trial_id").tail(1)
        assert set(finals.node_id) == {loss["survivor"]}
        after = hit[hit.reported_at > loss["time"]]
        first_after = after.groupby("trial_id").reported_at.min() - loss["time"]
        resumed_epoch = after.sort_values("reported_at").groupby("trial_id").head(1)
        print(f"\n[{driver}] node loss -> next epoch reported after {first_after.round(1).to_dict()} s "
              f"(epoch itself {resumed_epoch.epoch_seconds.round(1).tolist()} s); "
              f"peak RSS of Ray processes {peak[0]:.0f} MiB")
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_unsatisfiable_trial_resources_refused(tmp_path):
    r = sweep(tmp_path, "--gpus-per-trial", "1", *TINY_SET, timeout=200)
    assert r.returncode == 2 and "no node can ever run a trial" in r.stderr and "Traceback" not in r.stderr


def test_local_storage_refused_on_a_multi_machine_cluster():
    from search.connect import storage_problem

    assert "workers cannot reach it" in storage_problem({"10.0.0.1", "10.0.0.2"}, "/tmp/local/path")
    assert storage_problem({"10.0.0.1", "10.0.0.2"}, "s3://bucket/pbn") is None
    assert storage_problem({"10.0.0.1"}, "/tmp/local/path") is None  # one machine (or a simulated cluster)
    # a lone head whose autoscaler launches workers elsewhere: they would not reach a path on the head
    aws = {"provider": "aws", "node_types": {"gpu": {"resources": {"GPU": 1}, "max_workers": 8}}}
    assert "autoscaler launches workers on other machines" in storage_problem({"10.0.0.1"}, "/tmp/x", aws)
    fake = {**aws, "provider": "fake_multinode"}  # its "machines" are processes on this one
    assert storage_problem({"10.0.0.1"}, "/tmp/x", fake) is None
