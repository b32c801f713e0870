"""Controls beside the maps: what of a map's trend the ``x`` factor, the input itself or forward
noising alone would produce (stage blocks; the numerics live in spatial, spectral and theory).

Variables (dims image, seed, step[, mask, part]; ``band`` for the band-filtered inputs):

- ``{metric}_gradient_only`` (the subset): the method's OWN gradient-only map — IG with
  ``multiply_by_inputs=False`` for IG, GradientSHAP with ``multiply_by_inputs=False`` for
  GradientSHAP — i.e. the map without its ``x`` factor. Occlusion multiplies by nothing: it has none.
- ``{metric}_input_abs`` (every step): the input's own magnitude ``sum_c |x_c|`` as a map: what the
  ``x`` factor alone can imprint (Hooker et al. 2019's point on x-input attributions);
- ``crossover_frequency``, ``spectral_centroid_theory`` (image, step): what noising predicts
  (:mod:`.theory`); ``p_true_band`` (image, seed, step, band): p(true) of the low- and high-pass
  filtered noised inputs.

``{metric}`` is each of ``enrichment`` (mask, part), ``spectral_centroid``, ``low_freq_share``.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from . import spatial as SPA
from . import spectral as SPE
from . import theory as TH

AttributeFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

UNIT = ("image", "seed", "step")


def map_metrics(maps: torch.Tensor, image_index: np.ndarray, masks: Mapping[str, np.ndarray],
                s: Mapping) -> dict[str, np.ndarray]:
    """Enrichment (n, mask, part) and spectra (n,) of maps (n, H, W) of the images ``image_index`` (n,)."""
    names, parts = list(masks), list(s["enrichment"]["parts"])
    e = np.full((len(maps), len(names), len(parts)), np.nan)
    for i in np.unique(image_index):
        rows = np.flatnonzero(image_index == i)
        stack = np.stack([np.asarray(masks[n][i]) for n in names])
        for j, p in enumerate(parts):
            e[rows, :, j] = SPA.enrichment(maps[rows], stack, p)
    m = SPE.spectral_metrics(maps, s["spectral"]["n_bins"], s["spectral"]["cutoff"])
    return {"enrichment": e, "spectral_centroid": m["centroid"], "low_freq_share": m["low_share"]}


def _variables(values: Mapping[str, np.ndarray], suffix: str) -> dict:
    out = {}
    for k, v in values.items():
        dims = UNIT + (("mask", "part") if k == "enrichment" else ())
        out[f"{k}_{suffix}"] = (dims, v)
    return out


def _scatter(res: Mapping[str, np.ndarray], flat: np.ndarray, shape) -> dict[str, np.ndarray]:
    out = {}
    for k, v in res.items():
        full = np.full((int(np.prod(shape)), *v.shape[1:]), np.nan)
        full[flat] = v
        out[k] = full.reshape(*shape, *v.shape[1:])
    return out


def input_abs_block(x: np.ndarray, masks: Mapping[str, np.ndarray], s: Mapping) -> dict:
    """``*_input_abs`` of the noised inputs x (image, seed, step, C, H, W), every unit."""
    shape = x.shape[:3]
    maps = torch.as_tensor(np.abs(x).sum(3)).reshape(-1, *x.shape[-2:])
    idx = np.unravel_index(np.arange(len(maps)), shape)[0]
    return _variables({k: v.reshape(*shape, *v.shape[1:]) for k, v in map_metrics(maps, idx, masks, s).items()},
                      "input_abs")


def gradient_only_block(model: nn.Module, x: np.ndarray, targets: np.ndarray, sel: np.ndarray,
                        masks: Mapping[str, np.ndarray], s: Mapping, gradient_fn: AttributeFn) -> dict:
    """``*_gradient_only`` on the subset ``sel`` (image, seed, step), NaN elsewhere."""
    flat = np.flatnonzero(sel)
    if not flat.size:
        return {}
    xs = torch.as_tensor(x.reshape(-1, *x.shape[3:])[flat])
    maps = gradient_fn(model, xs, torch.as_tensor(targets.reshape(-1)[flat]))
    res = map_metrics(torch.as_tensor(maps).detach().cpu().float(), np.unravel_index(flat, sel.shape)[0], masks, s)
    return _variables(_scatter(res, flat, sel.shape), "gradient_only")


def theory_block(x0: torch.Tensor, alpha_bar: np.ndarray, s: Mapping) -> dict:
    """``crossover_frequency`` and ``spectral_centroid_theory`` (image, step) of the clean images x0."""
    m = TH.theory_metrics(x0, alpha_bar, s["spectral"]["n_bins"])
    return {"crossover_frequency": (("image", "step"), m["crossover"]),
            "spectral_centroid_theory": (("image", "step"), m["centroid"])}


def band_block(model: nn.Module, x: np.ndarray, targets: np.ndarray, crossover: np.ndarray, sel: np.ndarray,
               s: Mapping) -> tuple[dict, dict]:
    """``p_true_band`` (image, seed, step, band) of the band-filtered inputs on ``sel``; (vars, coords)."""
    cutoffs = list(s["theory"]["band_cutoffs"])
    names = TH.band_names(cutoffs)
    flat = np.flatnonzero(sel)
    out = np.full((*sel.shape, len(names)), np.nan)
    if flat.size:
        i, _, k = np.unravel_index(flat, sel.shape)
        p = TH.band_scores(model, torch.as_tensor(x.reshape(-1, *x.shape[3:])[flat]),
                           torch.as_tensor(targets.reshape(-1)[flat]), cutoffs, crossover[i, k],
                           int(s["theory"]["batch_size"]), "softmax")
        out.reshape(-1, len(names))[flat] = p
    return {"p_true_band": (UNIT + ("band",), out)}, {"band": names}
