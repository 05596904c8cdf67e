"""From a data source (records + image loader) to training tensors; the source of each dataset.

The model always predicts the 16 MPII joints; LSP records are placed into that order (pelvis and
thorax missing) and scored with LSP's PCK@0.2 by the source's `score` function.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pbn.data import readers, transforms
from pbn.data.records import DataError, PoseRecord, limit_records
from pbn.heatmaps import HeatmapCodec
from pbn.pck import as_metrics, lsp_pck, mpii_pckh
from pbn.skeleton import LSP_TO_MPII, MISSING, MPII_FLIP_PAIRS, NUM_JOINTS

MEAN = np.array([0.406, 0.456, 0.485], dtype=np.float32) * 255  # BGR (OpenCV order)
STD = np.array([0.225, 0.224, 0.229], dtype=np.float32) * 255


@dataclass
class Source:
    """One split of a dataset: records in the model's 16-joint order, how to load their images, and how
    the dataset scores predictions for them (its own protocol: MPII PCKh, LSP PCK@0.2)."""

    name: str  # "synthetic" | "mpii" | "lsp"
    records: list[PoseRecord]
    load_image: Callable[[int, int], np.ndarray]  # (index, reduction r) -> BGR uint8 image at 1/r size
    score: Callable[[np.ndarray], dict]  # preds [N, 16, 2] original pixels -> pbn.metrics score keys
    max_reduction: int = 1  # largest r load_image honours (1: it always returns full size)
    # The poses whose statistics define the `mi` part grouping. Real datasets: the records themselves (the
    # default). Synthetic: the split's whole pose pool, as its few hundred renders cannot estimate the MI.
    pose_records: list[PoseRecord] | None = None

    def __post_init__(self):
        if self.pose_records is None:
            self.pose_records = self.records


def pckh_scorer(records: list[PoseRecord]) -> Callable[[np.ndarray], dict]:
    """MPII's protocol (synthetic data uses it too): PCKh@0.5, hrnet convention, with intervals over images
    (the people of one image, records with the same `image`, are resampled together)."""
    gt = np.stack([r.joints for r in records]).astype(np.float64)
    head = np.array([np.nan if r.head_size is None else r.head_size for r in records], dtype=np.float64)
    images = [r.image for r in records]

    def score(preds: np.ndarray) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing visibility is reported as NaN columns
            return as_metrics(mpii_pckh(preds, gt[..., :2], gt[..., 2], head, intervals=True, images=images))

    return score


def lsp_scorer(original: list[PoseRecord]) -> Callable[[np.ndarray], dict]:
    """LSP's protocol: PCK@0.2 of the 14 LSP joints, taken from the model's 16 MPII-ordered outputs; intervals
    over images (records with the same `image` resampled together)."""
    gt = np.stack([r.joints for r in original]).astype(np.float64)
    images = [r.image for r in original]

    def score(preds: np.ndarray) -> dict:
        return as_metrics(lsp_pck(preds[:, list(LSP_TO_MPII)], gt[..., :2], gt[..., 2], intervals=True,
                                  images=images))

    return score


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def _file_loader(records: list[PoseRecord]) -> Callable[[int, int], np.ndarray]:
    """JPEGs decode at 1/2, 1/4 or 1/8 size for a fraction of the cost (libjpeg DCT scaling): a 64x64
    crop of a 1280x720 MPII frame needs nowhere near every source pixel."""

    def load(i: int, reduction: int = 1) -> np.ndarray:
        img = cv2.imread(records[i].image, _REDUCED[reduction])
        if img is None:
            raise DataError("cannot read or decode the image", path=records[i].image)
        return img

    return load


def decode_reduction(m: np.ndarray, max_reduction: int) -> int:
    """The largest r in {1, 2, 4, 8} (<= max_reduction) that still gives >= 1 source pixel per crop pixel."""
    source_px_per_output_px = 1.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
    r = 1
    while r * 2 <= min(max_reduction, source_px_per_output_px):
        r *= 2
    return r


def reduced_matrix(m: np.ndarray, r: int) -> np.ndarray:
    """Crop matrix for an image decoded at 1/r: reduced pixel x' covers original pixels r x' .. r x' + r - 1."""
    if r == 1:
        return m
    up = np.array([[r, 0.0, (r - 1) / 2], [0.0, r, (r - 1) / 2], [0.0, 0.0, 1.0]])
    return m @ up


