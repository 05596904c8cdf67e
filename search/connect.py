"""Join a Ray cluster, and check before a sweep starts that its trials can run there.

Connecting, bounded and interruptible in every case:
- with an address (--address or RAY_ADDRESS): the address must answer within CONNECT_TIMEOUT_S, else one
  line names it; a cluster with token authentication that turns the driver away is named with the fix
  (Ray alone answers with ~20 s of retries and a traceback);
- without one: Ray follows the record of the last cluster started on this machine (`ray_current_cluster`
  in Ray's temporary directory). A record left by a Ray that died without `ray stop` would make Ray wait
  on its dead address forever; here a live recorded cluster is joined (on a head node, where `ray submit`
  runs the driver, that is the cluster) and a dead one is reported and replaced by a new local Ray.
All of it takes CONNECT_TIMEOUT_S at most (then exit 2 naming the address), and Ctrl-C and SIGTERM end the driver at
once while it connects (Ray's waits hold the main thread in C++, where Python's signal handlers never run).

Checking, before any trial is queued (`check_cluster`): a trial's resources must fit a node that is alive,
or one the cluster's autoscaler can launch (GPU workers of cluster/gpu.yaml start from zero); the storage
must be reachable from every machine the sweep may use, including machines not launched yet.

Ray's token sources, first found wins: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token.
Ray sends a token only when RAY_AUTH_MODE=token; with an explicit address it never turns that mode on by itself
(so a laptop's own token is not sent to whatever listens at the address), and neither does this module.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
# Where the cluster's token lives, and how a driver gets it: cluster/*.yaml, docs/cluster.md.
FIX = ("copy the cluster's token (~/.ray/<cluster_name>/auth_token where `ray up` ran and on every node; from the "
       "head: `ray rsync-down <cluster yaml> '~/.ray/<cluster_name>/' ~/.ray/<cluster_name>/`) and export "
       "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<that file>")
CONNECT_TIMEOUT_S = 60.0  # the longest any connection attempt may take
PROBE_TIMEOUT_S = 5.0  # one TCP attempt at the GCS port
NODE_WAIT_S = 170.0  # an autoscaler whose node types are unknown gets this long to start a node that fits a trial


class ConnectError(RuntimeError):
    """The driver cannot join the Ray cluster as configured, or the cluster can never run a trial."""


def connect(address: str | None) -> None:
    """ray.init as the sweep driver needs it (see the module doc); ConnectError with the fix otherwise."""
    target = address or os.environ.get("RAY_ADDRESS") or None
    with _Guard() as guard:  # everything below: CONNECT_TIMEOUT_S at most, and Ctrl-C/SIGTERM end it at once
        _connect(target, guard)


def _connect(target: str | None, guard: _Guard) -> None:
    if target in ("local",):
        _init("local", "a new local Ray", guard)
        return
    if target is None or target == "auto":
        recorded = recorded_cluster()
        if recorded:
            guard.what = f"the Ray cluster at {recorded} (recorded in {ray_address_file()})"
        if recorded and _reachable(recorded, PROBE_TIMEOUT_S):
            _init(recorded, f"the Ray cluster at {recorded} (recorded in {ray_address_file()})", guard)
        elif target == "auto":
            raise ConnectError(f"--address auto: no live Ray cluster on this machine (record: {recorded or 'none'}); "
                               "start one with `ray start --head`, or leave --address out for a local Ray")
        else:
            if recorded:
                print(f"note: the Ray cluster recorded in {ray_address_file()} ({recorded}) does not answer: a Ray "
                      "that died without `ray stop` (run `ray stop` to clear it); starting a new local Ray",
                      file=sys.stderr, flush=True)
            _init("local", "a new local Ray", guard)
        return
    guard.what = f"the Ray cluster at {target}"
    guard.hint = ": is it the address (host:port) of a Ray cluster's GCS, and does that cluster run?"
    if "://" not in target:
        mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
        source = token_source() if mode == "token" else None  # ConnectError if token mode has no usable token
        seconds = max(1.0, guard.left() - PROBE_TIMEOUT_S)  # its own message before the guard's deadline
        if not _wait_reachable(target, seconds):
            raise ConnectError(f"nothing answers at the Ray cluster address {target} (tried for "
                               f"{seconds:.0f} s): is the cluster up (`ray status` on its head), and the "
                               "address host:port of its GCS?")
        from search import compat

        # against something that accepts TCP and never answers, Ray's GCS client retries ~40 s: the guard bounds it
        if compat.gcs_accepts(target) is False:
            raise ConnectError(rejection(target, mode, source))
    _init(target, f"the Ray cluster at {target}", guard)


class _Guard:
    """A connection attempt's bounds: after CONNECT_TIMEOUT_S the process exits 2 naming what it waited for, and
    SIGINT/SIGTERM end it at once (exit 128 + the signal). Ray's waits (its GCS client's retries, ray.init) hold the
    main thread in C++, where Python's signal handlers never run: the signals are blocked there, and in every
    thread started meanwhile (Ray's), and a watchdog thread takes them with sigtimedwait()."""

    WATCHED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, seconds: float = CONNECT_TIMEOUT_S):
        self.seconds, self.what, self.hint = seconds, "the Ray cluster", ""
        self.deadline = time.monotonic() + seconds
        self.done = threading.Event()
        self.main = threading.current_thread() is threading.main_thread()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def __enter__(self) -> _Guard:
        if self.main:
            signal.pthread_sigmask(signal.SIG_BLOCK, self.WATCHED)
        self.thread = threading.Thread(target=self._watch, daemon=True, name="connect-watchdog")
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(timeout=2)
        if self.main:  # a signal that came after the watchdog stopped is delivered now, to Python's handlers
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.WATCHED)

    def _watch(self) -> None:
        while not self.done.is_set():
            left = self.left()
            if left <= 0:
                print(f"error: no answer from {self.what} within {self.seconds:.0f} s{self.hint}", file=sys.stderr,
                      flush=True)
                os._exit(2)
            got = signal.sigtimedwait(self.WATCHED, min(left, 0.5)) if self.main else self.done.wait(min(left, 0.5))
            if got and self.main and not self.done.is_set():
                print(f"\ninterrupted while connecting to {self.what}", file=sys.stderr, flush=True)
                os._exit(128 + got.si_signo)


