"""The per-class analysis stage on the xarray stores of CONTRACT.md.

Inputs (one class): the noised store (``x`` (image, seed, step, channel, y, x) and the step coords
``step``, ``t``, ``alpha_bar``, ``log_snr``), the probs store (``p_true`` (image, seed, step)),
the attribution store of each method (``attribution`` (image, seed, step, y, x), optional
``target`` (image, seed, step)), the clean 8-bit images (N_images, H, W, 3) in image order, and
the classifier (taking [-1, 1] inputs).

Output: one Dataset with dims (xai_method, image, seed, step[, mask, part, order, fraction,
depth, pair]) over the attributed images. The dim is not called ``method`` because
``Dataset.sel(method=...)`` is xarray's inexact-match keyword and would silently return
everything. Cheap metrics (enrichment, spectra, agreement) cover every (image, seed, step); the
costly ones (deletion/insertion, randomization, the spectral controls that need new
attributions) cover ``settings["subset"]`` (randomization: its own ``randomization.subset`` on
top) and are NaN elsewhere, with booleans ``in_subset`` / ``in_randomization_subset`` saying where.

An *attribute function* is ``fn(model, x, targets) -> maps`` ((N, C, H, W), (N,) -> (N, H, W));
the lead passes the engine (:func:`engine_attribute_fn`), tests pass Captum.
"""
from __future__ import annotations

import copy
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from ..errors import DiffxaiError
from . import agreement as AG
from . import faithfulness as FA
from . import masks as MK
from . import randomization as RA
from . import spatial as SPA
from . import spectral as SPE
from . import verdicts as VE

AttributeFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULTS: dict = {
    "masks": {"folder": None, **copy.deepcopy(MK.DEFAULTS)},
    "enrichment": {"parts": ["abs", "pos"], "n_null": 16, "min_inside": 0.5, "max_self_overlap": 0.5, "seed": 0},
    "spectral": {"n_bins": None, "cutoff": SPE.DEFAULT_CUTOFF},
    "agreement": {"grid": [28, 28], "top_fraction": 0.1},
    "subset": {"images": 1, "seeds": 1, "steps_every": 10, "steps": None},
    "controls": {"noise_only": True, "gradient_only": True,
                 "noise_only_methods": ["integrated_gradients", "gradient_shap"]},
    "faithfulness": {"enabled": True, "fractions": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                     "baseline": 0.0, "n_random": 3, "seed": 0, "batch_size": 64, "output": "softmax"},
    "randomization": {"enabled": True, "groups": None, "seed": 42, "threshold": 0.5,
                      "methods": ["integrated_gradients", "gradient_shap"], "subset": {"steps_every": 50}},
    "aligned": {"ci": "t", "n_boot": 2000, "level": 0.95, "seed": 0, "before": 10, "around": 5, "after": 10},
    "verdicts": copy.deepcopy(VE.DEFAULTS),
}


def merged_settings(settings: Mapping | None) -> dict:
    """DEFAULTS deep-updated with ``settings`` (the ``analysis:`` config block)."""
    def merge(a, b):
        out = copy.deepcopy(a)
        for k, v in (b or {}).items():
            out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, Mapping) else v
        return out
    return merge(DEFAULTS, settings)


def engine_attribute_fn(spec, options=None) -> AttributeFn:
    """Adapter: the engine of ``diffxai.attribution`` (branch eng) as an attribute function."""
    def fn(model, x, targets):
        from ..attribution import attribute  # noqa: PLC0415 - engine lives on another branch
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


def subset_mask(shape: tuple[int, int, int], steps: np.ndarray, subset: Mapping) -> np.ndarray:
    """Boolean (image, seed, step): first ``images`` images x first ``seeds`` seeds x the steps
    listed in ``subset.steps`` (step values) or every ``steps_every``-th step position (plus the last)."""
    n_i, n_s, n_k = shape
    m = np.zeros(shape, bool)
    if subset.get("steps") is not None:
        ks = np.isin(steps, np.asarray(subset["steps"]))
    else:
        every = int(subset.get("steps_every") or 0)
        ks = np.zeros(n_k, bool)
        if every > 0:
            ks[::every] = True
            ks[-1] = True
    m[:int(subset.get("images", 1) or 0), :int(subset.get("seeds", 1) or 0)] = ks
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


