"""Make, or rotate, a cluster's Ray auth token where `ray up` runs: `python -m search.cluster_token cluster/gpu.yaml`.

The token goes to ~/.ray/<cluster_name>/auth_token (directory 0700, file 0600): outside the checkout, so neither
git nor the checkout that the nodes install ever holds it. The cluster YAML's file_mounts copy that directory to
the same path on every node, and its start commands point RAY_AUTH_TOKEN_PATH there. One token per cluster,
separate from ~/.ray/auth_token, which `ray get-auth-token --generate` would make and every local ray.init() uses.
The token itself is never printed.

--rotate replaces it. Nodes and drivers read it only when they start, so after a rotation run `ray down` and
`ray up` on the YAML (then resume the sweep with --resume).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import yaml

from pbn.atomic import atomic_write

FILE = "auth_token"


def token_dir(cluster_name: str) -> str:
    """The token's directory, as the cluster YAML's file_mounts name it (same path locally and on nodes)."""
    return f"~/.ray/{cluster_name}"


def write_token(path: Path) -> None:
    """A fresh 256-bit token (hex, as Ray's own generator makes) at `path`, replaced atomically, mode 0600
    from its first byte on."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)

    def write(tmp: Path) -> None:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.cluster_token", description=__doc__.splitlines()[0])
    p.add_argument("config", help="cluster YAML, e.g. cluster/gpu.yaml")
    p.add_argument("--rotate", action="store_true", help="replace an existing token")
    args = p.parse_args(argv)
    try:
        config = yaml.safe_load(Path(args.config).read_text())
        name = config["cluster_name"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as e:
        print(f"error: {args.config}: not a readable cluster YAML with a cluster_name ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 2
    mount = token_dir(name)
    if os.path.expanduser(config.get("file_mounts", {}).get(mount, "")) != os.path.expanduser(mount):
        print(f"error: {args.config} does not mount {mount!r} (file_mounts: {mount!r}: {mount!r})", file=sys.stderr)
        return 2
    path = Path(os.path.expanduser(mount)) / FILE
    if path.exists() and not args.rotate:
        print(f"{path} already exists: {args.config} uses it (--rotate makes a new one)")
        return 0
    write_token(path)
    if args.rotate:
        print(f"rotated {path}: now `ray down {args.config}` and `ray up {args.config}`, so every node and driver "
              "takes the new token, then resume the sweep with --resume")
    else:
        print(f"wrote {path}: `ray up {args.config}` copies it to every node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
