"""Where is the relevance? Enrichment of a map inside a mask, and its region-constrained null.

Definitions, for a map ``a`` (H, W) and a boolean mask ``m`` (H, W):

- relevance ``r = |a|`` (``part="abs"``) or ``r = max(a, 0)`` (``part="pos"``);
- relevance share ``s = sum(r * m) / sum(r)``; area share ``q = mean(m)``;
- **enrichment** ``E = s / q``: 1 = as much relevance as area (chance), ``1/q`` = all relevance
  inside the mask, 0 = none. NaN where the map has no relevance (``sum(r) = 0``).
- **region-constrained null** ``E0``: the mean enrichment of the same map in ``n_null`` *placements*
  of the mask inside the region it may occupy (:data:`NULL_REGIONS`: detail inside the interior,
  face and stripes inside the silhouette, the outline band and the other masks anywhere in the
  frame). A placement is the mask translated by an integer offset ``d`` (no wrap-around), clipped
  to the region; admissible when at least ``min_inside`` of the mask's pixels land in the region
  and at most ``max_self_overlap`` of the placement lies on the mask itself. Offsets are drawn
  uniformly without replacement from the admissible ones (seeded per mask name). Translation keeps
  the mask's shape and texture (a stripe pattern stays a stripe pattern, a band a band of the same
  width around a shifted copy of the silhouette), so ``E0`` is the enrichment a same-shaped mask
  gets elsewhere in the same region; a pixel permutation would destroy the smoothness and make
  every smooth map look enriched, and a circular shift over the whole image tests position in the
  frame (object vs background), not the mask's part of the object.
- **enrichment vs null** ``E / E0`` (what the verdicts read): 1 = no more relevance than a
  same-shaped mask elsewhere in its region. NaN where the region mask is absent, no placement is
  admissible, or ``E0`` is not positive.

The admissibility counts for every offset at once are two cross-correlations (FFT), and the
enrichments of the mask and all its placements one matrix product per part.
"""
from __future__ import annotations

import warnings
import zlib
from typing import Mapping, Sequence

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
    total = r.sum(1, keepdim=True).double()
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


#: mask name -> the region its null placements must lie in ("image": anywhere in the frame).
#: Masks not listed (other user masks) use the whole image.
NULL_REGIONS = {
    "detail": "interior",         # fine texture of the object vs other parts of the object's inside
    "face": "silhouette",         # the face vs other parts of the animal
    "stripes": "silhouette",      # the stripe pattern vs the same pattern shifted over the animal
    "outline": "image",           # the boundary band vs the same band around a shifted silhouette
    "edges": "image",
    "interior": "image",
    "silhouette": "image",
    "background": "image",
}