def _lsp_to_mpii(r: PoseRecord) -> PoseRecord:
    joints = np.zeros((NUM_JOINTS, 3), np.float32)
    joints[:, 2] = MISSING
    joints[list(LSP_TO_MPII)] = r.joints
    return PoseRecord(r.image, joints, r.centre, r.scale, r.head_size)


def load_source(cfg, split: str) -> Source:
    """split: "train" or "valid". Image files are checked by pbn.data.check before training, not here."""
    if cfg.data == "synthetic":
        from pbn.data.synthetic import SyntheticPoses

        n = cfg.synthetic_train if split == "train" else cfg.synthetic_val
        # Validation crops are cached by PoseDataset; training renders are cached here.
        cache = cfg.synthetic_cache_mb << 20 if split == "train" else 0
        syn = SyntheticPoses(cfg.synthetic_seed, split, cfg.input_size, n, cache)
        records = _limit(syn.records, cfg, split)
        return Source("synthetic", records, syn.load_image, pckh_scorer(records), pose_records=syn.pose_records)
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise DataError("data root directory not found", path=root, field="data_root")
    original = _limit(readers.split_records(cfg.data, root, split), cfg, split)  # what pbn.data.check checks
    if cfg.data == "mpii":
        records, score = original, pckh_scorer(original)
    else:
        records, score = [_lsp_to_mpii(r) for r in original], lsp_scorer(original)
    if not records:
        raise DataError(f"{cfg.data} {split} split under {root} is empty")
    if split == "valid" and cfg.data == "mpii" and any(r.head_size is None for r in records):
        raise DataError("MPII validation needs head boxes: put gt_valid.mat in <data_root>/mpii/annotations/")
    return Source(cfg.data, records, _file_loader(records), score, max_reduction=8)


def _limit(records, cfg, split):
    return limit_records(records, cfg.train_limit if split == "train" else cfg.val_limit)


class PoseDataset(Dataset):
    """Crops, augments (train) and encodes targets. Items: image [3, S, S] float, target [16, S/4, S/4],
    weight [16], matrix [2, 3] (original -> crop, for mapping predictions back), index."""

    def __init__(self, source: Source, cfg, train: bool):
        self.source, self.cfg, self.train = source, cfg, train
        self.codec = HeatmapCodec(cfg.input_size, cfg.sigma)
        self._cache: dict[int, tuple] = {}  # validation crops are identical every epoch: keep them

    def __len__(self) -> int:
        return len(self.source.records)

    def _crop(self, i: int, epoch: int):
        r, cfg = self.source.records[i], self.cfg
        s, rot, flip = 1.0, 0.0, False
        rng = None
        if self.train:  # a pure function of (seed, epoch, index): identical with any number of workers
            rng = np.random.default_rng([cfg.seed, epoch, i])
            s, rot, flip = transforms.sample_augmentation(rng, cfg.scale_factor, cfg.rotation, cfg.flip)
        m = transforms.crop_matrix(r.centre, r.scale * s, rot, cfg.input_size, flip)
        reduction = decode_reduction(m, self.source.max_reduction)
        img = transforms.warp(self.source.load_image(i, reduction), reduced_matrix(m, reduction), cfg.input_size)
        joints = r.joints.copy()
        joints[:, :2] = transforms.apply_affine(joints[:, :2], m)
        if flip:
            joints = transforms.flip_joints(joints, MPII_FLIP_PAIRS)
        if rng is not None:
            img = transforms.color_jitter(img, rng, cfg.color_jitter)
        return img, joints, m

    def __getitem__(self, i: int):
        return self.item(i, 0)

    def item(self, i: int, epoch: int):
        """Sample i with the augmentation of `epoch` (train); validation ignores the epoch."""
        if not self.train and i in self._cache:
            img, joints, m = self._cache[i]
        else:
            img, joints, m = self._crop(i, epoch)
            if not self.train:
                self._cache[i] = (img, joints, m)
        target, weight = self.codec.encode(joints)
        x = ((img.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x)),
            "target": torch.from_numpy(target),
            "weight": torch.from_numpy(weight),
            "matrix": torch.from_numpy(m.astype(np.float64)),
            "index": i,
        }
