"""The per-class analysis stage on the xarray stores of docs/DESIGN.md ("Data contract").

Inputs (one class): the noised store (``x`` (image, seed, step, channel, y, x) and the step coords
``step``, ``t``, ``alpha_bar``, ``log_snr``), the probs store (``p_true`` (image, seed, step)),
the attribution store of each method (``attribution`` (image, seed, step, y, x), optional
``target`` (image, seed, step)), the clean 8-bit images (N_images, H, W, 3) in image order, the
classifier (taking [-1, 1] inputs) and the class onset k* (results/onset.csv; it places the subset).

One composition, the same in the workflow and the tests: :func:`analyze_method` per method (one job
each), :func:`analyze_agreement` across methods, and :func:`combine` of their Datasets into one with
dims (xai_method, image, seed, step[, mask, part, order, fill, fraction, depth, pair, band]);
:func:`analyze_class` is exactly that composition. The dim is not called ``method`` because
``Dataset.sel(method=...)`` is xarray's inexact-match keyword and would silently return
everything. Cheap metrics (enrichment, spectra, the |x| controls, the theory, agreement) cover
every (image, seed, step); the costly ones (deletion/insertion, randomization, the gradient-only
controls) cover ``settings["subset"]`` (randomization: its own ``randomization.subset`` on top)
and are NaN elsewhere, with booleans ``in_subset`` / ``in_randomization_subset`` saying where.

Settings: the ``analysis:`` config block; its defaults come from config/schema.yaml only
(:func:`diffxai.config.schema_defaults`). An *attribute function* is ``fn(model, x, targets) ->
maps`` ((N, C, H, W), (N,) -> (N, H, W)); the workflow passes the engine
(:func:`engine_attribute_fn`), tests may pass Captum.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from ..config import merged, schema_defaults
from ..errors import DiffxaiError
from . import agreement as AG
from . import control_verdicts as CV
from . import controls as CT
from . import faithfulness as FA
from . import masks as MK
from .metrics import CONTROLS, METHOD_INDEPENDENT, SUMMARY_VARIABLES
from ..registry import X_FACTOR_METHODS
from . import randomization as RA
from . import spatial as SPA
from . import spectral as SPE
from . import verdicts as VE

AttributeFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

def merged_settings(settings: Mapping | None) -> dict:
    """config/schema.yaml's ``analysis`` defaults deep-updated with ``settings`` (the ``analysis:`` block)."""
    return merged(schema_defaults("analysis"), settings)


def engine_attribute_fn(spec, options=None) -> AttributeFn:
    """Adapter: the engine of ``diffxai.attribution`` as an attribute function."""
    def fn(model, x, targets):
        from ..attribution import attribute  # noqa: PLC0415 - the engine imports its backends lazily
        maps, _ = attribute(model, x, targets, spec, options)
        return torch.as_tensor(maps)
    return fn


def clean_x0(noised: xr.Dataset, images: np.ndarray, rgb: np.ndarray) -> torch.Tensor:
    """x0 (n, C, H, W) of the attributed images: the noised store's own ``x0`` when it has one
    (exactly what the trajectory was built from), else from the clean PNG pixels."""
    if "x0" in noised:
        x0 = noised["x0"]
        if "image" in x0.dims:
            return torch.as_tensor(_take(x0, "image", images).transpose("image", "channel", "y", "x").values).float()
        return torch.as_tensor(x0.transpose("channel", "y", "x").values).float().expand(len(images), -1, -1, -1)
    return x0_from_rgb(rgb)


def user_mask_folder(folder, attrs: Mapping) -> str | None:
    """``{folder}/{cls}`` (or ``{folder}/{synset}``) when that subfolder exists, else ``folder``."""
    if not folder:
        return None
    from pathlib import Path
    for key in ("cls", "synset"):
        if attrs.get(key) and (Path(folder) / str(attrs[key])).is_dir():
            return str(Path(folder) / str(attrs[key]))
    return str(folder)


