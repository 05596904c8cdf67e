"""Part groupings: shared, per-part, human (the paper's 6 groups) and mi (data-driven, section 3.1).

mi: each joint location is a random variable; every pose is normalized by its centre and scale onto a
16x16 grid, p(l_m) and p(l_m, l_n) are histograms over the training poses, I(l_m, l_n) is their mutual
information, the diagonal is dropped, the off-diagonal linearly normalized to [0, 1], and the matrix is
the affinity of a spectral clustering into k groups. Missing joints are excluded pairwise.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from pbn.atomic import atomic_write
from pbn.config import GROUPINGS, MAX_CLUSTERS, MIN_CLUSTERS
from pbn.data.records import DataError, PoseRecord, stack_records
from pbn.skeleton import HUMAN_GROUPS, MISSING, MPII_EDGES, MPII_JOINTS, NUM_JOINTS

GRID = 16
MPII_MI_ASSET = Path(__file__).parent / "assets" / "mpii_train_mi.npy"


class GroupingError(ValueError):
    """Unknown strategy, or a cluster count out of range or given to a strategy that takes none."""


# ---------------------------------------------------------------------------------------------- MI
def grid_cells(joints: np.ndarray, centre: np.ndarray, scale: np.ndarray, bins: int = GRID) -> np.ndarray:
    """joints [N, K, 2+] px, centre [N, 2], scale [N] (box side 200*scale) -> cell index [N, K] in [0, bins^2)."""
    side = 200.0 * scale[:, None]
    u = np.floor(((joints[..., 0] - centre[:, None, 0]) / side + 0.5) * bins)
    v = np.floor(((joints[..., 1] - centre[:, None, 1]) / side + 0.5) * bins)
    u = np.clip(u, 0, bins - 1).astype(np.int64)
    v = np.clip(v, 0, bins - 1).astype(np.int64)
    return v * bins + u


def mutual_information(cells: np.ndarray, present: np.ndarray, ncells: int = GRID * GRID) -> np.ndarray:
    """Histogram MI (nats) between the discrete variables in the columns of cells [N, K].

    present [N, K] bool: a pair (m, n) uses only the samples where both are present. Returns [K, K],
    symmetric; the diagonal holds each variable's entropy (callers drop it)."""
    k = cells.shape[1]
    mi = np.zeros((k, k))
    for a in range(k):
        for b in range(a, k):
            both = present[:, a] & present[:, b]
            m = int(both.sum())
            if m == 0:
                continue
            ca, cb = cells[both, a], cells[both, b]
            joint = np.bincount(ca * ncells + cb, minlength=ncells * ncells).astype(np.float64) / m
            pa = np.bincount(ca, minlength=ncells) / m
            pb = np.bincount(cb, minlength=ncells) / m
            nz = np.flatnonzero(joint)
            ia, ib = np.divmod(nz, ncells)
            mi[a, b] = mi[b, a] = float(np.sum(joint[nz] * np.log(joint[nz] / (pa[ia] * pb[ib]))))
    return mi