def _init(address: str, what: str, guard: _Guard) -> None:
    """ray.init within the guard's bounds. "local" starts a new Ray: ray.init(address=None) would follow the
    record of the last cluster (`ray_current_cluster`), dead or alive."""
    import ray

    guard.what = what
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=True)
    except Exception as e:
        if _is_auth_failure(e):
            mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
            raise ConnectError(rejection(address, mode, _quiet_source() if mode == "token" else None)) from None
        if isinstance(e, ConnectionError):
            raise ConnectError(f"cannot join {what}: {e}") from None
        raise


def ray_address_file() -> Path:
    """Ray's record of the last cluster started on this machine (RAY_TMPDIR moves it)."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    return Path(base) / "ray" / "ray_current_cluster"


def recorded_cluster() -> str | None:
    try:
        return ray_address_file().read_text().strip() or None
    except OSError:
        return None


def _reachable(address: str, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def _wait_reachable(address: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if _reachable(address, min(PROBE_TIMEOUT_S, max(0.1, deadline - time.monotonic()))):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def token_source() -> str:
    """Where a driver in token mode takes its token from (Ray's precedence); ConnectError if from nowhere."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    if path:
        if not _readable_token(Path(path)):
            # Ray would abort the whole process on this (a failed RAY_CHECK in its token loader)
            raise ConnectError(f"RAY_AUTH_TOKEN_PATH={path} is not a readable, non-empty token file: {FIX}")
        return f"RAY_AUTH_TOKEN_PATH={path}"
    default = Path.home() / ".ray" / "auth_token"
    if _readable_token(default):
        return str(default)
    raise ConnectError("RAY_AUTH_MODE=token but this driver has no token (RAY_AUTH_TOKEN and RAY_AUTH_TOKEN_PATH "
                       f"are unset and {default} does not exist): {FIX}")


def rejection(address: str, mode: str, source: str | None) -> str:
    """One line: why the cluster at `address` refused this driver, and the fix."""
    if mode != "token":
        now = f"RAY_AUTH_MODE={mode}" if mode else "RAY_AUTH_MODE is unset"
        return (f"the Ray cluster at {address} requires token authentication and this driver sent no token "
                f"({now}): {FIX}")
    return (f"the Ray cluster at {address} rejected this driver's token (from {source or 'its token source'}): "
            f"it is not the cluster's current token, e.g. an old one after a rotation; {FIX}")


def _readable_token(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except (OSError, UnicodeDecodeError):
        return False


def _quiet_source() -> str | None:
    try:
        return token_source()
    except ConnectError:
        return None


def _is_auth_failure(error: BaseException) -> bool:
    """ray.init's ConnectionError wraps the GCS's authentication error in its cause's text."""
    from ray.exceptions import AuthenticationError

    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, AuthenticationError) or "InvalidAuthToken" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


# ------------------------------------------------------------------------------------ can trials run here?
def check_cluster(cpus: float, gpus: float, storage: str, node_wait_s: float = NODE_WAIT_S) -> str:
    """Refuse, before any trial is queued, what would otherwise fail on workers or pend forever; returns a line
    for the console when the sweep will wait for an autoscaler to start its nodes (else "")."""
    import ray

    ask = {"CPU": cpus, "GPU": gpus}
    alive = [n for n in ray.nodes() if n.get("Alive")]
    types = autoscaler_node_types(alive)
    problem = storage_problem({n["NodeManagerAddress"] for n in alive}, storage, types)
    if problem:
        raise ConnectError(problem)
    if any(fits(n["Resources"], ask) for n in alive):
        return ""
    offered = ", ".join(f"{n['NodeManagerAddress']} {_fmt(n['Resources'])}" for n in alive)
    if types is None:  # no autoscaler: what is alive is all there will be
        raise ConnectError(f"no node can ever run a trial with {_fmt(ask)}; nodes alive: {offered}; and no autoscaler "
                           "can add one (lower --cpus-per-trial / --gpus-per-trial, or add nodes)")
    if types:
        launchable = {name: t for name, t in types["node_types"].items() if t["max_workers"] > 0}
        fitting = [name for name, t in launchable.items() if t["resources"] is None or fits(t["resources"], ask)]
        if fitting:
            return (f"no node alive can run a trial ({_fmt(ask)}): waiting for the autoscaler to start "
                    f"{' or '.join(fitting)} nodes")
        kinds = "; ".join(f"{name} {_fmt(t['resources'])} (up to {t['max_workers']})" for name, t in launchable.items())
        raise ConnectError(f"no node can ever run a trial with {_fmt(ask)}: nodes alive: {offered}; node types the "
                           f"autoscaler can launch: {kinds or 'none'} (lower --cpus-per-trial / --gpus-per-trial, or "
                           "add a node type that fits)")
    return _wait_for_a_fitting_node(ask, node_wait_s, offered)


def _wait_for_a_fitting_node(ask: dict, seconds: float, offered: str) -> str:
    """An autoscaler whose node types are unknown (e.g. KubeRay's, outside the head): ask it for one trial's
    resources and give it `seconds` to start a node that fits."""
    import ray
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{k: v for k, v in ask.items() if v}])
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(fits(n["Resources"], ask) for n in ray.nodes() if n.get("Alive")):
                return ""
            time.sleep(2.0)
    finally:
        request_resources(bundles=[])
    raise ConnectError(f"no node can run a trial with {_fmt(ask)}: the autoscaler started none within {seconds:.0f} "
                       f"s; nodes alive: {offered} (lower --cpus-per-trial / --gpus-per-trial, or check `ray status`)")