def x0_from_rgb(clean_rgb: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1] (DDPM space, as :mod:`diffxai.noise`)."""
    return torch.as_tensor(np.asarray(clean_rgb)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def subset_steps(steps: np.ndarray, subset: Mapping, onset: float | None = None) -> np.ndarray:
    """Boolean (step,): the union of ``subset.steps`` (step values) and, when the onset is known, the
    steps nearest ``onset + d`` for d in ``subset.steps_relative_to_onset``; with neither list set,
    every ``steps_every``-th position (plus the last)."""
    steps = np.asarray(steps)
    ks = np.zeros(len(steps), bool)
    listed, rel = subset.get("steps"), subset.get("steps_relative_to_onset")
    if listed is None and rel is None:
        every = int(subset.get("steps_every") or 0)
        if every > 0 and len(ks):
            ks[::every] = True
            ks[-1] = True
        return ks
    if listed is not None:
        ks |= np.isin(steps, np.asarray(listed))
    if rel is not None and onset is not None and np.isfinite(onset) and len(steps):
        for d in rel:
            ks[int(np.argmin(np.abs(steps - (float(onset) + float(d)))))] = True
    return ks


def subset_mask(shape: tuple[int, int, int], steps: np.ndarray, subset: Mapping,
                onset: float | None = None) -> np.ndarray:
    """Boolean (image, seed, step): the first ``images`` images (null: all) x the first ``seeds``
    seeds (null: all) x :func:`subset_steps`."""
    m = np.zeros(shape, bool)
    n_i, n_s = (shape[0] if subset.get("images", 1) is None else int(subset.get("images", 1)),
                shape[1] if subset.get("seeds", 1) is None else int(subset.get("seeds", 1)))
    m[:n_i, :n_s] = subset_steps(steps, subset, onset)
    return m


def _targets(attr: xr.Dataset, noised: xr.Dataset) -> np.ndarray:
    """Target class per (image, seed, step): the store's ``target`` or the class index attr."""
    shape = tuple(attr.sizes[d] for d in ("image", "seed", "step"))
    if "target" in attr:  # (image, seed, step) or the one-image (seed, step) layout
        like = attr["attribution"].isel(y=0, x=0, drop=True)
        t = attr["target"].broadcast_like(like).transpose("image", "seed", "step")
        return np.asarray(t.values, dtype=np.int64).reshape(shape)
    idx = attr.attrs.get("class_index", noised.attrs.get("class_index"))
    if idx is None:
        raise DiffxaiError("analysis: no 'target' variable and no 'class_index' attribute to take targets from")
    return np.full(shape, int(idx), dtype=np.int64)


def enrichment_block(maps: torch.Tensor, masks: Mapping[str, np.ndarray], s: Mapping) -> dict:
    """maps (image, seed, step, H, W), masks {name: (image, H, W)} -> ``enrichment``, its
    region-constrained null ``enrichment_null`` and ``enrichment_vs_null`` (spatial.py), and
    ``stripes_minus_face`` (of the vs-null ratios) when both masks exist."""
    names = list(masks)
    parts = list(s["enrichment"]["parts"])
    en = s["enrichment"]
    e = np.empty((*maps.shape[:3], len(names), len(parts)))
    e0, ev = np.empty_like(e), np.empty_like(e)
    for i in range(maps.shape[0]):
        r = SPA.enrichment_vs_null(maps[i], {n: masks[n][i] for n in names}, parts, int(en["n_null"]),
                                   int(en["seed"]), float(en["min_inside"]), float(en["max_self_overlap"]))
        for j, p in enumerate(parts):
            e[i, ..., j], e0[i, ..., j], ev[i, ..., j] = r[p], r[f"{p}_null"], r[f"{p}_vs_null"]
    dims = ("image", "seed", "step", "mask", "part")
    out = {"enrichment": (dims, e), "enrichment_null": (dims, e0), "enrichment_vs_null": (dims, ev)}
    if "stripes" in names and "face" in names:
        d = ev[..., names.index("stripes"), :] - ev[..., names.index("face"), :]
        out["stripes_minus_face"] = (("image", "seed", "step", "part"), d)
    return out


def spectral_block(maps: torch.Tensor, s: Mapping, suffix: str = "") -> dict:
    """Spectral centroid and low-frequency share of maps (image, seed, step, H, W)."""
    m = SPE.spectral_metrics(maps, s["spectral"]["n_bins"], s["spectral"]["cutoff"])
    return {f"spectral_centroid{suffix}": (("image", "seed", "step"), m["centroid"]),
            f"low_freq_share{suffix}": (("image", "seed", "step"), m["low_share"])}


def _gather(x: np.ndarray, flat: np.ndarray) -> torch.Tensor:
    """Inputs of x (image, seed, step, C, H, W) at flat (image, seed, step) indices -> (n, C, H, W)."""
    return torch.as_tensor(x.reshape(-1, *x.shape[3:])[flat])


