"""Do the methods (and the noise draws) agree? Rank correlation and top-k overlap on a common grid.

Definitions, for two maps ``a``, ``b`` (H, W) of the same input:

- **common grid**: ``|map|`` average-pooled to ``grid`` cells (default 28 x 28, i.e. 8 px cells at
  224 px, close to Occlusion's stride-8 grid); pooling |.| first keeps opposite-sign neighbours
  from cancelling;
- **rank correlation**: Spearman's rho of the pooled cells (average ranks for ties);
- **top-k overlap**: ``|T_a & T_b| / k`` where ``T`` = the ``k = round(top_fraction * cells)``
  cells with the largest value (ties by position); chance = ``top_fraction`` (two independent
  random top-k sets share k * top_fraction cells on average), reported beside it;
- **between methods**: per (image, seed, step) for every method pair;
- **between seeds** (same method, image, step): the mean over all seed pairs — how much of a map
  is the particular noise draw's rather than the image's (1 = the draw does not matter);
- **cross-seed method control**: method A of seed s vs method B of seed s' != s: agreement that
  survives a different noise draw; method agreement above it is agreement on the draw itself.
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as Fn

from .randomization import spearman_rows

DEFAULT_GRID = (28, 28)


def pool_to_grid(maps, grid: tuple[int, int] = DEFAULT_GRID) -> torch.Tensor:
    """|maps| (..., H, W) average-pooled to (..., gh, gw) (adaptive pooling, exact when divisible)."""
    a = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    lead, (h, w) = a.shape[:-2], a.shape[-2:]
    p = Fn.adaptive_avg_pool2d(a.reshape(-1, 1, h, w).abs().float(), tuple(grid))
    return p.reshape(*lead, *grid)


def top_k_sets(values: torch.Tensor, top_fraction: float = 0.1) -> torch.Tensor:
    """Boolean (N, P): the round(top_fraction * P) largest entries of each row (ties by position)."""
    n, p = values.shape
    k = max(1, int(round(top_fraction * p)))
    idx = torch.sort(-values, dim=1, stable=True).indices[:, :k]
    return torch.zeros(n, p, dtype=torch.bool).scatter_(1, idx, True)


def top_k_overlap(a, b, top_fraction: float = 0.1) -> np.ndarray:
    """Row-wise |T_a & T_b| / k of (N, ...) arrays."""
    fa = torch.as_tensor(np.asarray(a)).reshape(len(a), -1) if not isinstance(a, torch.Tensor) else a.reshape(len(a), -1)
    fb = torch.as_tensor(np.asarray(b)).reshape(len(b), -1) if not isinstance(b, torch.Tensor) else b.reshape(len(b), -1)
    ta, tb = top_k_sets(fa, top_fraction), top_k_sets(fb, top_fraction)
    return ((ta & tb).sum(1).double() / ta.sum(1).double()).numpy()


def pair_agreement(a, b, top_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """``{"spearman", "overlap"}`` of pooled maps a, b with equal shape (..., gh, gw) -> (...)."""
    lead = a.shape[:-2]
    fa, fb = a.reshape(-1, a.shape[-2] * a.shape[-1]), b.reshape(-1, b.shape[-2] * b.shape[-1])
    return {"spearman": spearman_rows(fa, fb).reshape(lead),
            "overlap": top_k_overlap(fa, fb, top_fraction).reshape(lead)}


def method_agreement(pooled: Mapping[str, torch.Tensor], top_fraction: float = 0.1) -> dict:
    """Every method pair of pooled maps (..., gh, gw) -> ``{(a, b): {"spearman", "overlap"}}``."""
    return {(a, b): pair_agreement(pooled[a], pooled[b], top_fraction) for a, b in combinations(sorted(pooled), 2)}


def seed_agreement(pooled: torch.Tensor, seed_axis: int, top_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Mean over seed pairs of the agreement of pooled maps (..., seed, ..., gh, gw); seed axis dropped.

    With one seed the result is NaN (nothing to compare).
    """
    x = torch.movedim(pooled, seed_axis, 0)
    n = x.shape[0]
    pairs = list(combinations(range(n), 2))
    if not pairs:
        nan = np.full(tuple(x.shape[1:-2]), np.nan)
        return {"spearman": nan, "overlap": nan.copy()}
    res = [pair_agreement(x[i], x[j], top_fraction) for i, j in pairs]
    return {k: np.mean([r[k] for r in res], axis=0) for k in ("spearman", "overlap")}


def cross_seed_method_agreement(pooled: Mapping[str, torch.Tensor], seed_axis: int,
                                top_fraction: float = 0.1) -> dict:
    """Method pairs, seed s of A against seed (s + 1) mod S of B; seed axis kept (NaN with one seed)."""
    out = {}
    for a, b in combinations(sorted(pooled), 2):
        xa = torch.movedim(pooled[a], seed_axis, 0)
        n = xa.shape[0]
        if n < 2:
            nan = np.full(tuple(pooled[a].shape[:-2]), np.nan)
            out[(a, b)] = {"spearman": nan, "overlap": nan.copy()}
            continue
        xb = torch.roll(torch.movedim(pooled[b], seed_axis, 0), -1, dims=0)
        r = pair_agreement(xa, xb, top_fraction)
        out[(a, b)] = {k: np.moveaxis(v, 0, seed_axis) for k, v in r.items()}
    return out