def normalized_affinity(mi: np.ndarray) -> np.ndarray:
    """Drop the diagonal and map the off-diagonal linearly onto [0, 1] (the paper's affinity)."""
    off = ~np.eye(len(mi), dtype=bool)
    lo, hi = mi[off].min(), mi[off].max()
    out = np.zeros_like(mi)
    out[off] = (mi[off] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def pose_mi(joints: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """joints [N, K, 3] with the annotation flag in column 2 -> raw MI matrix [K, K]."""
    present = joints[..., 2] != MISSING
    usable = present.sum(1) >= 2
    if not usable.any():
        raise DataError("no usable poses: every person has fewer than 2 annotated joints")
    return mutual_information(grid_cells(joints[usable], centre[usable], scale[usable]), present[usable])


def records_mi(records: list[PoseRecord]) -> np.ndarray:
    if not records:
        raise DataError("no usable poses: the annotation source yielded no people")
    joints, centre, scale, _ = stack_records(records)
    return pose_mi(joints, centre, scale)


def cached_records_mi(records: list[PoseRecord], cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """records_mi, cached on disk by a hash of the poses: trials of a sweep compute it once."""
    joints, centre, scale, _ = stack_records(records)
    h = hashlib.sha1()
    for a in (joints, centre, scale):
        h.update(np.ascontiguousarray(a).tobytes())
    cache = Path(cache_dir or os.environ.get("PBN_CACHE", Path.home() / ".cache" / "pbn-search"))
    path = cache / f"mi-{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    mi = pose_mi(joints, centre, scale)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: _save_npy(p, mi))
    return mi


def _save_npy(path: Path, a: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary's name
        np.save(f, a)


@functools.lru_cache(maxsize=1)
def mpii_mi() -> np.ndarray:
    """The MI matrix of the MPII training poses (shipped; regenerate with `python -m pbn.groups`)."""
    return np.load(MPII_MI_ASSET)


# -------------------------------------------------------------------------------------- clustering
def spectral_groups(affinity: np.ndarray, k: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Spectral clustering of a precomputed affinity into k groups, in a canonical order (by smallest
    member), deterministic for a seed."""
    from sklearn.cluster import SpectralClustering

    if not MIN_CLUSTERS <= k <= min(MAX_CLUSTERS, len(affinity) - 1):
        raise GroupingError(f"clusters: expected {MIN_CLUSTERS}..{MAX_CLUSTERS}, got {k}")
    labels = SpectralClustering(
        n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="kmeans", n_init=10
    ).fit_predict(affinity)
    groups = [tuple(int(j) for j in np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return sorted(groups, key=min)


def resolve_groups(
    strategy: str, clusters: int | None = None, mi: np.ndarray | None = None, seed: int = 0
) -> list[tuple[int, ...]]:
    """Strategy name (+ k for mi) -> list of joint-index tuples partitioning the 16 MPII joints.
    mi defaults to the MPII training matrix."""
    if strategy not in GROUPINGS:
        raise GroupingError(f"unknown grouping strategy {strategy!r}; expected one of {GROUPINGS}")
    if strategy != "mi" and clusters is not None:
        raise GroupingError(f"grouping {strategy!r} takes no cluster count (got clusters={clusters})")
    if strategy == "shared":
        return [tuple(range(NUM_JOINTS))]
    if strategy == "per-part":
        return [(j,) for j in range(NUM_JOINTS)]
    if strategy == "human":
        return [tuple(sorted(g)) for g in HUMAN_GROUPS]
    if clusters is None or not MIN_CLUSTERS <= clusters <= MAX_CLUSTERS:
        raise GroupingError(f"grouping 'mi' needs clusters in {MIN_CLUSTERS}..{MAX_CLUSTERS}, got {clusters}")
    return spectral_groups(normalized_affinity(mpii_mi() if mi is None else mi), clusters, seed)


def group_names(groups) -> list[list[str]]:
    return [[MPII_JOINTS[j] for j in g] for g in groups]


# ---------------------------------------------------------------------------------------- figure
# A frontal standing template (image coordinates, the person's right on the image left) to draw on.
_TEMPLATE = np.array([
    [-0.35, 2.9], [-0.3, 1.9], [-0.3, 1.0], [0.3, 1.0], [0.3, 1.9], [0.35, 2.9], [0.0, 1.0], [0.0, -0.2],
    [0.0, -0.45], [0.0, -1.2], [-1.35, 0.9], [-1.05, 0.35], [-0.6, -0.2], [0.6, -0.2], [1.05, 0.35],
    [1.35, 0.9],
])


def save_figure(affinity: np.ndarray, groups, path: str | os.PathLike, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1.3, 1]})
    im = ax1.imshow(affinity, cmap="viridis", vmin=0, vmax=1)
    ax1.set_xticks(range(NUM_JOINTS), MPII_JOINTS, rotation=90, fontsize=8)
    ax1.set_yticks(range(NUM_JOINTS), MPII_JOINTS, fontsize=8)
    ax1.set_title("normalized mutual information (diagonal dropped)")
    fig.colorbar(im, ax=ax1, fraction=0.046)
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(groups), 2)))
    label = np.zeros(NUM_JOINTS, dtype=int)
    for gi, g in enumerate(groups):
        label[list(g)] = gi
    for a, b in MPII_EDGES:
        ax2.plot(*_TEMPLATE[[a, b]].T, color="0.7", lw=3, zorder=1)
    for gi, g in enumerate(groups):
        pts = _TEMPLATE[list(g)]
        ax2.scatter(*pts.T, s=160, color=colors[gi], edgecolor="k", zorder=2, label=f"group {gi + 1}")
    for j in range(NUM_JOINTS):
        ax2.annotate(MPII_JOINTS[j], _TEMPLATE[j], xytext=(6, 4), textcoords="offset points", fontsize=7)
    ax2.invert_yaxis()
    ax2.set_aspect("equal")
    ax2.axis("off")
    ax2.legend(loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.12))
    ax2.set_title("groups on the skeleton (person's right on the left)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from pbn.data.readers import read_annotations

    p = argparse.ArgumentParser(
        prog="python -m pbn.groups",
        description="Mutual-information part grouping from an annotation file (MPII Kaggle CSV, HRNet/"
        "bearpaw JSON, Newell .h5, LSP joints.mat/JSON).",
    )
    p.add_argument("--annotations", required=True, help="annotation file")
    p.add_argument("--clusters", type=int, required=True, help=f"k, {MIN_CLUSTERS}..{MAX_CLUSTERS}")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        if not MIN_CLUSTERS <= a.clusters <= MAX_CLUSTERS:
            raise GroupingError(f"--clusters: expected {MIN_CLUSTERS}..{MAX_CLUSTERS}, got {a.clusters}")
        records = read_annotations(a.annotations)
        mi = records_mi(records)
        groups = resolve_groups("mi", a.clusters, mi=mi, seed=a.seed)
    except (DataError, GroupingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"mi_k{a.clusters}"
    np.save(out / "mi_matrix.npy", mi)
    names = group_names(groups)
    doc = {"annotations": str(a.annotations), "people": len(records), "clusters": a.clusters,
           "seed": a.seed, "groups": names, "group_indices": [list(g) for g in groups]}
    (out / f"{stem}_groups.json").write_text(json.dumps(doc, indent=2) + "\n")
    save_figure(normalized_affinity(mi), groups, out / f"{stem}.png", f"{Path(a.annotations).name}, k={a.clusters}")
    print(f"{len(records)} people from {a.annotations}")
    for i, g in enumerate(names):
        print(f"  group {i + 1}: {', '.join(g)}")
    print(f"wrote {out / 'mi_matrix.npy'}, {out / (stem + '_groups.json')}, {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