def noise_fill(alpha_bar_k: np.ndarray, shape: tuple, seed: int) -> torch.Tensor:
    """The step's noise alone, ``sqrt(1 - alpha_bar) * eps`` with fresh seeded eps (n, C, H, W): what a
    noised input holds where the image is absent (the noise-matched deletion fill)."""
    g = torch.Generator().manual_seed(int(seed) + 7919)
    eps = torch.randn(*shape, generator=g)
    return torch.as_tensor(np.sqrt(1.0 - np.asarray(alpha_bar_k)), dtype=torch.float32).view(-1, 1, 1, 1) * eps


def faithfulness_block(model, x: np.ndarray, maps: torch.Tensor, targets: np.ndarray, sel: np.ndarray,
                       s: Mapping, alpha_bar: np.ndarray) -> tuple[dict, dict]:
    """Deletion/insertion AUCs (image, seed, step, fill, order) and curves on the subset, one per
    deletion fill (``faithfulness.fills``); (vars, coords)."""
    f = s["faithfulness"]
    fr, fills = list(f["fractions"]), list(f["fills"])
    orders = FA.order_names(int(f["n_random"]))
    shape, flat = sel.shape, np.flatnonzero(sel)
    dims = ("image", "seed", "step", "fill", "order")
    out = {f"{m}_{k}": (dims, np.full((*shape, len(fills), len(orders)), np.nan))
           for m in FA.MODES for k in ("auc", "auc_raw")}
    out.update({f"{m}_curve": (dims + ("fraction",), np.full((*shape, len(fills), len(orders), len(fr)), np.nan))
                for m in FA.MODES})
    pref = np.full(shape, np.nan)
    if flat.size:
        i, sd, k = np.unravel_index(flat, shape)
        xs = _gather(x, flat)
        for j, fill in enumerate(fills):
            base = float(f["baseline"]) if fill == "baseline" else noise_fill(alpha_bar[k], tuple(xs.shape), f["seed"])
            res = FA.deletion_insertion(model, xs, torch.as_tensor(targets.reshape(-1)[flat]), maps[i, sd, k],
                                        fractions=fr, baseline=base, n_random=int(f["n_random"]), seed=int(f["seed"]),
                                        batch_size=int(f["batch_size"]), output=f["output"])
            for name, (_, arr) in out.items():
                arr.reshape(-1, *arr.shape[3:])[flat, j] = res[name]
            pref.reshape(-1)[flat] = res["p_ref"]
    out["p_before_deletion"] = (("image", "seed", "step"), pref)
    return out, {"order": orders, "fill": fills, "fraction": np.asarray(fr, float)}


def randomization_block(model, x: np.ndarray, maps: torch.Tensor, targets: np.ndarray, sel: np.ndarray,
                        s: Mapping, attribute_fn: AttributeFn) -> tuple[dict, dict]:
    """Spearman and SSIM per randomization depth (image, seed, step, depth) on the subset."""
    r = s["randomization"]
    groups = r["groups"]
    if groups is not None:
        groups = [(g, [g]) if isinstance(g, str) else (str(g[0]), list(g[1])) for g in groups]
    flat = np.flatnonzero(sel)
    i, sd, k = np.unravel_index(flat, sel.shape)
    res = RA.cascading_randomization(model, _gather(x, flat), torch.as_tensor(targets.reshape(-1)[flat]),
                                     attribute_fn, groups, seed=int(r["seed"]), original_maps=maps[i, sd, k])
    out = {}
    for key in ("spearman", "ssim"):
        v = np.full((*sel.shape, len(res["depth"])), np.nan)
        v.reshape(-1, len(res["depth"]))[flat] = res[key]
        out[f"randomization_{key}"] = (("image", "seed", "step", "depth"), v)
    return out, {"depth": res["depth"]}


def _step_coords(ds: xr.Dataset) -> dict:
    return {k: ds.coords[k] for k in ("step", "t", "alpha_bar", "log_snr", "sigma") if k in ds.coords}


def _take(obj, dim: str, values) -> xr.DataArray | xr.Dataset:
    """``obj.sel({dim: values})`` without xarray's slow orthogonal copy when the labels are a run."""
    if dim not in obj.indexes:
        return obj
    pos = obj.indexes[dim].get_indexer(np.asarray(values))
    if (pos < 0).any():
        raise DiffxaiError(f"analysis: {dim} values {list(np.asarray(values)[pos < 0])} missing from the store")
    if len(pos) and np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))):
        return obj.isel({dim: slice(int(pos[0]), int(pos[0]) + len(pos))})
    return obj.isel({dim: pos})