def _subset_call(fn, sel: np.ndarray, shape, fill_shape=()) -> np.ndarray:
    """Run ``fn(flat_indices)`` -> (n, *fill_shape) on the subset; NaN elsewhere."""
    out = np.full((*shape, *fill_shape), np.nan)
    flat = np.flatnonzero(sel)
    if flat.size:
        out.reshape(-1, *fill_shape)[flat] = fn(flat)
    return out


def _gather(x: np.ndarray, flat: np.ndarray) -> torch.Tensor:
    """Inputs of x (image, seed, step, C, H, W) at flat (image, seed, step) indices -> (n, C, H, W)."""
    return torch.as_tensor(x.reshape(-1, *x.shape[3:])[flat])


def control_block(model, x: np.ndarray, x0: torch.Tensor, alpha_bar: np.ndarray, targets: np.ndarray,
                  sel: np.ndarray, s: Mapping, attribute_fn: AttributeFn | None,
                  gradient_fn: AttributeFn | None) -> dict:
    """Spectral metrics of the controls on the subset: the method on the step's noise alone
    (``x_t - sqrt(ab) x0 = sqrt(1 - ab) eps``) and gradient-only IG on ``x_t``."""
    out = {}
    shape = sel.shape
    runs = []
    if s["controls"]["noise_only"] and attribute_fn is not None:
        def noise_inputs(flat):
            ii, _, kk = np.unravel_index(flat, shape)
            xt = _gather(x, flat)
            ab = torch.as_tensor(alpha_bar[kk], dtype=torch.float32).view(-1, 1, 1, 1)
            return xt - ab.sqrt() * x0[ii]
        runs.append(("_noise_only", attribute_fn, noise_inputs))
    if s["controls"]["gradient_only"] and gradient_fn is not None:
        runs.append(("_gradient_only", gradient_fn, lambda flat: _gather(x, flat)))
    for suffix, fn, make in runs:
        def metrics(flat, fn=fn, make=make):
            maps = fn(model, make(flat), torch.as_tensor(targets.reshape(-1)[flat]))
            m = SPE.spectral_metrics(maps, s["spectral"]["n_bins"], s["spectral"]["cutoff"])
            return np.stack([m["centroid"], m["low_share"]], -1)
        v = _subset_call(metrics, sel, shape, (2,))
        out[f"spectral_centroid{suffix}"] = (("image", "seed", "step"), v[..., 0])
        out[f"low_freq_share{suffix}"] = (("image", "seed", "step"), v[..., 1])
    return out


def faithfulness_block(model, x: np.ndarray, maps: torch.Tensor, targets: np.ndarray, sel: np.ndarray,
                       s: Mapping) -> tuple[dict, dict]:
    """Deletion/insertion AUCs (image, seed, step, order) and curves on the subset; (vars, coords)."""
    f = s["faithfulness"]
    fr = list(f["fractions"])
    orders = FA.order_names(int(f["n_random"]))
    shape = sel.shape
    flat = np.flatnonzero(sel)
    res = None
    if flat.size:
        i, sd, k = np.unravel_index(flat, shape)
        res = FA.deletion_insertion(model, _gather(x, flat), torch.as_tensor(targets.reshape(-1)[flat]),
                                    maps[i, sd, k], fractions=fr, baseline=float(f["baseline"]),
                                    n_random=int(f["n_random"]), seed=int(f["seed"]),
                                    batch_size=int(f["batch_size"]), output=f["output"])
    out = {}
    for mode in FA.MODES:
        for kind in ("auc", "auc_raw"):
            auc = np.full((*shape, len(orders)), np.nan)
            if res is not None:
                auc.reshape(-1, len(orders))[flat] = res[f"{mode}_{kind}"]
            out[f"{mode}_{kind}"] = (("image", "seed", "step", "order"), auc)
        cur = np.full((*shape, len(orders), len(fr)), np.nan)
        if res is not None:
            cur.reshape(-1, len(orders), len(fr))[flat] = res[f"{mode}_curve"]
        out[f"{mode}_curve"] = (("image", "seed", "step", "order", "fraction"), cur)
    pref = np.full(shape, np.nan)
    if res is not None:
        pref.reshape(-1)[flat] = res["p_ref"]
    out["p_before_deletion"] = (("image", "seed", "step"), pref)
    return out, {"order": orders, "fraction": np.asarray(fr, float)}


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


