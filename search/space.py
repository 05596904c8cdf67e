"""Load and check a study (space) file before Ray starts.

A study file fixes some Config keys (FIXED) and searches others: with a define-by-run `space(trial)`
(Optuna's trial.suggest_*), or with a `GRID` of points every one of which is trained. The driver knows
nothing about which names a study searches: it reads them from the file. A key both fixed and searched
is refused here, naming the key, as is a point that does not make a valid Config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from pbn.config import Config, ConfigError, resolve
from pbn.metrics import OBJECTIVES

# The study file is imported under one stable module name (the driver calls its space function).
MODULE_NAME = "pbn_search_space"
REQUIRED = {"METRIC": str, "MAX_EPOCHS": int, "FIXED": dict}
OPTIONAL = {"MODE": str, "NUM_SAMPLES": int, "GRACE_PERIOD": int, "REDUCTION_FACTOR": int, "INITIAL": list,
            "GRID": list, "CONFIRM_TOP": int, "CONFIRM_MAX_SEEDS": int, "AUDIT_FRACTION": float,
            # the verdict's declared design (search/verdict.py): read before any confirmation seed is trained
            "FAMILY": str, "REFERENCE": dict, "MARGIN": float, "ALPHA": float, "PRIMARY": str, "SECONDARY": str,
            "SECONDARY_ALPHA": float, "LOOKS": tuple,
            # what the driver prints as the sweep's expected cost before it starts, until epochs are measured
            "SECONDS_PER_EPOCH": float}
# FAMILY's default: each grouping's representative against `shared` (the paper's claim: branches vs the plain
# stacked hourglass) where the study searches the grouping; otherwise Hsu's comparisons with the best.
DEFAULT_REFERENCE = {"grouping": "shared"}
# Config keys the driver sets itself: epochs is MAX_EPOCHS; seed is the replicate dimension (search trials
# train with FIXED's seed, confirmation trials with their own paired seeds).
DRIVER_KEYS = ("epochs", "seed")
PROBES = 256  # random proposals drawn to learn which names a define-by-run space can suggest


class SpaceError(ValueError):
    """The space file is missing, does not import, lacks/mistypes a name, or fixes what it searches."""


@dataclass
class Space:
    """A checked study file: what the driver needs, with the optional names resolved to their defaults."""

    path: Path
    digest: str  # of the file's bytes: a changed file is a new sweep
    space: Callable  # define-by-run space(trial) (derived from GRID for a grid study)
    metric: str
    mode: str
    fixed: dict
    max_epochs: int
    num_samples: int
    searched: tuple[str, ...]  # every name the space can suggest (or the grid varies)
    initial: list[dict]
    grid: bool  # every point of GRID is one search trial, in order; no sampler decides anything
    grace_period: int | None  # None: no early stopping
    reduction_factor: int | None
    audit_fraction: float
    confirm_top: int
    confirm_max_seeds: int  # the race's cap on paired seeds per point (0: no confirmation stage)
    verdict: dict  # the declared design: family, reference, margin, alpha, primary, secondary, ... (see verdict())
    groupings: int = 1  # distinct grouping strategies the space proposes (each gets a representative in the race)
    seconds_per_epoch: float | None = None  # SECONDS_PER_EPOCH: the study's estimate of one epoch, for the cost


class GridSpace:
    """A define-by-run space over exactly `points`: each name is suggested (categorical over the values
    the grid gives it) only where a point that agrees on the names suggested so far has it, so a grid
    of conditional points (clusters only with mi) has the same shape as a hand-written space. A class,
    not a closure: the searcher, and so this, is pickled into Tune's snapshots."""

    def __init__(self, points: list[dict]):
        self.points = points
        self.names = list(dict.fromkeys(k for p in points for k in p))
        self.values = {k: list(dict.fromkeys(p[k] for p in points if k in p)) for k in self.names}

    def __call__(self, trial):
        chosen: dict = {}
        for k in self.names:
            agree = [p for p in self.points if all(p.get(n) == v for n, v in chosen.items())]
            if any(k in p for p in agree):
                chosen[k] = trial.suggest_categorical(k, self.values[k])
        return None


def probe_names(space_fn, n: int = PROBES, seed: int = 0) -> tuple[set[str], list[dict]]:
    """(every name space_fn suggested or returned as a constant, the proposals) over n random draws of an
    in-memory Optuna study: the names a define-by-run space searches, learned without running a trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    names: set[str] = set()
    proposals = []
    for _ in range(n):
        trial = study.ask()
        constants = space_fn(trial) or {}
        point = {**trial.params, **constants}
        names |= set(point)
        proposals.append(point)
        study.tell(trial, 0.0)
    return names, proposals


def check_points(space_fn, points: list[dict], where: str) -> None:
    """Each point must be exactly what the space suggests when pinned to it (as the driver pins INITIAL points,
    by enqueueing them): no missing name, no name the space would not suggest there, every value in range."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    for point in points:
        study.enqueue_trial(point)
        trial = study.ask()
        try:
            constants = space_fn(trial) or {}
            params = {**trial.params, **constants}
        except Exception as e:
            raise SpaceError(f"{where}: space(trial) failed on the point {point} ({type(e).__name__}: {e})") from None
        if params != point:
            raise SpaceError(f"{where}: the point {point} is not one the space suggests (pinned to it, it "
                             f"suggests {params})")
        study.tell(trial, 0.0)


