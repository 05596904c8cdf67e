"""Multi-node behaviour on a simulated Ray cluster (ray.cluster_utils.Cluster): CPU only, real Ray."""

import copy
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from search.results import read_results

from .conftest import ROOT, TINY_SET, sweep


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_cluster_yaml_passes_ray_launcher_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster" / name).read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    modes = {c.split("RAY_AUTH_MODE=")[1].split(";")[0] for c in starts if "ray start" in c}
    assert modes == {"disabled"}, "RAY_AUTH_MODE must be set identically on head and workers"
    assert all("RAY_AUTH_MODE" in c for c in starts if "ray start" in c)
    assert "2.60.0" in raw["docker"]["image"] and "py311" in raw["docker"]["image"]
    # the head runs the driver and no trials
    assert any("--head" in c and "--num-cpus=0" in c for c in raw["head_start_ray_commands"])
    if "available_node_types" in raw:
        assert raw["available_node_types"][raw["head_node_type"]]["resources"]["CPU"] == 0
        assert any(t.get("min_workers", 0) == 0 and t["resources"].get("GPU", 0) >= 1
                   for t in raw["available_node_types"].values())  # autoscaling GPU workers from zero
    text = (ROOT / "cluster" / name).read_text()
    assert "PBN_STORAGE" in text


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
            "--cpus-per-trial", "1", "--gpus-per-trial", "1", *TINY_SET, "--set", "synthetic_train=96"]
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
    from search.run import storage_problem

    assert "workers cannot reach it" in storage_problem({"10.0.0.1", "10.0.0.2"}, "/tmp/local/path")
    assert storage_problem({"10.0.0.1", "10.0.0.2"}, "s3://bucket/pbn") is None
    assert storage_problem({"10.0.0.1"}, "/tmp/local/path") is None  # one machine (or a simulated cluster)