def noised_inputs(noised: xr.Dataset, like: xr.DataArray) -> np.ndarray:
    """The noised inputs (image, seed, step, C, H, W) float32 at the labels of ``like``'s dims."""
    x = noised["x"]
    for d in ("image", "seed", "step"):
        if d in like.coords:
            x = _take(x, d, like[d].values)
    return np.ascontiguousarray(x.transpose("image", "seed", "step", "channel", "y", "x").values, dtype=np.float32)


def analyze_method(noised: xr.Dataset, attributions: xr.Dataset, clean_rgb: np.ndarray, model: nn.Module | None,
                   settings: Mapping | None = None, *, probs: xr.Dataset | None = None, onset: float | None = None,
                   attribute_fn: AttributeFn | None = None, gradient_fn: AttributeFn | None = None,
                   masks: Mapping[str, np.ndarray] | None = None, shared: bool = True,
                   method: str | None = None) -> xr.Dataset:
    """All per-method metrics of one class (see the module docstring); dims (image, seed, step, ...).

    ``clean_rgb`` holds every image of the class in image order; ``masks`` ({name: (N_images, H,
    W)} over the same images) default to :func:`masks.class_masks`; the masks used are stored as
    ``mask_pixels`` and ``probs``' ``p_true`` beside the metrics. ``onset``: the class onset k*
    (places ``steps_relative_to_onset``; None: only the listed steps). ``model=None`` skips every
    costly check; ``attribute_fn=None`` skips randomization; ``gradient_fn`` (the method's own
    gradient-only attribution) is used for the gradient methods only (Occlusion has no x factor).
    ``shared``: also compute the method-independent costly check (the band-filtered inputs' p_true);
    the workflow lets one method's job do it. ``method`` (default: the store's ``method`` attr) is
    matched against ``randomization.methods`` and ``faithfulness.methods`` (null = every method).
    """
    s = merged_settings(settings)
    name = method or attributions.attrs.get("method")
    images = attributions["image"].values
    rgb = np.asarray(clean_rgb)[images]
    if masks is None:
        masks = MK.class_masks(np.asarray(clean_rgb), s["masks"],
                               user_mask_folder(s["masks"].get("folder"), {**noised.attrs, **attributions.attrs}))
    masks = {k: np.asarray(v)[images] for k, v in masks.items()}
    a = attributions["attribution"].transpose("image", "seed", "step", "y", "x")
    maps = torch.as_tensor(np.asarray(a.values, dtype=np.float32))
    targets = _targets(attributions, noised)
    steps = a["step"].values
    sel = subset_mask(tuple(maps.shape[:3]), steps, s["subset"], onset)
    sel_rand = subset_mask(tuple(maps.shape[:3]), steps, {**s["subset"], **(s["randomization"].get("subset") or {})},
                           onset)
    rand_methods = s["randomization"]["methods"]
    x = noised_inputs(noised, a)
    alpha_bar = np.asarray(_take(noised["alpha_bar"], "step", steps).values, dtype=np.float64)

    data, coords = {}, {}
    data.update(enrichment_block(maps, masks, s))
    data.update(spectral_block(maps, s))
    if s["controls"]["input_abs"]:
        data.update(CT.input_abs_block(x, masks, s))
    if s["theory"]["enabled"]:
        data.update(CT.theory_block(clean_x0(noised, images, rgb), alpha_bar, s))
    if model is not None and gradient_fn is not None and s["controls"]["gradient_only"] \
            and name in X_FACTOR_METHODS:
        data.update(CT.gradient_only_block(model, x, targets, sel, masks, s, gradient_fn))
    faith_methods = s["faithfulness"]["methods"]
    if model is not None and s["faithfulness"]["enabled"] and (faith_methods is None or name in faith_methods):
        v, c = faithfulness_block(model, x, maps, targets, sel, s, alpha_bar)
        data.update(v)
        coords.update(c)
    if model is not None and attribute_fn is not None and s["randomization"]["enabled"] and sel_rand.any() \
            and (rand_methods is None or name in rand_methods):
        v, c = randomization_block(model, x, maps, targets, sel_rand, s, attribute_fn)
        data.update(v)
        coords.update(c)
    if model is not None and shared and s["theory"]["enabled"]:
        bands = np.ones_like(sel) if s["theory"]["band_subset"] == "all" else sel
        v, c = CT.band_block(model, x, targets, data["crossover_frequency"][1], bands, s)
        data.update(v)
        coords.update(c)
    data["in_subset"] = (("image", "seed", "step"), sel)
    data["in_randomization_subset"] = (("image", "seed", "step"), sel_rand)
    data["mask_pixels"] = (("mask", "image", "y", "x"), np.stack([masks[m] for m in masks]).astype(np.uint8))
    coords.update(_step_coords(_take(noised, "step", steps)))
    coords.update(image=images, seed=a["seed"].values if "seed" in a.coords else np.arange(maps.shape[1]),
                  mask=list(masks), part=list(s["enrichment"]["parts"]))
    ds = xr.Dataset(data, coords=coords)
    if probs is not None and "p_true" in probs:
        ds["p_true"] = (("image", "seed", "step"), probs_at(probs, ds))
    ds.attrs.update(method=attributions.attrs.get("method", ""), masks=",".join(masks),
                    spectral_cutoff=float(s["spectral"]["cutoff"]), onset=float("nan") if onset is None else float(onset))
    return ds