def null_region(name: str, masks: Mapping[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray | None:
    """The boolean region (H, W) of mask ``name``'s null; None if its region mask is not in ``masks``."""
    reg = NULL_REGIONS.get(name, "image")
    if reg == "image":
        return np.ones(shape, bool)
    return np.asarray(masks[reg], bool) if reg in masks else None


def _correlate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """c[H-1+dy, W-1+dx] = sum_u a(u) b(u + d) (linear, no wrap; zero-padded FFT), rounded to counts."""
    from scipy import fft
    h, w = a.shape
    shape = (fft.next_fast_len(2 * h - 1, real=True), fft.next_fast_len(2 * w - 1, real=True))
    f = fft.rfft2(b.astype(np.float64), shape) * fft.rfft2(a[::-1, ::-1].astype(np.float64), shape)
    return np.rint(fft.irfft2(f, shape)[:2 * h - 1, :2 * w - 1])


def admissible_offsets(mask, region, min_inside: float = 0.5, max_self_overlap: float = 0.5) -> np.ndarray:
    """Offsets (n, 2) (dy, dx) at which the translated mask keeps >= ``min_inside`` of its pixels in
    ``region`` and at most ``max_self_overlap`` of that placement lies on the mask itself."""
    m, r = np.asarray(mask, bool), np.asarray(region, bool)
    n = m.sum()
    if n == 0 or not r.any():
        return np.zeros((0, 2), np.int64)
    inside = _correlate(m, r)                   # |shift(m, d) & R|
    self_ = _correlate(m, m & r)                # |shift(m, d) & m & R|
    h, w = m.shape
    ok = (inside >= min_inside * n) & (self_ <= max_self_overlap * inside) & (inside > 0)
    ok[h - 1, w - 1] = False                    # d = 0 is the mask itself
    yy, xx = np.nonzero(ok)
    return np.stack([yy - (h - 1), xx - (w - 1)], 1).astype(np.int64)


def translate(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The mask moved by (dy, dx), zero-filled (no wrap-around)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def null_masks(mask, region, n_null: int = 16, seed: int | Sequence[int] = 0, min_inside: float = 0.5,
               max_self_overlap: float = 0.5) -> np.ndarray:
    """Up to ``n_null`` placements (S, H, W) of ``mask`` inside ``region`` (module docstring);
    S = 0 when none is admissible. Deterministic for a given seed."""
    m, r = np.asarray(mask, bool), np.asarray(region, bool)
    offs = admissible_offsets(m, r, min_inside, max_self_overlap)
    if len(offs) == 0:
        return np.zeros((0, *m.shape), bool)
    pick = np.random.default_rng(seed).choice(len(offs), size=min(n_null, len(offs)), replace=False)
    return np.stack([translate(m, int(dy), int(dx)) & r for dy, dx in offs[np.sort(pick)]])


def enrichment_vs_null(maps, masks: Mapping[str, np.ndarray], parts=PARTS, n_null: int = 16, seed: int = 0,
                       min_inside: float = 0.5, max_self_overlap: float = 0.5) -> dict[str, np.ndarray]:
    """Enrichment of ``maps`` (..., H, W) in each mask of ``masks`` ({name: (H, W)}, shared by the
    maps) and its region-constrained null: ``{part: E, f"{part}_null": E0, f"{part}_vs_null": E / E0}``,
    each (..., K) in the order of ``masks``; one matrix product per part."""
    if n_null < 1:
        raise DiffxaiError(f"enrichment.n_null must be >= 1, got {n_null}")
    names = list(masks)
    a, m = _prepare(maps, np.stack([np.asarray(masks[n], bool) for n in names]))
    hw = tuple(m.shape[-2:])
    cols, owner = [m.reshape(len(names), -1)], []
    for k, name in enumerate(names):
        reg = null_region(name, masks, hw)
        nm = (np.zeros((0, *hw), bool) if reg is None else
              null_masks(masks[name], reg, n_null, [seed, zlib.crc32(name.encode())], min_inside, max_self_overlap))
        cols.append(torch.as_tensor(nm.reshape(len(nm), hw[0] * hw[1]), dtype=torch.float32))
        owner += [k] * len(nm)
    allm, owner = torch.cat(cols, 0), np.asarray(owner, np.int64)
    lead, k = a.shape[:-2], len(names)
    out = {}
    for part in parts:
        e = _enrichment_flat(relevance(a, part).reshape(-1, allm.shape[1]), allm)       # (M, K + n)
        e0 = np.full((e.shape[0], k), np.nan)
        with warnings.catch_warnings():                   # all-NaN rows: maps without relevance
            warnings.simplefilter("ignore", RuntimeWarning)
            for j in np.unique(owner):
                e0[:, j] = np.nanmean(e[:, k:][:, owner == j], axis=1)
            ratio = np.where(e0 > 0, e[:, :k] / np.where(e0 > 0, e0, 1.0), np.nan)
        out[part] = e[:, :k].reshape(*lead, k)
        out[f"{part}_null"] = e0.reshape(*lead, k)
        out[f"{part}_vs_null"] = ratio.reshape(*lead, k)
    return out


def null_regions_markdown() -> str:
    """:data:`NULL_REGIONS` as a Markdown table (docs/ANALYSIS.md carries it; a test keeps them equal)."""
    return "\n".join(["| mask | its null placements lie in |", "|---|---|"]
                     + [f"| {m} | {r} |" for m, r in NULL_REGIONS.items()])