def fits(resources: dict, ask: dict) -> bool:
    return all(resources.get(k, 0) >= v for k, v in ask.items() if v)


def _fmt(resources: dict | None) -> str:
    if resources is None:
        return "(resources unknown)"
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or (v and not k.startswith(("node:", "memory",
             "object_store_memory", "accelerator_type")))}
    return ", ".join(f"{v:g} {k}" for k, v in sorted(shown.items())) or "nothing"


def autoscaler_node_types(alive: list[dict]) -> dict | None:
    """The node types this cluster's autoscaler can launch: {"provider": type, "node_types": {name: {"resources":
    dict or None, "max_workers": n}}}; {} if an autoscaler runs but its config cannot be read; None if there is no
    autoscaler. Read on the head node (a 0-CPU task placed there), from the config file its autoscaler was started
    with (`ray up` and `ray start --autoscaling-config` both pass one)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = next((n for n in alive if "node:__internal_head__" in n["Resources"]), None)
    if head is None:
        return None
    task = ray.remote(num_cpus=0)(_autoscaling_config).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(head["NodeID"], soft=False))
    try:
        config = ray.get(task.remote(), timeout=60)
    except Exception as e:  # the head cannot run the probe: decide by the published autoscaler status
        log.warning("could not read the autoscaler's config on the head node: %s", e)
        config = False
    if config is None:
        return None
    if config is False:  # an autoscaler runs if it publishes a report of its own
        from search import compat

        return {} if "autoscaler_report" in (compat.autoscaler_status() or {}) else None
    limit = config.get("max_workers", 0)
    head_type = config.get("head_node_type")
    types = {name: {"resources": t.get("resources"), "max_workers": min(t.get("max_workers", limit), limit)}
             for name, t in (config.get("available_node_types") or {}).items() if name != head_type}
    return {"provider": (config.get("provider") or {}).get("type"), "node_types": types}


def _autoscaling_config():
    """(Runs on the head node.) The YAML config of this cluster's autoscaler process, which runs there; None if none
    runs (or runs without a config), False if its config cannot be read. Other Rays' monitors on the same machine
    (tests, a laptop) are told apart by the GCS address each was started with."""
    import ray
    import yaml  # the cluster image has it (Ray's autoscaler needs it)

    ours = ray.get_runtime_context().gcs_address
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith(("autoscaler/_private/monitor.py", "autoscaler/v2/monitor.py")) for a in args):
            continue
        gcs = next((a.split("=", 1)[1] for a in args if a.startswith("--gcs-address=")), None)
        if gcs is None and "--gcs-address" in args[:-1]:
            gcs = args[args.index("--gcs-address") + 1]
        if gcs and ours and gcs != ours:  # another cluster's monitor
            continue
        path = next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), None)
        if path is None and "--autoscaling-config" in args[:-1]:
            path = args[args.index("--autoscaling-config") + 1]
        if not path:  # a monitor without a config (a plain `ray start --head` or ray.init): nothing to launch
            return None
        try:
            return yaml.safe_load(Path(os.path.expanduser(path)).read_text())
        except (OSError, yaml.YAMLError):
            return False
    return None


def storage_problem(hosts: set[str], storage: str, types: dict | None = None) -> str | None:
    """Why workers could not reach `storage`, or None. A URI or a network file system is shared; a local path
    only when every node is on one machine: the nodes alive now, and any the autoscaler can launch (a provider
    other than the one-machine `local`/`fake_multinode` ones launches other machines)."""
    if "://" in storage or _is_network_fs(storage):
        return None
    node_types = (types or {}).get("node_types") or {}
    launches = (any(t["max_workers"] > 0 for t in node_types.values())
                and types.get("provider") not in ("fake_multinode", "local"))
    if len(hosts) <= 1 and not launches:
        return None
    where = (f"the cluster spans {len(hosts)} machines" if len(hosts) > 1 else
             "the cluster's autoscaler launches workers on other machines")
    return (f"storage {storage!r} is a local path but {where}: workers cannot reach it. Use --storage s3://... (or "
            "set PBN_STORAGE), or a shared NFS path")


def _is_network_fs(path: str) -> bool:
    """Whether `path` lies on a network file system (per /proc/mounts), which other machines can share."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return False
    target = os.path.realpath(path)
    best = max((m for m in mounts if target == m[0] or target.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is not None and best[1].split(".")[0] in ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs",
                                                           "beegfs", "ceph", "fuse", "glusterfs")