def input_spectra(noised: xr.Dataset, like: xr.DataArray, settings: Mapping | None = None) -> dict:
    """Spectral metrics of the channel-summed noised input itself (``_input``): what IG's x factor
    can imprint; shared by all methods."""
    s = merged_settings(settings)
    return spectral_block(torch.as_tensor(noised_inputs(noised, like).sum(3)), s, "_input")


def analyze_method(noised: xr.Dataset, attributions: xr.Dataset, clean_rgb: np.ndarray, model: nn.Module | None,
                   settings: Mapping | None = None, *, attribute_fn: AttributeFn | None = None,
                   gradient_fn: AttributeFn | None = None, masks: Mapping[str, np.ndarray] | None = None,
                   include_input: bool = True, method: str | None = None) -> xr.Dataset:
    """All per-method metrics of one class (see the module docstring); dims (image, seed, step, ...).

    ``clean_rgb`` holds every image of the class in image order; ``masks`` ({name: (N_images, H,
    W)} over the same images) default to :func:`masks.class_masks`. ``model=None`` skips
    faithfulness; ``attribute_fn=None`` skips randomization and the noise-only control;
    ``gradient_fn=None`` skips the gradient-only control; ``include_input=False`` leaves out the
    input's own spectra (:func:`analyze_class` adds them once for all methods). ``method`` (default:
    the store's ``method`` attr) is matched against ``randomization.methods`` and
    ``controls.noise_only_methods`` (null = every method).
    """
    s = merged_settings(settings)
    name = method or attributions.attrs.get("method")
    allowed = lambda key: key is None or name in key  # noqa: E731
    images = attributions["image"].values
    rgb = np.asarray(clean_rgb)[images]
    if masks is None:
        masks = MK.class_masks(np.asarray(clean_rgb), s["masks"],
                               user_mask_folder(s["masks"].get("folder"), {**noised.attrs, **attributions.attrs}))
    masks = {k: np.asarray(v)[images] for k, v in masks.items()}
    a = attributions["attribution"].transpose("image", "seed", "step", "y", "x")
    maps = torch.as_tensor(np.asarray(a.values, dtype=np.float32))
    targets = _targets(attributions, noised)
    sel = subset_mask(tuple(maps.shape[:3]), a["step"].values, s["subset"])
    sel_rand = subset_mask(tuple(maps.shape[:3]), a["step"].values,
                           {**s["subset"], **(s["randomization"].get("subset") or {})})
    noise_fn = attribute_fn if allowed(s["controls"]["noise_only_methods"]) else None
    wants = {"faith": model is not None and s["faithfulness"]["enabled"],
             "rand": model is not None and attribute_fn is not None and s["randomization"]["enabled"]
             and allowed(s["randomization"]["methods"]),
             "ctrl": (noise_fn is not None and s["controls"]["noise_only"])
             or (gradient_fn is not None and s["controls"]["gradient_only"])}
    x = noised_inputs(noised, a) if include_input or ((sel | sel_rand).any() and any(wants.values())) else None

    data, coords = {}, {}
    data.update(enrichment_block(maps, masks, s))
    data.update(spectral_block(maps, s))
    if include_input:
        data.update(spectral_block(torch.as_tensor(x.sum(3)), s, "_input"))
    if wants["ctrl"]:
        alpha_bar = np.asarray(_take(noised["alpha_bar"], "step", a["step"].values).values, dtype=np.float64)
        data.update(control_block(model, x, clean_x0(noised, images, rgb), alpha_bar, targets, sel, s,
                                  noise_fn, gradient_fn))
    if wants["faith"]:
        v, c = faithfulness_block(model, x, maps, targets, sel, s)
        data.update(v)
        coords.update(c)
    if wants["rand"] and sel_rand.any():
        v, c = randomization_block(model, x, maps, targets, sel_rand, s, attribute_fn)
        data.update(v)
        coords.update(c)
    data["in_subset"] = (("image", "seed", "step"), sel)
    data["in_randomization_subset"] = (("image", "seed", "step"), sel_rand)
    coords.update(_step_coords(_take(noised, "step", a["step"].values)))
    coords.update(image=images, seed=a["seed"].values if "seed" in a.coords else np.arange(maps.shape[1]),
                  mask=list(masks), part=list(s["enrichment"]["parts"]))
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(method=attributions.attrs.get("method", ""), masks=",".join(masks),
                    spectral_cutoff=float(s["spectral"]["cutoff"]))
    return ds


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


