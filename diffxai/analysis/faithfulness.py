"""Is a map faithful to the classifier? Batched deletion and insertion curves with nulls.

Definitions (Petsiuk et al. 2018, RISE; the nulls after Hooker et al. 2019, ROAR), for an input
``x`` (C, H, W), its target class ``c``, a pixel ordering and fractions ``0 = f_0 < ... <= 1``:

- a *pixel* is all C channels at one (y, x); an ordering ranks the H*W pixels, rank 0 first;
- the attribution ordering ranks pixels by ``|a|`` (channel-summed map, or ``sum_c |a_c|`` for a
  (C, H, W) map) descending; ties by position;
- ``k_j = round(f_j * H * W)``; **deletion** input j: the first ``k_j`` pixels replaced by the
  baseline, the rest as in x; **insertion** input j: the first ``k_j`` pixels of x on the baseline;
- the curve is ``p_j = softmax(model(input_j))[c]`` (or the logit, ``output="logit"``);
- **AUC** = trapezoid of ``p_j`` over ``f_j`` divided by ``p(x)`` (the probability before
  deletion), so 1 = the curve stays at p(x) throughout. Deletion: lower = more faithful;
  insertion: higher = more faithful. Before the onset p(x) is near 0 and the ratio is a ratio of
  tiny numbers: the raw AUC (not divided) is returned beside it (``{mode}_auc_raw``);
- nulls beside every map: ``n_random`` uniformly random orderings (seeded; their mean is the chance
  level) and the ordering by ``|x|`` alone (``sum_c |x_c|`` descending): a map that does no better
  than ``|x|`` has told us nothing the input's magnitude did not.

All (map, ordering, fraction) inputs are built on the fly in chunks of ``batch_size`` and go through
the model as batches; the only Python loop is over chunks. The inputs at ``k = 0`` and ``k = H*W``
do not depend on the ordering and are evaluated once per map.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DiffxaiError

DEFAULT_FRACTIONS = tuple(np.round(np.linspace(0.0, 1.0, 11), 6))
MODES = ("deletion", "insertion")


def pixel_scores(maps: torch.Tensor) -> torch.Tensor:
    """|a| per pixel: (N, H, W) -> (N, H*W); (N, C, H, W) -> sum_c |a_c|."""
    a = maps.abs()
    if a.ndim == 4:
        a = a.sum(1)
    return a.reshape(a.shape[0], -1)


def ranks_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """Scores (..., P) -> rank of each pixel (0 = highest score), ties broken by position."""
    order = torch.sort(-scores, dim=-1, stable=True).indices
    return torch.argsort(order, dim=-1)


def random_ranks(n: int, n_pixels: int, n_draws: int, seed: int = 0) -> torch.Tensor:
    """(n, n_draws, P) uniformly random pixel ranks (seeded)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.argsort(torch.rand(n, n_draws, n_pixels, generator=g), dim=-1)


