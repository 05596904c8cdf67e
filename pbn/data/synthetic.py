"""The embedded synthetic pose dataset: articulated figures with the MPII 16-joint skeleton.

A 2-D kinematic model with plausible proportions and joint-angle ranges (a shared "crouch" latent
couples both legs, as sitting and squatting couple them in photos), drawn with OpenCV as shaded tapered
limbs over cluttered textured backgrounds. The person faces the camera: a face and a badge on the LEFT
chest make left/right decidable. Random occluders hide some joints, which are flagged OCCLUDED
(annotated, not visible); joints falling outside the image are MISSING, as truncated MPII people are.

Every sample is a pure function of (seed, split, index): no files, identical in every process.
The pose, occluders and flags come from one RNG stream, so records are cheap without rendering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pbn.data.records import PoseRecord
from pbn.skeleton import MISSING, OCCLUDED, PCKH_SC_BIAS, VISIBLE, J

_SPLITS = {"train": 0, "valid": 1}
# Segment lengths as fractions of standing height (anthropometric tables, rounded).
_LEN = dict(torso=0.29, neck=0.05, head=0.13, upper_arm=0.17, forearm=0.15, thigh=0.25, shin=0.24,
            shoulder=0.11, hip=0.07)
# Limbs drawn as tapered shapes: (joint a, joint b, width at a, width at b) as fractions of height.
_LIMBS = (
    (J["r_hip"], J["r_knee"], 0.055, 0.04), (J["r_knee"], J["r_ankle"], 0.04, 0.03),
    (J["l_hip"], J["l_knee"], 0.055, 0.04), (J["l_knee"], J["l_ankle"], 0.04, 0.03),
    (J["r_shoulder"], J["r_elbow"], 0.035, 0.03), (J["r_elbow"], J["r_wrist"], 0.03, 0.022),
    (J["l_shoulder"], J["l_elbow"], 0.035, 0.03), (J["l_elbow"], J["l_wrist"], 0.03, 0.022),
)


@dataclass
class Scene:
    joints: np.ndarray  # [16, 2] px
    flags: np.ndarray  # [16]
    height: float  # person height in px
    colors: np.ndarray  # [4, 3] skin, shirt, trousers, badge (BGR)
    occluders: list  # (kind, cx, cy, a, b, angle_deg, color)
    centre: np.ndarray
    scale: float
    head_size: float


def _unit(angle: float) -> np.ndarray:
    """Direction at `angle` radians from straight down (image y grows down), positive toward image +x."""
    return np.array([math.sin(angle), math.cos(angle)])


def _pose(rng: np.random.Generator, height: float) -> np.ndarray:
    """Joints [16, 2] around the origin, person facing the camera (their left on the image right)."""
    L = {k: v * height * rng.uniform(0.9, 1.1) for k, v in _LEN.items()}
    yaw = math.cos(rng.uniform(-1.0, 1.0))  # body turned away from the camera narrows the widths
    lean = rng.normal(0, 0.15) + (rng.uniform(-0.9, 0.9) if rng.random() < 0.1 else 0.0)
    down, up = _unit(lean), -_unit(lean)
    right = np.array([down[1], -down[0]])  # image-right perpendicular to the spine
    p = np.zeros((16, 2))
    p[J["pelvis"]] = 0.0
    p[J["thorax"]] = up * L["torso"]
    p[J["upper_neck"]] = p[J["thorax"]] + _unit(lean + math.pi + rng.normal(0, 0.12)) * L["neck"]
    p[J["head_top"]] = p[J["upper_neck"]] + _unit(lean + math.pi + rng.normal(0, 0.25)) * L["head"]
    crouch = rng.beta(0.7, 2.0)  # shared by both legs: sitting/squatting bends both
    spread = rng.normal(0.12, 0.15)
    for side, (hip, knee, ankle, sho, elb, wri) in (
        (+1, ("l_hip", "l_knee", "l_ankle", "l_shoulder", "l_elbow", "l_wrist")),
        (-1, ("r_hip", "r_knee", "r_ankle", "r_shoulder", "r_elbow", "r_wrist")),
    ):
        p[J[hip]] = side * right * L["hip"] * yaw
        p[J[sho]] = p[J["thorax"]] + side * right * L["shoulder"] * yaw
        thigh = lean + side * (spread + rng.normal(0, 0.1) + crouch * rng.uniform(0.2, 0.9))
        knee_bend = side * (crouch * rng.uniform(1.2, 2.2) + rng.uniform(0, 0.3)) * rng.choice([-1, 1], p=[0.8, 0.2])
        fore = 1.0 - 0.5 * crouch * rng.uniform(0.5, 1.0)  # a thigh pointing at the camera looks shorter
        p[J[knee]] = p[J[hip]] + _unit(thigh) * L["thigh"] * fore
        p[J[ankle]] = p[J[knee]] + _unit(thigh - knee_bend) * L["shin"] * rng.uniform(0.8, 1.0)
        arm = lean + side * rng.uniform(-0.25, 2.8)  # from hanging down to raised overhead
        elbow_bend = side * rng.uniform(0.0, 2.4) * rng.choice([-1, 1], p=[0.3, 0.7])
        p[J[elb]] = p[J[sho]] + _unit(arm) * L["upper_arm"] * rng.uniform(0.65, 1.0)
        p[J[wri]] = p[J[elb]] + _unit(arm - elbow_bend) * L["forearm"] * rng.uniform(0.65, 1.0)
    return p


def make_scene(seed: int, split: str, index: int, size: int) -> Scene:
    rng = np.random.default_rng([seed, _SPLITS[split], index, 0])
    height = size * rng.uniform(0.55, 0.85)
    pts = _pose(rng, height)
    rot = rng.normal(0, 0.3)
    c, s = math.cos(rot), math.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]])
    lo, hi = pts.min(0), pts.max(0)
    pts += size / 2 - (lo + hi) / 2 + rng.normal(0, 0.06 * size, 2)
    colors = rng.integers(30, 230, size=(4, 3)).astype(np.float64)
    colors[0] = rng.choice([[80, 110, 170], [120, 160, 210], [60, 80, 120], [150, 190, 230]]) + rng.normal(0, 10, 3)
    colors[3] = (0, 230, 255)  # the left-chest badge: one bright fixed colour, learnable as a cue
    occluders = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
        j = rng.integers(16)
        a, b = height * rng.uniform(0.06, 0.16, size=2)
        cx, cy = pts[j] + rng.normal(0, 0.05 * height, 2)
        occluders.append((int(rng.integers(2)), cx, cy, a, b, rng.uniform(0, 180), rng.integers(0, 255, 3)))
    flags = np.full(16, VISIBLE, dtype=np.float32)
    for kind, cx, cy, a, b, ang, _ in occluders:
        t = math.radians(ang)
        dx, dy = pts[:, 0] - cx, pts[:, 1] - cy
        u, v = (dx * math.cos(t) + dy * math.sin(t)) / a, (-dx * math.sin(t) + dy * math.cos(t)) / b
        inside = (u**2 + v**2 <= 1) if kind == 0 else ((np.abs(u) <= 1) & (np.abs(v) <= 1))
        flags[inside] = OCCLUDED
    outside = (pts < 0).any(1) | (pts > size - 1).any(1)
    flags[outside] = MISSING
    head_len = float(np.linalg.norm(pts[J["head_top"]] - pts[J["upper_neck"]]))
    head_size = PCKH_SC_BIAS * math.sqrt(2) * max(head_len, 1.0)  # a square head box of side = head length
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2 + rng.normal(0, 0.02 * height, 2)
    return Scene(pts, flags, height, colors, occluders, centre, 1.25 * height / 200.0, head_size)


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
    p, h, (skin, shirt, trousers, badge) = scene.joints, scene.height, scene.colors
    torso = np.array([p[J["r_shoulder"]], p[J["l_shoulder"]], p[J["l_hip"]], p[J["r_hip"]]])
    for a, b, wa, wb in _LIMBS[:4]:
        _tapered(img, p[a], p[b], wa * h, wb * h, trousers)
    cv2.fillConvexPoly(img, np.round(torso * 16).astype(np.int32), tuple(float(x) for x in shirt), cv2.LINE_AA, 4)
    _tapered(img, p[J["thorax"]], p[J["pelvis"]], 0.06 * h, 0.05 * h, shirt)
    _tapered(img, p[J["thorax"]], p[J["upper_neck"]], 0.025 * h, 0.022 * h, skin)
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
        cv2.circle(img, (eye * 16).round().astype(int), max(int(hl * 0.06 * 16), 8), (20, 20, 20), -1, cv2.LINE_AA, 4)
    mouth = nt + u * hl * 0.3
    cv2.line(img, tuple((mouth - n * hl * 0.1) .round().astype(int)), tuple((mouth + n * hl * 0.1).round().astype(int)),
             (40, 40, 120), max(1, int(hl * 0.04)), cv2.LINE_AA)
    # Badge on the LEFT chest (image right when facing the camera): the left/right cue.
    chest = 0.55 * p[J["thorax"]] + 0.25 * p[J["l_shoulder"]] + 0.2 * p[J["l_hip"]]
    cv2.circle(img, (chest * 16).round().astype(int), int(0.03 * h * 16), tuple(float(x) for x in badge), -1,
               cv2.LINE_AA, 4)
    for a, b, wa, wb in _LIMBS[4:]:
        _tapered(img, p[a], p[b], wa * h, wb * h, shirt if a in (J["r_shoulder"], J["l_shoulder"]) else skin)
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
        """cache_bytes: keep rendered images in memory up to this many bytes (rendering is ~90% of a
        training sample's cost at 64x64; the same image is then only re-augmented each epoch)."""
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
