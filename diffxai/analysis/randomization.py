"""Sanity check: cascading model-parameter randomization (Adebayo et al. 2018).

Definitions:

- an **attribute function** ``fn(model, x, targets) -> maps`` ((N, C, H, W), (N,) -> (N, H, W));
  it must run on the model it is given (the randomized copy), e.g. the engine with the model
  unfolded (a batch-norm-folded copy made before randomization would hide the randomized BN);
- **groups**, top-down: a list of ``(name, [module names])``; randomizing a group calls
  ``reset_parameters()`` on every sub-module that has one (conv, linear, batch norm), each after
  ``torch.manual_seed(seed + 1)`` — Quantus 0.6.0's ``get_random_layer_generator`` rule, so
  :func:`leaf_groups` reproduces Quantus' MPRT exactly; the global RNG state is restored after;
- **cascading**: group d is randomized on top of groups 0..d-1 (top-down: classifier head first);
- at each depth the maps of the randomized model are compared with the original maps by
  **Spearman rank correlation** (average ranks for ties) of the flattened ``|map|`` and by
  **SSIM** (Wang et al. 2004 with scikit-image's defaults: 7x7 uniform window, K1 = 0.01,
  K2 = 0.03, sample covariance, mean over the valid region) of the maps after ``|.|`` and division
  by their maximum, ``data_range`` = max - min over the pair; depth "original" re-explains the
  unchanged model (1 for deterministic methods, below 1 for GradientSHAP's random draws);
- **passes**: a method passes when the similarity at full randomization falls below
  ``threshold`` (mean over the maps); a map that ignores the model (e.g. |x|) keeps similarity 1
  and fails.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as Fn
from scipy import stats
from torch import nn

from ..errors import DiffxaiError

AttributeFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Groups = Sequence[tuple[str, Sequence[str]]]


def leaf_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Every module with ``reset_parameters``, top-down (reversed registration order), one group each."""
    mods = [n for n, m in model.named_modules() if hasattr(m, "reset_parameters")]
    return [(n, [n]) for n in reversed(mods)]


def efficientnet_lite0_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Top-down block structure of :class:`diffxai.models.EfficientNetLite0`: fc, head, blocks 15..0, stem."""
    n_blocks = len(model._blocks)
    return ([("fc", ["_fc"]), ("head", ["_conv_head", "_bn1"])]
            + [(f"block{i}", [f"_blocks.{i}"]) for i in reversed(range(n_blocks))]
            + [("stem", ["_conv_stem", "_bn0"])])


def default_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """EfficientNet-Lite0 blocks when the model is one (also behind a wrapper), else leaf groups."""
    from ..models import EfficientNetLite0

    if isinstance(model, EfficientNetLite0):
        return efficientnet_lite0_groups(model)
    return leaf_groups(model)


def randomize_(model: nn.Module, names: Sequence[str], seed: int = 42) -> None:
    """Re-initialise in place every parameterised sub-module of the named modules (see module doc)."""
    with torch.random.fork_rng(devices=[]):
        for name in names:
            try:
                top = model.get_submodule(name)
            except AttributeError:
                raise DiffxaiError(f"randomization: model has no module {name!r}") from None
            for m in top.modules():
                if hasattr(m, "reset_parameters"):
                    torch.manual_seed(seed + 1)
                    m.reset_parameters()


def _flat(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return a.reshape(a.shape[0], -1).astype(np.float64)


def spearman_rows(a, b) -> np.ndarray:
    """Row-wise Spearman correlation of (N, ...) arrays (average ranks; NaN for a constant row)."""
    ra, rb = (stats.rankdata(_flat(v), axis=1) for v in (a, b))
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / den, np.nan)


def normalise_abs(maps) -> torch.Tensor:
    """|a| / max|a| per map (all-zero maps stay zero)."""
    a = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).double().abs()
    mx = a.flatten(1).amax(1).clamp_min(1e-300).view(-1, *([1] * (a.ndim - 1)))
    return a / mx


def ssim_maps(a, b, win: int = 7, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Mean SSIM of each pair of maps (N, H, W) with data_range = max - min over the pair."""
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).double()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).double()
    lo = torch.minimum(a.flatten(1).amin(1), b.flatten(1).amin(1))
    hi = torch.maximum(a.flatten(1).amax(1), b.flatten(1).amax(1))
    rng = (hi - lo).view(-1, 1, 1, 1)
    x, y = a[:, None], b[:, None]
    pool = lambda t: Fn.avg_pool2d(t, win, stride=1)  # valid region = scikit-image's crop
    cov = win * win / (win * win - 1.0)
    ux, uy = pool(x), pool(y)
    vx = cov * (pool(x * x) - ux * ux)
    vy = cov * (pool(y * y) - uy * uy)
    vxy = cov * (pool(x * y) - ux * uy)
    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).numpy()


def similarities(orig, other) -> dict[str, np.ndarray]:
    """``{"spearman": (N,), "ssim": (N,)}`` of |maps| (see the module docstring)."""
    a, b = normalise_abs(orig), normalise_abs(other)
    return {"spearman": spearman_rows(a, b), "ssim": ssim_maps(a, b)}


def cascading_randomization(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                            attribute_fn: AttributeFn, groups: Groups | None = None, *,
                            seed: int = 42, original_maps: torch.Tensor | None = None) -> dict:
    """Similarity of maps with the original per cascading randomization depth.

    Returns ``{"depth": ["original", *group names], "spearman": (N, D), "ssim": (N, D)}``.
    ``original_maps`` default: ``attribute_fn(model, x, targets)``. The model is not modified.
    """
    groups = list(default_groups(model) if groups is None else groups)
    orig = attribute_fn(model, x, targets) if original_maps is None else original_maps
    rnd = copy.deepcopy(model).eval()
    names, sims = ["original"], [similarities(orig, attribute_fn(model, x, targets))]
    for name, members in groups:
        randomize_(rnd, members, seed)
        sims.append(similarities(orig, attribute_fn(rnd, x, targets)))
        names.append(name)
    return {"depth": names, **{k: np.stack([s[k] for s in sims], 1) for k in ("spearman", "ssim")}}


def passes(result: dict, metric: str = "spearman", threshold: float = 0.5) -> bool:
    """True when the mean |similarity| at full randomization (last depth) is below ``threshold``."""
    last = np.abs(result[metric][:, -1])
    return bool(np.nanmean(last) < threshold) if np.isfinite(last).any() else False
