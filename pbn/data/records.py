"""The plain record every reader returns, and helpers over lists of records."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pbn.skeleton import ANNOTATED, MISSING, OCCLUDED, VISIBLE


class DataError(ValueError):
    """An annotation or image file is missing, malformed, or holds no usable people.

    message: what is wrong, without the file (e.g. "entry 7 field 'scale': expected a positive number, got
    the string 'big'"); path: the file or directory at fault (None where no single one is); field: the
    field, key, dataset or column at fault within it (None where the file as a whole is). str(e) is one
    line, "<path>: <message>" (just the message without a path)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, field: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field
        super().__init__(message if self.path is None else f"{self.path}: {message}")

    def __reduce__(self):  # pickle (e.g. across a process pool or Ray) keeps the attributes
        return type(self), (self.message, self.path, self.field)


@dataclass
class PoseRecord:
    """One person. joints [K, 3]: x, y in 0-based original-image pixels, and a flag
    (skeleton.MISSING / OCCLUDED / VISIBLE / ANNOTATED). centre and scale are the crop convention
    already applied (MPII: c_y += 15 s, s *= 1.25): the crop box side is 200 * scale pixels.
    head_size is the PCKh normalizer 0.6 x head-box diagonal, in pixels, where known."""

    image: str
    joints: np.ndarray
    centre: np.ndarray
    scale: float
    head_size: float | None = None

    @property
    def annotated(self) -> np.ndarray:
        return self.joints[:, 2] != MISSING


def flags_from(annotated: np.ndarray, visible: np.ndarray | None) -> np.ndarray:
    """Annotation flags from an `annotated` mask and, where known, an MPII is_visible mask."""
    annotated = np.asarray(annotated).astype(bool)
    if visible is None:
        return np.where(annotated, ANNOTATED, MISSING).astype(np.float32)
    visible = np.asarray(visible).astype(bool)
    return np.where(annotated, np.where(visible, VISIBLE, OCCLUDED), MISSING).astype(np.float32)


def limit_records(records: list[PoseRecord], limit: int | None) -> list[PoseRecord]:
    """The first `limit` records (all when limit is None or 0): train_limit / val_limit, as training and
    pbn.data.check both apply them."""
    return records[:limit] if limit else records


def stack_records(records: list[PoseRecord]):
    """-> joints [N, K, 3], centre [N, 2], scale [N], head_size [N] (NaN where unknown)."""
    joints = np.stack([r.joints for r in records]).astype(np.float64)
    centre = np.stack([r.centre for r in records]).astype(np.float64)
    scale = np.array([r.scale for r in records], dtype=np.float64)
    head = np.array([np.nan if r.head_size is None else r.head_size for r in records], dtype=np.float64)
    return joints, centre, scale, head
