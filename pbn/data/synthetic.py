"""The embedded synthetic pose dataset: figures in real human poses, with the MPII 16-joint skeleton.

Poses: the joint locations of 14,649 MPII training people (one per image), shipped in
pbn/assets/mpii_train_poses.npz. Source: the Kaggle CSV export of the MPII Human Pose annotations
(shared/data/mpii/mpii_train_kaggle_one_person_per_image.csv, Tompson train split only), read by
pbn.data.readers. Licence: MPII Human Pose Dataset, Version 1.0, Copyright 2015 Max Planck Institute for
Informatics, Simplified BSD License. Each pose is stored as (joints - centre) / (200 scale), the reader's crop
convention, quantized to 1/512 of the crop-box side (int16; half a pixel of a 256-pixel render) with its
missing-joint mask, in the order of a fixed permutation that splits the poses once into a training pool
(all but 2,000) and a validation pool (2,000). Regenerate: `python -m pbn.data.synthetic --build-asset CSV`.

Why real poses: the `mi` part grouping (pbn.groups) is only as human as the poses it is measured on, and a
hand-made kinematic model grouped joints unlike MPII. A few hundred poses cannot estimate the 16x16-cell
mutual information (random 512 or 1,024 MPII poses miss MPII's k=5 and k=6 groupings, any 8,000 give them),
so the grouping of this dataset comes from its whole training pool (`pool_records`), not from the rendered
images; the pose is drawn unrotated (training augmentation rotates), so the pool's statistics are exactly
those of the poses rendered.

Rendering: the pose is placed at a random size (person height 0.55-0.85 of the image) near the image centre
and drawn with OpenCV as shaded tapered limbs over cluttered textured backgrounds, only between joints the
MPII pose has. A face, and a badge on the LEFT chest placed from the thorax, left shoulder and left hip,
keep left/right decidable from pixels whichever way the person faces. Random occluders hide some joints,
which are flagged OCCLUDED (annotated, not visible); joints missing from the MPII pose or falling outside the
image are MISSING, as truncated MPII people are.

Every sample is a pure function of (seed, split, index): image i of a split shows pose perm[i mod P] of that
split's pool of P poses (perm seeded by seed and split), identical in every process. The placement,
occluders and flags come from one RNG stream, so records are cheap without rendering.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pbn.atomic import atomic_write
from pbn.data.records import DataError, PoseRecord, stack_records
from pbn.skeleton import ANNOTATED, MISSING, OCCLUDED, PCKH_SC_BIAS, VISIBLE, J

_SPLITS = {"train": 0, "valid": 1}
POSE_ASSET = Path(__file__).resolve().parents[1] / "assets" / "mpii_train_poses.npz"
_UNITS = 512  # quantization steps per crop-box side
_VALID_POSES = 2000  # the last poses of the asset's order: the validation pool
_POOL_SEED = 0  # the asset's fixed permutation (build time), so the pools are fixed
# Limbs drawn as tapered shapes: (joint a, joint b, width at a, width at b) as fractions of height.
_LIMBS = (
    (J["r_hip"], J["r_knee"], 0.055, 0.04), (J["r_knee"], J["r_ankle"], 0.04, 0.03),
    (J["l_hip"], J["l_knee"], 0.055, 0.04), (J["l_knee"], J["l_ankle"], 0.04, 0.03),
    (J["r_shoulder"], J["r_elbow"], 0.035, 0.03), (J["r_elbow"], J["r_wrist"], 0.03, 0.022),
    (J["l_shoulder"], J["l_elbow"], 0.035, 0.03), (J["l_elbow"], J["l_wrist"], 0.03, 0.022),
)
_TORSO = (J["r_shoulder"], J["l_shoulder"], J["l_hip"], J["r_hip"], J["thorax"], J["pelvis"])


@dataclass
class Scene:
    joints: np.ndarray  # [16, 2] px (0 where the pose has no such joint)
    flags: np.ndarray  # [16]
    present: np.ndarray  # [16] bool: the MPII pose has the joint (drawn even when outside the image)
    height: float  # person height in px (200 x MPII's Scale)
    colors: np.ndarray  # [4, 3] skin, shirt, trousers, badge (BGR)
    occluders: list  # (kind, cx, cy, a, b, angle_deg, color)
    centre: np.ndarray
    scale: float
    head_size: float


@dataclass(frozen=True)
class _Pool:
    xy: np.ndarray  # [P, 16, 2] normalized: (joints - centre) / (200 scale), 0 where missing
    present: np.ndarray  # [P, 16] bool
    head: float  # median upper_neck..head_top distance in crop-box sides: the head size of a headless pose


@functools.lru_cache(maxsize=1)
def _pools() -> dict[str, _Pool]:
    with np.load(POSE_ASSET) as z:
        xy, present = z["xy"].astype(np.float64) / float(z["units"]), ~z["missing"]
    for a in (xy, present):
        a.setflags(write=False)  # shared by every scene of the process
    both = present[:, J["upper_neck"]] & present[:, J["head_top"]]
    head = float(np.median(np.linalg.norm(xy[both, J["head_top"]] - xy[both, J["upper_neck"]], axis=1)))
    cut = len(xy) - _VALID_POSES
    return {"train": _Pool(xy[:cut], present[:cut], head), "valid": _Pool(xy[cut:], present[cut:], head)}


@functools.lru_cache(maxsize=8)
def _order(seed: int, split: str) -> np.ndarray:
    return np.random.default_rng([seed, _SPLITS[split], 2]).permutation(len(_pools()[split].xy))


def pose_index(seed: int, split: str, index: int) -> int:
    """The pool pose of image `index`: perm[index mod P], so a split shows each pose of its pool once before
    any repeats (the paper preset's 22,246 training images show most poses twice)."""
    order = _order(seed, split)
    return int(order[index % len(order)])


def pool_records(split: str) -> list[PoseRecord]:
    """A split's whole pose pool as records in the normalized frame (centre 0, crop side 1), flagged
    ANNOTATED (MPII's export has no visibility): the poses whose statistics the synthetic data has, and
    from which its `mi` grouping is measured. Nothing is rendered."""
    pool = _pools()[split]
    flags = np.where(pool.present, ANNOTATED, MISSING)[..., None]
    joints = np.concatenate([pool.xy, flags], -1).astype(np.float32)
    return [PoseRecord(f"mpii-pose://{split}/{j}", joints[j], np.zeros(2), 1 / 200) for j in range(len(joints))]


def left_chest(joints: np.ndarray, present: np.ndarray) -> np.ndarray | None:
    """Where the badge goes: on the torso toward the left shoulder and left hip (None when the pose lacks
    the thorax, left shoulder or left hip)."""
    if not present[[J["thorax"], J["l_shoulder"], J["l_hip"]]].all():
        return None
    return 0.55 * joints[J["thorax"]] + 0.25 * joints[J["l_shoulder"]] + 0.2 * joints[J["l_hip"]]


def make_scene(seed: int, split: str, index: int, size: int) -> Scene:
    rng = np.random.default_rng([seed, _SPLITS[split], index, 0])
    pool = _pools()[split]
    j = pose_index(seed, split, index)
    norm, present = pool.xy[j], pool.present[j]
    height = size * rng.uniform(0.55, 0.85)
    scale = 1.25 * height / 200.0  # the readers' crop convention: box side 1.25 x the person height
    centre = size / 2 + rng.normal(0, 0.06 * size, 2)
    pts = np.where(present[:, None], centre + norm * 200.0 * scale, 0.0)
    colors = rng.integers(30, 230, size=(4, 3)).astype(np.float64)
    colors[0] = rng.choice([[80, 110, 170], [120, 160, 210], [60, 80, 120], [150, 190, 230]]) + rng.normal(0, 10, 3)
    colors[3] = (0, 230, 255)  # the left-chest badge: one bright fixed colour, learnable as a cue
    occluders = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
        j = rng.choice(np.flatnonzero(present))
        a, b = height * rng.uniform(0.06, 0.16, size=2)
        cx, cy = pts[j] + rng.normal(0, 0.05 * height, 2)
        occluders.append((int(rng.integers(2)), cx, cy, a, b, rng.uniform(0, 180), rng.integers(0, 255, 3)))
    flags = np.where(present, VISIBLE, MISSING).astype(np.float32)
    for kind, cx, cy, a, b, ang, _ in occluders:
        t = math.radians(ang)
        dx, dy = pts[:, 0] - cx, pts[:, 1] - cy
        u, v = (dx * math.cos(t) + dy * math.sin(t)) / a, (-dx * math.sin(t) + dy * math.cos(t)) / b
        inside = (u**2 + v**2 <= 1) if kind == 0 else ((np.abs(u) <= 1) & (np.abs(v) <= 1))
        flags[inside & present] = OCCLUDED
    outside = (pts < 0).any(1) | (pts > size - 1).any(1)
    flags[outside] = MISSING
    if present[J["head_top"]] and present[J["upper_neck"]]:
        head_len = float(np.linalg.norm(pts[J["head_top"]] - pts[J["upper_neck"]]))
    else:
        head_len = pool.head * 200.0 * scale
    head_size = PCKH_SC_BIAS * math.sqrt(2) * max(head_len, 1.0)  # a square head box of side = head length
    return Scene(pts, flags, present.copy(), height, colors, occluders, centre, scale, head_size)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-25, 25, size=(size // 4, size // 4, 3)).astype(np.int16)
    img = np.clip(img.astype(np.int16) + cv2.resize(noise, (size, size), interpolation=cv2.INTER_NEAREST), 0, 255)
    img = img.astype(np.uint8)
    for _ in range(rng.integers(8, 20)):  # clutter, including limb-like sticks
        color = tuple(int(x) for x in rng.integers(0, 256, 3))
        k = rng.integers(4)
        p1 = tuple(int(x) for x in rng.integers(0, size, 2))
        if k == 0:
            cv2.rectangle(img, p1, tuple(int(x) for x in rng.integers(0, size, 2)), color, -1)
        elif k == 1:
            cv2.circle(img, p1, int(rng.integers(3, size // 6)), color, -1, cv2.LINE_AA)
        else:
            p2 = tuple(int(x) for x in (np.array(p1) + rng.normal(0, size / 5, 2)))
            cv2.line(img, p1, p2, color, int(rng.integers(2, max(3, size // 25))), cv2.LINE_AA)
    return img


def _tapered(img, a, b, wa, wb, color) -> None:
    d = b - a
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6)
    for shade, f in ((0.6, 1.0), (1.0, 0.6), (1.25, 0.25)):  # dark rim, body, highlight: a shaded cylinder
        poly = np.array([a + n * wa * f, b + n * wb * f, b - n * wb * f, a - n * wa * f])
        c = tuple(float(min(255, x * shade)) for x in color)
        cv2.fillConvexPoly(img, np.round(poly * 16).astype(np.int32), c, cv2.LINE_AA, shift=4)
    for p, w in ((a, wa), (b, wb)):
        cv2.circle(img, tuple(round(x * 16) for x in p), int(w * 0.8 * 16),
                   tuple(float(x * 0.95) for x in color), -1, cv2.LINE_AA, shift=4)


def render(scene: Scene, seed: int, split: str, index: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _SPLITS[split], index, 1])
    img = _background(rng, size)
    p, ok, h, (skin, shirt, trousers, badge) = scene.joints, scene.present, scene.height, scene.colors
    for a, b, wa, wb in _LIMBS[:4]:
        if ok[a] and ok[b]:
            _tapered(img, p[a], p[b], wa * h, wb * h, trousers)
    torso = [j for j in _TORSO if ok[j]]
    if len(torso) >= 3:  # the hull: corners of a side view or a twisted torso may cross
        hull = cv2.convexHull(np.round(p[torso] * 16).astype(np.int32))
        cv2.fillConvexPoly(img, hull, tuple(float(x) for x in shirt), cv2.LINE_AA, 4)
    if ok[J["thorax"]] and ok[J["pelvis"]]:
        _tapered(img, p[J["thorax"]], p[J["pelvis"]], 0.06 * h, 0.05 * h, shirt)
    if ok[J["thorax"]] and ok[J["upper_neck"]]:
        _tapered(img, p[J["thorax"]], p[J["upper_neck"]], 0.025 * h, 0.022 * h, skin)
    if ok[J["upper_neck"]] and ok[J["head_top"]]:
        # Head: an ellipse along neck->top with a face (eyes toward the top, mouth lower).
        nt, top = p[J["upper_neck"]], p[J["head_top"]]
        mid, axis = (nt + top) / 2, top - nt
        ang = math.degrees(math.atan2(axis[1], axis[0]))
        hl = float(np.linalg.norm(axis))
        cv2.ellipse(img, (mid * 16).round().astype(int), (int(hl * 8), int(hl * 0.36 * 16)), ang, 0, 360,
                    tuple(float(x) for x in skin), -1, cv2.LINE_AA, 4)
        u, n = axis / (hl + 1e-6), np.array([-axis[1], axis[0]]) / (hl + 1e-6)
        for side in (-1, 1):
            eye = nt + u * hl * 0.62 + n * side * hl * 0.15
            cv2.circle(img, (eye * 16).round().astype(int), max(int(hl * 0.06 * 16), 8), (20, 20, 20), -1,
                       cv2.LINE_AA, 4)
        mouth = nt + u * hl * 0.3
        cv2.line(img, tuple((mouth - n * hl * 0.1).round().astype(int)),
                 tuple((mouth + n * hl * 0.1).round().astype(int)), (40, 40, 120), max(1, int(hl * 0.04)),
                 cv2.LINE_AA)
    for a, b, wa, wb in _LIMBS[4:]:
        if ok[a] and ok[b]:
            _tapered(img, p[a], p[b], wa * h, wb * h, shirt if a in (J["r_shoulder"], J["l_shoulder"]) else skin)
    chest = left_chest(p, ok)
    if chest is not None:  # the left/right cue, drawn over the arms: MPII arms cross the chest in ~40% of poses
        cv2.circle(img, (chest * 16).round().astype(int), int(0.03 * h * 16), tuple(float(x) for x in badge), -1,
                   cv2.LINE_AA, 4)
    for kind, cx, cy, a, b, angd, color in scene.occluders:
        col = tuple(float(x) for x in color)
        if kind == 0:
            cv2.ellipse(img, (round(cx * 16), round(cy * 16)), (round(a * 16), round(b * 16)), angd, 0, 360, col, -1,
                        cv2.LINE_AA, 4)
        else:
            box = cv2.boxPoints(((cx, cy), (2 * a, 2 * b), angd))
            cv2.fillConvexPoly(img, np.round(box * 16).astype(np.int32), col, cv2.LINE_AA, 4)
            cv2.line(img, tuple(np.round(box[0]).astype(int)), tuple(np.round(box[2]).astype(int)),
                     tuple(float(255 - x) for x in color), 2, cv2.LINE_AA)
    return img


class SyntheticPoses:
    """A split of the synthetic dataset: `records` (cheap) and `load_image(i)` (rendered on demand)."""

    def __init__(self, seed: int, split: str, size: int, count: int, cache_bytes: int = 0):
        """cache_bytes: keep rendered images in memory up to this many bytes (rendering is most of a
        training sample's cost at 64x64, measured: benchmarks/run.py, docs/development.md; the same image
        is then only re-augmented each epoch)."""
        if split not in _SPLITS:
            raise ValueError(f"synthetic split must be one of {tuple(_SPLITS)}, got {split!r}")
        self.seed, self.split, self.size = seed, split, size
        self.scenes = [make_scene(seed, split, i, size) for i in range(count)]
        self.records = [
            PoseRecord(f"synthetic://{seed}/{split}/{i}", np.column_stack([s.joints, s.flags]).astype(np.float32),
                       s.centre, s.scale, s.head_size)
            for i, s in enumerate(self.scenes)
        ]
        self._rendered: dict[int, np.ndarray] = {}
        self._cache_left = cache_bytes

    def __len__(self) -> int:
        return len(self.records)

    @property
    def pose_records(self) -> list[PoseRecord]:
        """The split's whole pose pool (pool_records): what the part grouping is measured on, whatever the
        number of images rendered."""
        return pool_records(self.split)

    def load_image(self, i: int, reduction: int = 1) -> np.ndarray:
        """Rendered at the dataset's size; `reduction` is accepted for the Source protocol and is always 1
        here (a synthetic Source has max_reduction 1). A cached image is read-only."""
        img = self._rendered.get(i)
        if img is None:
            img = render(self.scenes[i], self.seed, self.split, i, self.size)
            if img.nbytes <= self._cache_left:
                img.setflags(write=False)
                self._rendered[i] = img
                self._cache_left -= img.nbytes
        return img


# ------------------------------------------------------------------------------------- pose asset
def build_pose_asset(annotations: str | Path, out: str | Path = POSE_ASSET) -> int:
    """Normalize, quantize and permute the people of a training annotation file (any format of
    pbn.data.readers; the shipped asset comes from MPII's Kaggle CSV) into the pose asset. Returns the
    number of poses."""
    from pbn.data.readers import read_annotations

    records = read_annotations(annotations)
    if len(records) <= _VALID_POSES:
        raise DataError(f"{annotations}: {len(records)} people; the pools need more than {_VALID_POSES}")
    joints, centre, scale, _ = stack_records(records)
    present = joints[..., 2] != MISSING
    norm = (joints[..., :2] - centre[:, None]) / (200.0 * scale[:, None, None])
    q = np.round(np.where(present[..., None], norm, 0.0) * _UNITS)
    if np.abs(q).max() > np.iinfo(np.int16).max:
        raise DataError(f"{annotations}: a joint lies {np.abs(norm[present]).max():.0f} crop boxes from its "
                        "person's centre: not a pose")
    order = np.random.default_rng(_POOL_SEED).permutation(len(q))
    arrays = dict(xy=q[order].astype(np.int16), missing=~present[order], units=np.int16(_UNITS))

    def write(path: Path) -> None:
        with open(path, "wb") as f:  # a file object: numpy would append ".npz" to a temporary's name
            np.savez_compressed(f, **arrays)

    atomic_write(out, write)
    return len(q)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pbn.data.synthetic",
                                description="Build the pose asset of the synthetic dataset from MPII training "
                                "annotations.")
    p.add_argument("--build-asset", required=True, metavar="ANNOTATIONS",
                   help="training annotations: shared/data/mpii/mpii_train_kaggle_one_person_per_image.csv")
    p.add_argument("--out", default=str(POSE_ASSET), help=f"output file (default: {POSE_ASSET})")
    a = p.parse_args(argv)
    try:
        n = build_pose_asset(a.build_asset, a.out)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n} poses ({n - _VALID_POSES} training, {_VALID_POSES} validation pool) to {a.out} "
          f"({Path(a.out).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
