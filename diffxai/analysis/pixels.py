"""Pixel-level helpers the mask modules share: luma, edge magnitude, reading a mask PNG."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from scipy import ndimage


def grey(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 or float in [0, 255] -> (..., H, W) float64 luma in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) / 255.0


def edge_magnitude(g: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Sobel gradient magnitude of ``g`` (H, W) after a Gaussian blur of ``sigma`` px."""
    s = ndimage.gaussian_filter(g, sigma) if sigma > 0 else g
    return np.hypot(ndimage.sobel(s, axis=0), ndimage.sobel(s, axis=1))


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A PNG as a bool mask (non-zero in any channel = inside), resized (nearest) to ``shape``."""
    im = Image.open(path)
    if shape is not None and im.size != (shape[1], shape[0]):
        im = im.resize((shape[1], shape[0]), Image.NEAREST)
    a = np.asarray(im)
    return (a.reshape(a.shape[0], a.shape[1], -1) != 0).any(-1)