def probs_at(probs: xr.Dataset, ds: xr.Dataset) -> np.ndarray:
    """p_true of a probs store at the (image, seed, step) labels of ``ds``."""
    p = probs["p_true"]
    for d in ("image", "seed", "step"):
        p = _take(p, d, ds[d].values)
    return np.asarray(p.transpose("image", "seed", "step").values, dtype=np.float64)


def analyze_agreement(attributions: Mapping[str, xr.Dataset], settings: Mapping | None = None) -> xr.Dataset:
    """Agreement between methods (per image, seed, step, pair), between seeds (per method, image,
    step) and the cross-seed method control, on the common grid."""
    s = merged_settings(settings)
    g, tf = tuple(s["agreement"]["grid"]), float(s["agreement"]["top_fraction"])
    pooled = {m: AG.pool_to_grid(torch.as_tensor(ds["attribution"].transpose("image", "seed", "step", "y", "x")
                                                 .values.astype(np.float32)), g)
              for m, ds in attributions.items()}
    methods = sorted(pooled)
    prep = {m: AG.prepare(pooled[m], tf) for m in methods}   # ranks and top-k sets once per map
    data = {}
    seed_ag = [AG.seed_agreement(None, 1, tf, prepared=prep[m]) for m in methods]
    for key in ("spearman", "overlap"):
        data[f"seed_{key}"] = (("xai_method", "image", "step"), np.stack([r[key] for r in seed_ag]))
    first = attributions[methods[0]]
    coords = {"xai_method": methods, **_step_coords(first), "image": first["image"].values}
    if "seed" in first.coords:
        coords["seed"] = first["seed"].values
    if len(methods) > 1:
        ma = AG.method_agreement(pooled, tf, prepared=prep)
        cs = AG.cross_seed_method_agreement(pooled, 1, tf, prepared=prep)
        pairs = list(ma)
        for key in ("spearman", "overlap"):
            data[f"method_{key}"] = (("pair", "image", "seed", "step"), np.stack([ma[p][key] for p in pairs]))
            data[f"method_{key}_cross_seed"] = (("pair", "image", "seed", "step"),
                                                np.stack([cs[p][key] for p in pairs]))
        coords["pair"] = [f"{a}~{b}" for a, b in pairs]
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(grid=list(g), top_fraction=tf, overlap_chance=tf)
    return ds


def combine(method_stores: Mapping[str, xr.Dataset], agreement: xr.Dataset | None = None) -> xr.Dataset:
    """One class's Dataset along ``xai_method`` from the per-method Datasets (:func:`analyze_method`,
    or the stores the workflow wrote of them) and the agreement Dataset; the
    :data:`METHOD_INDEPENDENT` variables are kept once, from the first method that has them finite."""
    per = [ds.drop_vars(["mask_pixels"], errors="ignore").expand_dims(xai_method=[m])
           for m, ds in method_stores.items()]
    ds = xr.concat(per, dim="xai_method", data_vars="all", coords="minimal", compat="override",
                   join="outer", combine_attrs="drop_conflicts")
    for k in METHOD_INDEPENDENT:
        if k in ds:
            v = ds[k]
            have = [m for m in ds["xai_method"].values if np.isfinite(v.sel(xai_method=m).values).any()]
            ds[k] = v.sel(xai_method=have[0] if have else ds["xai_method"].values[0], drop=True)
    if agreement is not None:
        ds = ds.assign({k: agreement[k].variable for k in agreement.data_vars if k.startswith("method_")})
        for k in agreement.data_vars:
            if k.startswith("seed_"):
                ds[k] = agreement[k]
        if "pair" in agreement.coords:
            ds = ds.assign_coords(pair=agreement["pair"].values)
        ds.attrs.update(agreement.attrs)
    return ds


