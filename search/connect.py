"""Join a Ray cluster, and say in one line what to do when its token authentication turns the driver away.

Every cluster of this project runs with RAY_AUTH_MODE=token (cluster/*.yaml). Left to itself, Ray 2.60 answers
a driver without the right token with about 20 s of retries, one C++ warning a second, and a ConnectionError
whose cause is buried in a traceback; a RAY_AUTH_TOKEN_PATH naming a missing file is refused with a generic
message. `connect` checks the driver's token sources first, asks the cluster's GCS once whether it accepts
them (an immediate answer), and raises ConnectError with the fix instead.

Ray's token sources, first found wins: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token.
Ray sends a token only when RAY_AUTH_MODE=token; with an explicit address it never turns that mode on by itself
(so a laptop's own token is not sent to whatever listens at the address), and neither does this module.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

# Where the cluster's token lives, and how a driver gets it: cluster/*.yaml, README "Running on a GPU cluster".
FIX = ("copy the cluster's token (~/.ray/<cluster_name>/auth_token where `ray up` ran and on every node; from the "
       "head: `ray rsync-down <cluster yaml> '~/.ray/<cluster_name>/' ~/.ray/<cluster_name>/`) and export "
       "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<that file>")
PROBE_TIMEOUT_S = 5.0  # TCP reachability of the GCS port; the authentication answer itself is immediate


class ConnectError(RuntimeError):
    """The driver cannot join the Ray cluster as configured; the message says what to change."""


def connect(address: str | None) -> None:
    """ray.init(address) as the sweep driver needs it; ConnectError, at once, on a token the cluster rejects."""
    import ray

    target = address or os.environ.get("RAY_ADDRESS") or None
    explicit = target is not None and target not in ("auto", "local") and "://" not in target
    if explicit:
        mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
        source = token_source() if mode == "token" else None  # ConnectError if token mode has no usable token
        if _gcs_accepts(target) is False:
            raise ConnectError(rejection(target, mode, source))
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=True)
    except Exception as e:  # the probe was skipped or inconclusive, or the cluster changed its token since
        if not _is_auth_failure(e):
            if isinstance(e, ConnectionError):  # nothing (of Ray's) answers at the address
                raise ConnectError(f"cannot join the Ray cluster at {target}: {e}") from None
            raise
        mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
        raise ConnectError(rejection(target or "the local cluster", mode, _quiet_source() if mode == "token"
                                     else None)) from None


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


def _gcs_accepts(address: str) -> bool | None:
    """Whether the GCS at `address` accepts this process's credentials: True, False (an authentication
    failure), or None when it cannot tell (nothing listens yet, not a GCS, Ray internals changed), in which
    case ray.init decides as it always did. A Ray GcsClient answers an unauthenticated call at once."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except (OSError, ValueError):
        return None
    try:
        from ray._raylet import GcsClient  # internal, pinned with ray==2.60.0; the fallback is ray.init's own error
        from ray.exceptions import AuthenticationError
    except ImportError:
        return None
    try:
        GcsClient(address=address)
    except AuthenticationError:
        return False
    except Exception:
        return None
    return True


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