def pixel_counts(fractions: Sequence[float], n_pixels: int) -> np.ndarray:
    """k_j = round(f_j * P) for ascending fractions in [0, 1]."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size < 2 or np.any(np.diff(f) <= 0) or f[0] < 0 or f[-1] > 1:
        raise DiffxaiError(f"fractions must ascend strictly within [0, 1], got {list(f)}")
    return np.round(f * n_pixels).astype(np.int64)


@torch.no_grad()
def target_scores(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  output: str = "softmax") -> torch.Tensor:
    """p(target) (``softmax``) or the target logit (``logit``) for a batch."""
    param = next(model.parameters(), None)   # inputs follow the model (a CUDA model, CPU maps)
    logits = model(inputs if param is None else inputs.to(param.device))
    targets = targets.to(logits.device)
    if output == "softmax":
        logits = logits.softmax(-1)
    elif output != "logit":
        raise DiffxaiError(f"output {output!r} is not 'softmax' or 'logit'")
    return logits.gather(1, targets.view(-1, 1)).squeeze(1).float()


def _batched_scores(model, make_inputs, n_items: int, targets_of, batch_size: int, output: str):
    out = torch.empty(n_items)
    for s in range(0, n_items, batch_size):
        idx = torch.arange(s, min(s + batch_size, n_items))
        out[idx] = target_scores(model, make_inputs(idx), targets_of(idx), output).cpu()
    return out


def perturbation_curves(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, ranks: torch.Tensor,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, baseline: float | torch.Tensor = 0.0,
                        mode: str = "deletion", batch_size: int = 64, output: str = "softmax") -> torch.Tensor:
    """Curves (N, O, F) of p(target) for inputs x (N, C, H, W) and pixel ranks (N, O, H*W).

    ``baseline`` is a scalar or a tensor broadcastable to x. See the module docstring.
    """
    if mode not in MODES:
        raise DiffxaiError(f"mode {mode!r} is not one of {MODES}")
    n, c, h, w = x.shape
    P = h * w
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    ks = torch.as_tensor(pixel_counts(fractions, P))
    n_o = ranks.shape[1]
    inner = torch.nonzero((ks > 0) & (ks < P)).ravel()          # fraction indices needing an order
    first, last = (x, base) if mode == "deletion" else (base, x)  # input at k = 0 / k = P
    tgt = targets.to(x.device)

    def make_inner(idx):
        i_map, rest = idx // (n_o * len(inner)), idx % (n_o * len(inner))
        i_ord, i_f = rest // len(inner), inner[rest % len(inner)]
        sel = (ranks[i_map, i_ord] < ks[i_f].view(-1, 1)).view(-1, 1, h, w).to(x.device)
        on, off = (base, x) if mode == "deletion" else (x, base)
        return torch.where(sel, on[i_map], off[i_map])

    curves = torch.empty(n, n_o, len(ks))
    vals = _batched_scores(model, make_inner, n * n_o * len(inner),
                           lambda idx: tgt[idx // (n_o * len(inner))], batch_size, output)
    curves[:, :, inner] = vals.view(n, n_o, len(inner))
    for k_val, src in ((0, first), (P, last)):
        j = torch.nonzero(ks == k_val).ravel()
        if len(j):
            v = _batched_scores(model, lambda idx: src[idx], n, lambda idx: tgt[idx], batch_size, output)
            curves[:, :, j] = v.view(n, 1, 1)
    return curves


def normalised_auc(curves: np.ndarray, fractions: Sequence[float], p_ref: np.ndarray) -> np.ndarray:
    """Trapezoid AUC of curves (..., F) over ``fractions`` divided by ``p_ref`` (...)."""
    f = np.asarray(fractions, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.trapezoid(np.asarray(curves, np.float64), f, axis=-1) / np.asarray(p_ref, np.float64)


def order_names(n_random: int) -> list[str]:
    """Names along the ``order`` axis: the map, each random draw, |x|."""
    return ["attribution"] + [f"random{i}" for i in range(n_random)] + ["input_abs"]


def deletion_insertion(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor, *,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS, baseline: float | torch.Tensor = 0.0,
                       n_random: int = 3, seed: int = 0, modes: Sequence[str] = MODES,
                       batch_size: int = 64, output: str = "softmax") -> dict:
    """Deletion/insertion curves and AUCs for maps (N, [C,] H, W) of inputs x (N, C, H, W).

    Returns ``{"orders": names, "fractions": f, "p_ref": (N,), f"{mode}_curve": (N, O, F),
    f"{mode}_auc": (N, O), f"{mode}_auc_raw": (N, O)}`` with O = 1 + n_random + 1 orderings
    (see :func:`order_names`).
    """
    n, _, h, w = x.shape
    ranks = torch.cat([
        ranks_from_scores(pixel_scores(maps.detach().cpu())).unsqueeze(1),
        random_ranks(n, h * w, n_random, seed),
        ranks_from_scores(pixel_scores(x.detach().cpu())).unsqueeze(1),
    ], dim=1)
    p_ref = _batched_scores(model, lambda idx: x[idx], n, lambda idx: targets.to(x.device)[idx],
                            batch_size, output).numpy()
    out = {"orders": order_names(n_random), "fractions": np.asarray(fractions, float), "p_ref": p_ref}
    for mode in modes:
        cur = perturbation_curves(model, x, targets, ranks, fractions, baseline, mode, batch_size, output).numpy()
        out[f"{mode}_curve"] = cur
        out[f"{mode}_auc"] = normalised_auc(cur, fractions, p_ref[:, None])
        out[f"{mode}_auc_raw"] = normalised_auc(cur, fractions, np.ones_like(p_ref)[:, None])
    return out


def summarise_orders(auc: np.ndarray, n_random: int) -> dict[str, np.ndarray]:
    """AUC (..., O) -> ``{"map", "random" (mean of draws), "input_abs"}`` each (...)."""
    return {"map": auc[..., 0], "random": auc[..., 1:1 + n_random].mean(-1), "input_abs": auc[..., -1]}
