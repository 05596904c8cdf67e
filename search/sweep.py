"""A sweep's plan and where its files live: read the same way by the driver and the report.

The plan (`results/<name>.sweep.json`) is written once, when the sweep starts, and never changed: the study
file's settings as this sweep resolved them (fixed config, budgets, early stopping, the verdict's declared
design). It is not state: which trials exist and what they reported live in the Optuna study and the
Parquet file only. A resume reads the plan back and refuses a command line that would change it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from pbn.atomic import atomic_write_text

CONFIRM_SEED_OFFSET = 1000  # the search stage trains base + n for the n-th repeat of a point: far below this


class SweepError(RuntimeError):
    """The sweep cannot start or resume as asked."""


@dataclass(frozen=True)
class Plan:
    name: str
    space: str  # the study file's path
    space_digest: str  # of its bytes: a changed file is a new sweep
    metric: str
    mode: str
    num_samples: int
    max_epochs: int
    grace_period: int | None  # None: no early stopping
    reduction_factor: int | None
    fixed: dict  # what every trial shares (FIXED + --set + command line), unresolved
    seed: int  # the sampler's seed (also places the audited trials)
    audit_fraction: float
    confirm_top: int
    confirm_max_seeds: int  # the race's cap on paired seeds per point (0: no confirmation stage)
    verdict: dict  # the declared design (search/space.py declared_design), --margin applied
    storage: str | None  # checkpoints, Tune's files, a copy of the state: a URI or shared path (None: <results>/tune)
    optuna_storage: str | None  # the study's storage as given (None: <results>/<name>.optuna.log, wherever that is)
    created: float
    argv: list = field(default_factory=list)

    @property
    def base_seed(self) -> int:
        """The training seed of a point's first search trial."""
        return int(self.fixed.get("seed", 0))

    @property
    def confirm_seed_base(self) -> int:
        """Seed index i of the confirmation race trains seed confirm_seed_base + i: never a search seed."""
        return self.base_seed + CONFIRM_SEED_OFFSET

    def design(self):
        """The race's search.verdict.Design (None without a confirmation stage)."""
        from search.space import verdict_design

        return verdict_design(self.verdict, self.confirm_max_seeds) if self.confirm_max_seeds else None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = "sweep plan") -> Plan:
        try:
            data = json.loads(text)
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as e:
            raise SweepError(f"{where}: not a sweep plan this version can read ({e}): start a new sweep with "
                             "another --name") from None


class Paths:
    """Where a sweep's files live: results/<name>.{parquet,sweep.json,lock,optuna.log} and, on its storage,
    <storage>/<name>/checkpoints/<trial_id>/ and <storage>/<name>/tune/ (Tune's per-batch logs)."""

    def __init__(self, results: str | Path, name: str, storage: str | None = None, optuna: str | None = None):
        self.results = Path(results).resolve()
        self.name = name
        self.parquet = self.results / f"{name}.parquet"
        self.plan = self.results / f"{name}.sweep.json"
        self.lock = self.results / f"{name}.lock"
        self.report = self.results / name  # the report's files, and the TensorBoard runs
        self.tensorboard = self.report / "tensorboard"
        self.storage = storage or str(self.results / "tune")
        self.optuna = optuna or str(self.results / f"{name}.optuna.log")

    def under_storage(self, *parts: str) -> str:
        root = self.storage.rstrip("/")
        return "/".join([root, self.name, *parts]) if "://" in root else os.path.join(root, self.name, *parts)

    @property
    def checkpoints(self) -> str:
        return self.under_storage("checkpoints")

    @property
    def tune(self) -> str:
        return self.under_storage("tune")

    def read_plan(self) -> Plan:
        if not self.plan.is_file():
            raise SweepError(f"no sweep named {self.name!r} to resume ({self.plan} not found)")
        return Plan.from_json(self.plan.read_text(), str(self.plan))

    def write_plan(self, plan: Plan) -> None:
        atomic_write_text(self.plan, plan.to_json())


def lock_sweep(path: Path, name: str) -> int:
    """Take an exclusive lock on `path` (returns its fd: close it to release); the OS releases it on any exit,
    SIGKILL included. A second driver on the same sweep would run its trials twice, so it is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SweepError(f"sweep {name!r} is already running ({holder}; lock {path}): wait for it, or stop it "
                         "and then --resume") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    return fd
