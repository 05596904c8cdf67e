"""The heatmap codec: joints <-> Gaussian heatmaps, with per-joint weights and the flip-test merge.

Coordinates: an input (crop) pixel x maps to heatmap coordinate (x + 0.5) / stride - 0.5, so pixel
centres line up at every resolution and a mirrored crop gives an exactly mirrored heatmap.
"""

from __future__ import annotations

import numpy as np
import torch

from pbn.skeleton import MISSING


class HeatmapCodec:
    def __init__(self, input_size: int, sigma: float = 1.0, stride: int = 4):
        self.input_size, self.sigma, self.stride = input_size, sigma, stride
        self.size = input_size // stride
        self._grid = np.arange(self.size, dtype=np.float32)

    def to_heatmap(self, xy: np.ndarray) -> np.ndarray:
        return (xy + 0.5) / self.stride - 0.5

    def to_input(self, hm_xy):
        return (hm_xy + 0.5) * self.stride - 0.5

    def encode(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """joints [K, 3] in crop pixels with flags -> heatmaps [K, h, w] float32 (peak 1), weights [K]
        (0 for missing joints and joints outside the heatmap). Vectorized: one outer product."""
        xy = self.to_heatmap(joints[:, :2].astype(np.float32))
        inside = (xy >= -0.5).all(1) & (xy < self.size - 0.5).all(1)
        weights = ((joints[:, 2] != MISSING) & inside).astype(np.float32)
        gx = np.exp(-((self._grid[None, :] - xy[:, :1]) ** 2) / (2 * self.sigma**2))
        gy = np.exp(-((self._grid[None, :] - xy[:, 1:]) ** 2) / (2 * self.sigma**2))
        heatmaps = gy[:, :, None] * gx[:, None, :] * weights[:, None, None]
        return heatmaps.astype(np.float32), weights

    @staticmethod
    def decode(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """heatmaps [N, K, h, w] -> coordinates [N, K, 2] in heatmap pixels, maxima [N, K].
        argmax, then a quarter-pixel shift toward the higher neighbour (Newell et al.)."""
        n, k, h, w = heatmaps.shape
        flat = heatmaps.reshape(n, k, -1).float()
        maxval, idx = flat.max(-1)
        x, y = (idx % w), torch.div(idx, w, rounding_mode="floor")
        hm = heatmaps.float()
        b = torch.arange(n, device=hm.device)[:, None]
        c = torch.arange(k, device=hm.device)[None, :]
        xl, xr = (x - 1).clamp(min=0), (x + 1).clamp(max=w - 1)
        yu, yd = (y - 1).clamp(min=0), (y + 1).clamp(max=h - 1)
        dx = torch.sign(hm[b, c, y, xr] - hm[b, c, y, xl]) * ((x > 0) & (x < w - 1))
        dy = torch.sign(hm[b, c, yd, x] - hm[b, c, yu, x]) * ((y > 0) & (y < h - 1))
        coords = torch.stack([x.float() + 0.25 * dx, y.float() + 0.25 * dy], -1)
        return coords, maxval

    @staticmethod
    def flip_back(heatmaps: torch.Tensor, flip_pairs) -> torch.Tensor:
        """Heatmaps predicted on a mirrored input -> heatmaps of the original input."""
        perm = list(range(heatmaps.shape[1]))
        for a, b in flip_pairs:
            perm[a], perm[b] = b, a
        return heatmaps.flip(-1)[:, perm]

    @classmethod
    def flip_merge(cls, heatmaps: torch.Tensor, flipped: torch.Tensor, flip_pairs) -> torch.Tensor:
        """The flip test: average the prediction with the mirrored prediction on the mirrored input."""
        return 0.5 * (heatmaps + cls.flip_back(flipped, flip_pairs))