def analyze_class(noised: xr.Dataset, probs: xr.Dataset | None, attributions: Mapping[str, xr.Dataset],
                  clean_rgb: np.ndarray, model: nn.Module | None, settings: Mapping | None = None, *,
                  attribute_fn: AttributeFn | Mapping[str, AttributeFn] | None = None,
                  gradient_fn: AttributeFn | None = None,
                  masks: Mapping[str, np.ndarray] | None = None) -> xr.Dataset:
    """One class: every method's metrics stacked along ``xai_method``, agreement, and ``p_true``.

    ``attribute_fn``: one function for every method or ``{method: fn}`` (a method without one skips
    randomization and its noise-only control); ``gradient_fn`` (gradient-only IG) does not depend
    on the method, so its control is computed once, as are the masks and the input's own spectra.
    """
    s = merged_settings(settings)
    if masks is None:
        folder = user_mask_folder(s["masks"].get("folder"), noised.attrs)
        masks = MK.class_masks(np.asarray(clean_rgb), s["masks"], folder)
    per = []
    for m in sorted(attributions):
        fn = attribute_fn.get(m) if isinstance(attribute_fn, Mapping) else attribute_fn
        per.append(analyze_method(noised, attributions[m], clean_rgb, model, s, attribute_fn=fn,
                                  gradient_fn=None, masks=masks, include_input=False, method=m)
                   .expand_dims(xai_method=[m]))
    ds = xr.concat(per, dim="xai_method", data_vars="all", coords="minimal", compat="override",
                   join="outer", combine_attrs="drop_conflicts")
    first_ds = attributions[sorted(attributions)[0]]
    first = first_ds["attribution"].transpose("image", "seed", "step", "y", "x")
    for k, v in input_spectra(noised, first, s).items():
        ds[k] = v
    if gradient_fn is not None and s["controls"]["gradient_only"]:   # method-independent: once
        sel = subset_mask(tuple(first.shape[:3]), first["step"].values, s["subset"])
        if sel.any():
            for k, v in control_block(model, noised_inputs(noised, first), None, None, _targets(first_ds, noised),
                                      sel, s, None, gradient_fn).items():
                ds[k] = v
    ag = analyze_agreement(attributions, s)
    ds = ds.assign({k: ag[k].variable for k in ag.data_vars})
    if "pair" in ag.coords:
        ds = ds.assign_coords(pair=ag["pair"].values)
    ds.attrs.update(ag.attrs)
    if probs is not None and "p_true" in probs:
        p = probs["p_true"]
        for d in ("image", "seed", "step"):
            p = _take(p, d, ds[d].values)
        ds["p_true"] = (("image", "seed", "step"), p.transpose("image", "seed", "step").values)
    ds.attrs.update(mask_names=",".join(masks), settings=repr(s))
    return ds


SUMMARY_VARIABLES = (
    "enrichment", "enrichment_null", "enrichment_vs_null", "stripes_minus_face",
    "spectral_centroid", "low_freq_share", "spectral_centroid_input", "low_freq_share_input",
    "spectral_centroid_noise_only", "low_freq_share_noise_only",
    "spectral_centroid_gradient_only", "low_freq_share_gradient_only",
    "deletion_auc", "insertion_auc", "deletion_auc_raw", "insertion_auc_raw",
    "randomization_spearman", "randomization_ssim",
    "method_spearman", "method_overlap", "p_true",
)


def with_control_differences(ds: xr.Dataset) -> xr.Dataset:
    """Add ``{metric}_minus_{control}`` (map minus control, per unit) for the spectral metrics, so
    the phase table gives the paired change of the difference (NaN where the control is absent)."""
    out = ds.copy()
    for metric in ("spectral_centroid", "low_freq_share"):
        for c in ("input", "noise_only", "gradient_only"):
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
                VE.spectral_trend_survives(t, cls, "spectral_centroid", min_effect=me.get("spectral_centroid")) + \
                VE.spectral_trend_survives(t, cls, "low_freq_share", min_effect=me.get("low_freq_share")):
            verdicts.append({"xai_method": str(m), **VE.verdict_frame([v]).iloc[0].to_dict()})
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return table, pd.DataFrame(verdicts)