def load_space(path: str | Path) -> Space:
    p = Path(path)
    if not p.is_file():
        raise SpaceError(f"{p}: space file not found")
    text = p.read_bytes()
    spec = importlib.util.spec_from_file_location(MODULE_NAME, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[MODULE_NAME]
        raise SpaceError(f"{p}: cannot import the space file ({type(e).__name__}: {e})") from None
    grid = getattr(module, "GRID", None)
    missing = [n for n in REQUIRED if not hasattr(module, n)]
    if not hasattr(module, "space") and grid is None:
        missing.insert(0, "space (or GRID)")
    if missing:
        raise SpaceError(f"{p}: missing {', '.join(missing)} (see search/spaces/branches.py for the layout)")
    for name, typ in {**REQUIRED, **OPTIONAL}.items():
        v = getattr(module, name, None)
        ok = (v is None or isinstance(v, typ) or (typ is float and isinstance(v, int) and not isinstance(v, bool))
              or (typ is tuple and isinstance(v, list)))
        if not ok or isinstance(v, bool):
            raise SpaceError(f"{p}: {name} must be {typ.__name__}, got {v!r}")
    if hasattr(module, "space") and not callable(module.space):
        raise SpaceError(f"{p}: `space` must be a function space(trial) using trial.suggest_*")
    if hasattr(module, "space") and grid is not None:
        raise SpaceError(f"{p}: define either space(trial) or GRID, not both")
    if module.METRIC not in OBJECTIVES:
        raise SpaceError(f"{p}: METRIC must be one of {sorted(OBJECTIVES)} (pbn/metrics.py), got {module.METRIC!r}")
    mode = getattr(module, "MODE", None) or OBJECTIVES[module.METRIC]
    if mode != OBJECTIVES[module.METRIC]:
        raise SpaceError(f"{p}: MODE {mode!r} contradicts METRIC {module.METRIC!r}, which is "
                         f"{OBJECTIVES[module.METRIC]}imised (pbn/metrics.py)")
    grace, rf = getattr(module, "GRACE_PERIOD", None), getattr(module, "REDUCTION_FACTOR", None)
    if grace is not None and (rf is None or not 1 <= grace <= module.MAX_EPOCHS or rf < 2):
        raise SpaceError(f"{p}: early stopping needs 1 <= GRACE_PERIOD <= MAX_EPOCHS and REDUCTION_FACTOR >= 2 "
                         "(leave both out for none)")
    if module.MAX_EPOCHS < 1:
        raise SpaceError(f"{p}: MAX_EPOCHS must be >= 1, got {module.MAX_EPOCHS}")
    audit = getattr(module, "AUDIT_FRACTION", None) or 0.0
    if not 0.0 <= audit <= 1.0:
        raise SpaceError(f"{p}: AUDIT_FRACTION must be in [0, 1], got {audit}")
    if grid is not None:
        if not grid or not all(isinstance(pt, dict) and pt for pt in grid):
            raise SpaceError(f"{p}: GRID must be a non-empty list of non-empty dicts of Config keys")
        module.space = GridSpace(grid)
        proposals = grid
        names = {k for pt in grid for k in pt}
    else:
        try:
            names, proposals = probe_names(module.space)
        except Exception as e:
            raise SpaceError(f"{p}: space(trial) failed on a random proposal ({type(e).__name__}: {e})") from None
    initial = getattr(module, "INITIAL", None) or []
    if not all(isinstance(pt, dict) for pt in initial):
        raise SpaceError(f"{p}: INITIAL must be a list of dicts")
    if grid is None:
        check_points(module.space, initial, f"{p}: INITIAL")
    names |= {k for pt in initial for k in pt}
    known = {f.name for f in fields(Config)}
    unknown = sorted(names - known)
    if unknown:
        raise SpaceError(f"{p}: the space searches unknown config key(s) {unknown}; known keys: {sorted(known)}")
    driver = sorted(names & set(DRIVER_KEYS))
    if driver:
        raise SpaceError(f"{p}: the space searches {driver}, which the driver sets (epochs = MAX_EPOCHS; seed = "
                         "the replicate of a trial): fix them in FIXED instead")
    check_fixed(module.FIXED, names, f"{p}: FIXED")
    try:
        resolve(module.FIXED)
        for point in [*initial, *proposals]:
            resolve({**module.FIXED, **point})
    except ConfigError as e:
        raise SpaceError(f"{p}: FIXED + a {'GRID' if grid else 'searched'} point does not make a valid config: "
                         f"{e}") from None
    num_samples = len(grid) if grid is not None else getattr(module, "NUM_SAMPLES", None)
    if num_samples is None:
        raise SpaceError(f"{p}: missing NUM_SAMPLES (a GRID file may leave it out: every point is one trial)")
    cap = getattr(module, "CONFIRM_MAX_SEEDS", None) or 0
    design = declared_design(module, p, mode, names, [*initial, *proposals])
    if cap and design is None:
        raise SpaceError(f"{p}: CONFIRM_MAX_SEEDS needs MARGIN, the equivalence margin in {module.METRIC} points, with "
                         "its reason (a difference smaller than this does not matter)")
    groupings = len({pt.get("grouping", module.FIXED.get("grouping")) for pt in [*initial, *proposals]})
    return Space(p.resolve(), hashlib.sha256(text).hexdigest(), module.space, module.METRIC, mode, module.FIXED,
                 module.MAX_EPOCHS, num_samples, tuple(sorted(names)), grid if grid is not None else initial,
                 grid is not None, grace, rf, float(audit), getattr(module, "CONFIRM_TOP", None) or 0, cap,
                 design or {}, max(1, groupings), getattr(module, "SECONDS_PER_EPOCH", None))


def declared_design(module, p: Path, mode: str, names: set[str], proposals: list[dict]) -> dict | None:
    """The verdict's design as the study file declares it (None without MARGIN), checked here so that a wrong
    one is refused before any trial. Keys: family, reference (a filter on point values, or None), margin,
    alpha, primary, secondary (or None), secondary_alpha, looks."""
    from search.verdict import DEFAULT_LOOKS, FAMILIES

    if getattr(module, "MARGIN", None) is None:
        return None
    primary = getattr(module, "PRIMARY", None) or module.METRIC
    secondary = getattr(module, "SECONDARY", None)
    if secondary is None and primary == "pckh":
        secondary = "pckh_occluded"  # the paper's claim is about occluded joints
    for name, metric in (("PRIMARY", primary), ("SECONDARY", secondary)):
        if metric is not None and metric not in OBJECTIVES:
            raise SpaceError(f"{p}: {name} must be one of {sorted(OBJECTIVES)} (pbn/metrics.py), got {metric!r}")
    searches_grouping = "grouping" in names
    family = getattr(module, "FAMILY", None) or ("vs-reference" if searches_grouping else "best")
    if family not in FAMILIES:
        raise SpaceError(f"{p}: FAMILY must be one of {list(FAMILIES)}, got {family!r}")
    reference = getattr(module, "REFERENCE", None)
    if family == "vs-reference":
        reference = reference or (DEFAULT_REFERENCE if searches_grouping else None)
        if not reference or not any(all(pt.get(k) == v for k, v in reference.items()) for pt in proposals):
            raise SpaceError(f"{p}: FAMILY 'vs-reference' needs REFERENCE, a filter on point values that some point of "
                             f"the space matches (e.g. {DEFAULT_REFERENCE}), got {reference!r}")
    secondary_alpha = getattr(module, "SECONDARY_ALPHA", None)
    design = {"family": family, "reference": reference if family == "vs-reference" else None,
              "margin": module.MARGIN, "alpha": getattr(module, "ALPHA", None) or 0.05,
              "primary": primary, "secondary": secondary,
              "secondary_alpha": (0.01 if secondary else 0.0) if secondary_alpha is None else secondary_alpha,
              "looks": list(getattr(module, "LOOKS", None) or DEFAULT_LOOKS)}
    try:
        verdict_design(design, max(design["looks"]))
    except ValueError as e:
        raise SpaceError(f"{p}: {e}") from None
    return design


def verdict_design(design: dict, max_seeds: int, margin: float | None = None):
    """search.verdict.Design of a declared design, with the sweep's cap (and a --margin given on the command
    line)."""
    from search.verdict import Design

    return Design(margin=float(margin if margin is not None else design["margin"]), family=design["family"],
                  alpha=design["alpha"], secondary_alpha=design["secondary_alpha"] if design["secondary"] else 0.0,
                  looks=tuple(design["looks"]), max_seeds=max_seeds)


def check_fixed(fixed: dict, searched, where: str) -> None:
    """A value both fixed (FIXED, --set, a command-line flag) and searched would be silently replaced in
    every trial: refuse it, naming the key."""
    both = sorted(set(fixed) & set(searched))
    if both:
        raise SpaceError(f"{where} fixes {both}, which the space also searches: a key is either fixed or "
                         "searched (drop it from one of them)")