def analyze_class(noised: xr.Dataset, probs: xr.Dataset | None, attributions: Mapping[str, xr.Dataset],
                  clean_rgb: np.ndarray, model: nn.Module | None, settings: Mapping | None = None, *,
                  onset: float | None = None,
                  attribute_fn: AttributeFn | Mapping[str, AttributeFn] | None = None,
                  gradient_fn: AttributeFn | Mapping[str, AttributeFn] | None = None,
                  masks: Mapping[str, np.ndarray] | None = None) -> xr.Dataset:
    """One class, exactly the workflow's composition: :func:`analyze_method` per method (the first
    also computes the shared checks), :func:`analyze_agreement`, :func:`combine`.

    ``attribute_fn`` / ``gradient_fn``: one function for every method or ``{method: fn}``.
    """
    s = merged_settings(settings)
    if masks is None:
        masks = MK.class_masks(np.asarray(clean_rgb), s["masks"], user_mask_folder(s["masks"].get("folder"), noised.attrs))
    pick = lambda fn, m: fn.get(m) if isinstance(fn, Mapping) else fn  # noqa: E731
    methods = sorted(attributions)
    stores = {m: analyze_method(noised, attributions[m], clean_rgb, model, s, probs=probs, onset=onset,
                                attribute_fn=pick(attribute_fn, m), gradient_fn=pick(gradient_fn, m), masks=masks,
                                shared=m == methods[0], method=m) for m in methods}
    ds = combine(stores, analyze_agreement(attributions, s))
    ds.attrs.update(mask_names=",".join(masks), settings=repr(s))
    return ds


def with_control_differences(ds: xr.Dataset) -> xr.Dataset:
    """Add ``{metric}_minus_{control}`` (map minus control, per unit) for every (metric, control) of
    :data:`CONTROLS`, so the phase table gives the paired change of the difference (NaN where the
    control is absent)."""
    out = ds.copy()
    like = ds["spectral_centroid"] if "spectral_centroid" in ds else None
    for k in ("crossover_frequency", "spectral_centroid_theory"):   # (image, step): the same for every seed
        if k in ds and like is not None and "seed" not in ds[k].dims:
            out[k] = ds[k].broadcast_like(like).transpose(*like.dims)
    ds = out
    out = ds.copy()
    for metric, controls in CONTROLS.items():
        for c in controls:
            if metric in ds and f"{metric}_{c}" in ds:
                out[f"{metric}_minus_{c}"] = ds[metric] - ds[f"{metric}_{c}"]
    return out


def summarize_class(ds: xr.Dataset, onset_row: Mapping | None, cls: str, settings: Mapping | None = None,
                    variables=SUMMARY_VARIABLES):
    """Phase table and verdicts of one class from :func:`analyze_class`'s Dataset.

    ``onset_row``: the class's row of ``results/onset.csv`` (its ``onset`` column is the step the
    phases are centred on; ``threshold_cross*`` feed the 40-60 verdict). Returns
    ``(table, verdicts)`` DataFrames with an ``xai_method`` column; the phase table has one row
    per (method, metric[dims]).
    """
    from . import aligned as AL

    s = merged_settings(settings)
    a = s["aligned"]
    onset = float(onset_row["onset"]) if onset_row is not None else np.nan
    tables, verdicts = [], []
    masks = set(np.asarray(ds["mask"].values).tolist()) if "mask" in ds.coords else set()
    for m in ds["xai_method"].values:
        sub = with_control_differences(ds.sel({"xai_method": m}))
        names = [v for v in variables if v in sub] + [v for v in sub.data_vars if "_minus_" in v
                                                      and v != "stripes_minus_face"]
        t = AL.phase_table(sub, onset, names, n_boot=int(a["n_boot"]), level=float(a["level"]),
                           seed=int(a["seed"]), before=a["before"], around=a["around"], after=a["after"],
                           ci=a["ci"])
        t.insert(0, "xai_method", str(m))
        tables.append(t)
        vs, me = s["verdicts"], s["verdicts"]["min_effect"]
        for v in VE.class_verdicts(cls, t, onset_row, masks, window=tuple(vs["proper_window"]),
                                   claim_classes=vs["claim_classes"], min_effect=me) + \
                CV.control_verdicts(t, cls, me, str(m)):
            verdicts.append({"xai_method": str(m), **VE.verdict_frame([v]).iloc[0].to_dict()})
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return table, pd.DataFrame(verdicts)
