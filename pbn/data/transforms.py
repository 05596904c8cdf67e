"""Geometry as pure functions: the affine crop, its inverse, flips, and the paper's augmentation."""

from __future__ import annotations

import math

import cv2
import numpy as np


def crop_matrix(centre, scale: float, rotation: float, size: int, flip: bool = False) -> np.ndarray:
    """2x3 affine from original-image pixels to crop pixels: the box of side 200*scale around centre,
    rotated by `rotation` degrees (counter-clockwise in the image), onto size x size; `flip` mirrors the
    crop horizontally. Pixel centres map to pixel centres (x' = (x - c) * k + (size - 1) / 2)."""
    k = size / (200.0 * scale)
    t = math.radians(rotation)
    cos, sin = math.cos(t) * k, math.sin(t) * k
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    m[:, 2] = (size - 1) / 2.0 - m[:, :2] @ np.asarray(centre, dtype=np.float64)
    if flip:
        m = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """points [..., 2] -> [..., 2]."""
    return points @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def flip_joints(joints: np.ndarray, flip_pairs) -> np.ndarray:
    """Swap left/right rows (coordinates are already mirrored by the crop matrix)."""
    out = joints.copy()
    for a, b in flip_pairs:
        out[[a, b]] = joints[[b, a]]
    return out


def sample_augmentation(rng: np.random.Generator, scale_factor: float, rotation: float, flip: bool):
    """The paper's augmentation: scale 1 +/- scale_factor, rotation +/- `rotation` degrees (applied with
    probability 0.6, as the reference codebases do), horizontal flip with probability 0.5."""
    s = float(np.clip(rng.normal(1.0, scale_factor), 1 - scale_factor, 1 + scale_factor))
    r = float(np.clip(rng.normal(0.0, rotation), -rotation, rotation)) if rng.random() < 0.6 else 0.0
    return s, r, bool(flip and rng.random() < 0.5)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Per-channel gain in [1 - strength, 1 + strength] (the reference codebases' colour jitter)."""
    if strength <= 0:
        return image
    gain = rng.uniform(1 - strength, 1 + strength, size=3).astype(np.float32)
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
