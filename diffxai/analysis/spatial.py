"""Where is the relevance? Enrichment of a map inside a mask, with a circular-shift null.

Definitions, for a map ``a`` (H, W) and a boolean mask ``m`` (H, W):

- relevance ``r = |a|`` (``part="abs"``) or ``r = max(a, 0)`` (``part="pos"``);
- relevance share ``s = sum(r * m) / sum(r)``; area share ``q = mean(m)``;
- **enrichment** ``E = s / q``: 1 = as much relevance as area (chance), ``1/q`` = all relevance
  inside the mask, 0 = none. NaN where the map has no relevance (``sum(r) = 0``).
- **shift null** ``E0``: the mean enrichment of the same map against the mask circularly shifted by
  ``n_shifts`` random offsets (each at least ``min_shift`` of the side in toroidal distance along
  one axis). Shifting keeps both the map's and the mask's spatial autocorrelation, so ``E0`` is the
  enrichment a map of the same smoothness would get by position alone; a pixel permutation would
  destroy the smoothness and make every smooth map look enriched.

Shifting the mask by ``-d`` equals shifting the map by ``+d`` (``sum(roll(r, d) m) =
sum(r roll(m, -d))``), so the null is one matrix product with the stack of shifted masks.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import DiffxaiError

PARTS = ("abs", "pos")


def relevance(maps: torch.Tensor, part: str = "abs") -> torch.Tensor:
    """|a| (``abs``) or max(a, 0) (``pos``)."""
    if part == "abs":
        return maps.abs()
    if part == "pos":
        return maps.clamp_min(0)
    raise DiffxaiError(f"enrichment part {part!r} is not one of {PARTS}")


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def _prepare(maps, masks):
    a = _as_tensor(maps).float()
    m = _as_tensor(masks).to(torch.float32)
    m = m[None] if m.ndim == 2 else m
    if a.shape[-2:] != m.shape[-2:]:
        raise DiffxaiError(f"map shape {tuple(a.shape[-2:])} != mask shape {tuple(m.shape[-2:])}")
    return a, m


def _enrichment_flat(r: torch.Tensor, m: torch.Tensor) -> np.ndarray:
    """r (M, P) relevance, m (K, P) float masks -> (M, K) enrichment (NaN where sum r = 0).

    float32 products, float64 ratios: a share's relative rounding error stays ~1e-6."""
    inside = (r @ m.T).double()
    total = r.double().sum(1, keepdim=True)
    area = m.double().mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = (inside / total / area).numpy()
    e[np.broadcast_to(total.numpy() == 0, e.shape)] = np.nan
    return e


def enrichment(maps, masks, part: str = "abs") -> np.ndarray:
    """Enrichment of ``maps`` (..., H, W) in each of ``masks`` (K, H, W) -> (..., K) float64.

    The masks are shared by all maps of the call (the stage calls once per image).
    """
    a, m = _prepare(maps, masks)
    r = relevance(a, part).reshape(-1, a.shape[-2] * a.shape[-1])
    e = _enrichment_flat(r, m.reshape(m.shape[0], -1))
    return e.reshape(*a.shape[:-2], m.shape[0])


def draw_shifts(shape: tuple[int, int], n_shifts: int, seed: int = 0,
                min_shift: float = 0.25) -> np.ndarray:
    """``n_shifts`` offsets (dy, dx) with toroidal |dy| or |dx| >= min_shift * side (seeded)."""
    h, w = shape
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_shifts:
        dy, dx = int(rng.integers(h)), int(rng.integers(w))
        if min(dy, h - dy) >= min_shift * h or min(dx, w - dx) >= min_shift * w:
            out.append((dy, dx))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def shifted_masks(masks, shifts: np.ndarray) -> torch.Tensor:
    """(K, H, W) masks rolled by each offset -> (S, K, H, W) (masks rolled by -d = maps by +d)."""
    m = _as_tensor(masks)
    m = m[None] if m.ndim == 2 else m
    return torch.stack([torch.roll(m, shifts=(-int(dy), -int(dx)), dims=(-2, -1)) for dy, dx in shifts])


def shift_null(maps, masks, part: str = "abs", n_shifts: int = 8, seed: int = 0,
               min_shift: float = 0.25) -> np.ndarray:
    """Mean enrichment over ``n_shifts`` (>= 1) circular shifts of the map (..., H, W) -> (..., K)."""
    return enrichment_with_null(maps, masks, (part,), n_shifts, seed, min_shift)[f"{part}_null"]


def enrichment_with_null(maps, masks, parts=PARTS, n_shifts: int = 8, seed: int = 0,
                         min_shift: float = 0.25) -> dict[str, np.ndarray]:
    """``{part: E, f"{part}_null": E0}`` for each part, each (..., K): one matrix product per part
    against the masks and their ``n_shifts`` shifted copies."""
    if n_shifts < 1:
        raise DiffxaiError(f"enrichment.n_shifts must be >= 1, got {n_shifts}")
    a, m = _prepare(maps, masks)
    k, lead = m.shape[0], a.shape[:-2]
    sh = shifted_masks(m, draw_shifts(tuple(m.shape[-2:]), n_shifts, seed, min_shift))
    allm = torch.cat([m[None], sh], 0).reshape((1 + n_shifts) * k, -1)
    out = {}
    for part in parts:
        e = _enrichment_flat(relevance(a, part).reshape(-1, allm.shape[1]), allm).reshape(-1, 1 + n_shifts, k)
        out[part] = e[:, 0].reshape(*lead, k)
        with warnings.catch_warnings():                   # all-NaN rows: maps without relevance
            warnings.simplefilter("ignore", RuntimeWarning)
            out[f"{part}_null"] = np.nanmean(e[:, 1:], axis=1).reshape(*lead, k)
    return out
