"""Do the methods (and the noise draws) agree? Rank correlation and top-k overlap on a common grid.

Definitions, for two maps ``a``, ``b`` (H, W) of the same input:

- **common grid**: ``|map|`` average-pooled to ``grid`` cells (default 28 x 28, i.e. 8 px cells at
  224 px, close to Occlusion's stride-8 grid); pooling |.| first keeps opposite-sign neighbours
  from cancelling;
- **rank correlation**: Spearman's rho of the pooled cells (average ranks for ties);
- **top-k overlap**: ``|T_a & T_b| / k`` where ``T`` = the ``k = round(top_fraction * cells)``
  cells with the largest value (``torch.topk``; exact ties in pooled maps are rare);
  chance = ``top_fraction`` (two independent
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
from scipy import stats

DEFAULT_GRID = (28, 28)


def pool_to_grid(maps, grid: tuple[int, int] = DEFAULT_GRID) -> torch.Tensor:
    """|maps| (..., H, W) average-pooled to (..., gh, gw) (adaptive pooling, exact when divisible)."""
    a = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    lead, (h, w) = a.shape[:-2], a.shape[-2:]
    p = Fn.adaptive_avg_pool2d(a.reshape(-1, 1, h, w).abs().float(), tuple(grid))
    return p.reshape(*lead, *grid)


def top_k_sets(values: torch.Tensor, top_fraction: float = 0.1) -> torch.Tensor:
    """Boolean (N, P): the round(top_fraction * P) largest entries of each row (``torch.topk``)."""
    n, p = values.shape
    k = max(1, int(round(top_fraction * p)))
    idx = torch.topk(values, k, dim=1, sorted=False).indices
    return torch.zeros(n, p, dtype=torch.bool).scatter_(1, idx, True)


def _rows(a) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.reshape(t.shape[0], -1)


def prepare(pooled, top_fraction: float = 0.1) -> dict:
    """Per-map quantities computed once: standardised average ranks ``z`` (so that Spearman's rho
    of two maps is ``mean(z_a * z_b)``; NaN for a constant map) and the top-k set ``top``; the
    leading shape of ``pooled`` (..., gh, gw) is kept."""
    t = pooled if isinstance(pooled, torch.Tensor) else torch.as_tensor(np.asarray(pooled))
    lead = tuple(t.shape[:-2])
    flat = t.reshape(-1, t.shape[-2] * t.shape[-1]).double()
    r = stats.rankdata(flat.numpy(), axis=1)
    r -= r.mean(1, keepdims=True)
    sd = np.sqrt((r * r).mean(1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sd > 0, r / sd, np.nan)
    top = top_k_sets(flat, top_fraction).float()            # float: products and sums are fast
    return {"z": torch.as_tensor(z).float().reshape(*lead, -1), "top": top.reshape(*lead, -1)}


def compare(pa: dict, pb: dict) -> dict[str, np.ndarray]:
    """``{"spearman", "overlap"}`` of two prepared stacks with equal leading shape."""
    rho = (pa["z"] * pb["z"]).mean(-1).double()
    ov = (pa["top"] * pb["top"]).sum(-1).double() / pa["top"].sum(-1).double()
    return {"spearman": rho.numpy(), "overlap": ov.numpy()}


def top_k_overlap(a, b, top_fraction: float = 0.1) -> np.ndarray:
    """Row-wise |T_a & T_b| / k of (N, ...) arrays."""
    ta, tb = top_k_sets(_rows(a).double(), top_fraction), top_k_sets(_rows(b).double(), top_fraction)
    return ((ta & tb).sum(1).double() / ta.sum(1).double()).numpy()


def pair_agreement(a, b, top_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """``{"spearman", "overlap"}`` of pooled maps a, b with equal shape (..., gh, gw) -> (...)."""
    return compare(prepare(a, top_fraction), prepare(b, top_fraction))


def _move(p: dict, src: int, dst: int) -> dict:
    return {k: torch.movedim(v, src, dst) for k, v in p.items()}


def method_agreement(pooled: Mapping[str, torch.Tensor], top_fraction: float = 0.1,
                     prepared: Mapping[str, dict] | None = None) -> dict:
    """Every method pair of pooled maps (..., gh, gw) -> ``{(a, b): {"spearman", "overlap"}}``."""
    pr = prepared or {m: prepare(v, top_fraction) for m, v in pooled.items()}
    return {(a, b): compare(pr[a], pr[b]) for a, b in combinations(sorted(pr), 2)}


def seed_agreement(pooled, seed_axis: int, top_fraction: float = 0.1,
                   prepared: dict | None = None) -> dict[str, np.ndarray]:
    """Mean over seed pairs of the agreement of pooled maps (..., seed, ..., gh, gw); seed axis dropped.

    With one seed the result is NaN (nothing to compare).
    """
    p = _move(prepared or prepare(pooled, top_fraction), seed_axis, 0)
    n = p["z"].shape[0]
    pairs = list(combinations(range(n), 2))
    if not pairs:
        nan = np.full(tuple(p["z"].shape[1:-1]), np.nan)
        return {"spearman": nan, "overlap": nan.copy()}
    res = [compare({k: v[i] for k, v in p.items()}, {k: v[j] for k, v in p.items()}) for i, j in pairs]
    return {k: np.mean([r[k] for r in res], axis=0) for k in ("spearman", "overlap")}


def cross_seed_method_agreement(pooled: Mapping[str, torch.Tensor], seed_axis: int,
                                top_fraction: float = 0.1, prepared: Mapping[str, dict] | None = None) -> dict:
    """Method pairs, seed s of A against seed (s + 1) mod S of B; seed axis kept (NaN with one seed)."""
    pr = prepared or {m: prepare(v, top_fraction) for m, v in pooled.items()}
    out = {}
    for a, b in combinations(sorted(pr), 2):
        pa, pb = _move(pr[a], seed_axis, 0), _move(pr[b], seed_axis, 0)
        if pa["z"].shape[0] < 2:
            nan = np.full(tuple(pr[a]["z"].shape[:-1]), np.nan)
            out[(a, b)] = {"spearman": nan, "overlap": nan.copy()}
            continue
        r = compare(pa, {k: torch.roll(v, -1, dims=0) for k, v in pb.items()})
        out[(a, b)] = {k: np.moveaxis(v, 0, seed_axis) for k, v in r.items()}
    return out
