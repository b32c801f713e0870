"""Metrics aligned to the onset: curves vs step / log-SNR with CIs, and a phase table.

Definitions:

- **units** are (image, seed) pairs; a metric is an array ``(image, seed, step, ...)``;
- the **CI** of a mean over units (``aligned.ci``, default ``t``; chosen by the coverage simulation
  in ``bench/verdict_coverage/``):

  - ``t``: Student-t interval on unit means. With two or more images (with finite values) the
    units are the images' seed means: estimate = mean of the image means, SE = their sd / sqrt(n),
    n - 1 degrees of freedom; a statement about the CLASS the images sample. With one image the
    units are its seeds (n - 1 df); a statement about THAT image (the noise draw's variability);
  - ``percentile``: hierarchical bootstrap (images with replacement, then seeds with replacement
    within each drawn image; ``n_boot`` draws, seeded), percentile interval. It under-covers at the
    unit counts the study uses (simulated, nominal 95 %: 2 seeds ~50 %, the range of two means;
    4 seeds ~79 %; 2-4 images x 4 seeds with image spread 72-87 %); kept for comparison;

- fewer than two finite units: the CI is NaN (no spread to estimate; verdicts then say undecided);
- **phases** relative to the class onset ``k*`` (a step value): before ``k < k* - before``,
  around ``|k - k*| <= around``, after ``k > k* + after`` (defaults 10, 5, 10);
- a unit's **phase value** is its mean over the phase's steps; the **change** after - before
  (and around - before) is computed per unit (paired), then its mean and CI as above;
- ``n_units`` and ``n_images`` beside every row: the row's scope is the class when ``n_images`` >= 2,
  else the one image (:func:`scope`).
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from scipy import stats

from ..errors import DiffxaiError

PHASES = ("before", "around", "after")
CI_METHODS = ("t", "percentile")


def _nanmean(a, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def bootstrap_means(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Hierarchical bootstrap of the mean of ``values`` (image, seed, ...) -> (n_boot, ...)."""
    v = np.asarray(values, dtype=np.float64)
    n_i, n_s = v.shape[:2]
    rng = np.random.default_rng(seed)
    ii = rng.integers(n_i, size=(n_boot, n_i))
    ss = rng.integers(n_s, size=(n_boot, n_i, n_s))
    draws = v[ii[:, :, None], ss]                     # (n_boot, n_i, n_s, ...)
    return _nanmean(draws.reshape(n_boot, n_i * n_s, *v.shape[2:]), axis=1)


def t_interval(values: np.ndarray, level: float = 0.95):
    """(mean, lo, hi, n) of ``values`` (image, seed, ...) with the Student-t interval on unit means:
    image seed-means when >= 2 images have finite values, else the one image's seeds (module docstring).
    ``n`` is the number of units the interval uses; NaN CI where n < 2."""
    v = np.asarray(values, dtype=np.float64)
    per_image = _nanmean(v, axis=1)                               # (image, ...)
    n_img = np.isfinite(per_image).sum(axis=0)
    flat = v.reshape(-1, *v.shape[2:])
    n_flat = np.isfinite(flat).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.where(n_img >= 2, _nanmean(per_image, 0), _nanmean(flat, 0))
        sd = np.where(n_img >= 2, np.nanstd(per_image, axis=0, ddof=1), np.nanstd(flat, axis=0, ddof=1))
    n = np.where(n_img >= 2, n_img, n_flat)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    few = n < 2
    return m, np.where(few, np.nan, m - half), np.where(few, np.nan, m + half), n


def mean_ci(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0, ci: str = "t"):
    """(mean, lo, hi) over the (image, seed) units of ``values`` (image, seed, ...); ``ci`` is
    ``t`` or ``percentile`` (module docstring; ``n_boot`` and ``seed`` serve ``percentile`` only).

    Where fewer than two units are finite the CI is NaN: one seed of one image has no spread to
    resample, and a zero-width interval would read as certainty (verdicts then say undecided)."""
    if ci == "t":
        return t_interval(values, level)[:3]
    if ci != "percentile":
        raise DiffxaiError(f"analysis.aligned.ci {ci!r} is not one of {CI_METHODS}")
    v = np.asarray(values, dtype=np.float64)
    flat = v.reshape(-1, *v.shape[2:])
    m = _nanmean(flat, axis=0)
    b = bootstrap_means(v, n_boot, seed)
    q = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(b, [q, 1 - q], axis=0)
    few = np.isfinite(flat).sum(axis=0) < 2
    return m, np.where(few, np.nan, lo), np.where(few, np.nan, hi)


def scope(n_images: int, n_units: int) -> str:
    """What a CI over these units speaks about: the class (>= 2 images) or the one image (its seeds)."""
    if n_images >= 2:
        return f"class ({n_images} images)"
    if n_images == 1:
        return f"image (1 image, {n_units} seeds)"
    return "none (no units)"


def metric_vs_step(da: xr.DataArray, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                   ci: str = "t") -> xr.Dataset:
    """Mean and CI over (image, seed) of a metric (image, seed, step, ...) -> Dataset over (step, ...).

    The step coordinates (``t``, ``alpha_bar``, ``log_snr``) travel along, so the same Dataset plots
    against step or log-SNR.
    """
    da = da.transpose("image", "seed", "step", ...)
    m, lo, hi = mean_ci(da.values, n_boot, level, seed, ci)
    dims = da.dims[2:]
    coords = {k: c for k, c in da.coords.items() if set(c.dims) <= set(dims)}
    return xr.Dataset({"mean": (dims, m), "lo": (dims, lo), "hi": (dims, hi)}, coords=coords,
                      attrs={"level": level, "ci": ci, "n_boot": n_boot, "n_images": da.sizes["image"],
                             "n_seeds": da.sizes["seed"]})


def phase_of_steps(steps: Iterable[float], onset: float, before: float = 10, around: float = 5,
                   after: float = 10) -> np.ndarray:
    """Label per step: 'before' (k < k*-before), 'around' (|k-k*| <= around), 'after' (k > k*+after), ''."""
    k = np.asarray(list(steps), dtype=np.float64)
    lab = np.full(k.shape, "", dtype=object)
    if not np.isfinite(onset):
        return lab
    lab[k < onset - before] = "before"
    lab[np.abs(k - onset) <= around] = "around"
    lab[k > onset + after] = "after"
    return lab


def phase_values(values: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-unit phase means of ``values`` (image, seed, step) -> {phase: (image, seed)}."""
    out = {}
    for ph in PHASES:
        sel = labels == ph
        out[ph] = _nanmean(values[:, :, sel], axis=2) if sel.any() else np.full(values.shape[:2], np.nan)
    return out


def _flat_variables(ds: xr.Dataset, names: Iterable[str] | None) -> dict[str, xr.DataArray]:
    """Each variable with dims (image, seed, step[, extra...]) -> one entry per extra-dim value."""
    out = {}
    for name in names or list(ds.data_vars):
        da = ds[name]
        if not {"image", "seed", "step"} <= set(da.dims):
            continue
        extra = [d for d in da.dims if d not in ("image", "seed", "step")]
        if not extra:
            out[name] = da
            continue
        st = da.stack(_e=extra)
        for j in range(st.sizes["_e"]):
            key = ",".join(f"{d}={v}" for d, v in zip(extra, np.atleast_1d(st["_e"].values[j])))
            out[f"{name}[{key}]"] = st.isel(_e=j, drop=True)
    return out


def phase_table(ds: xr.Dataset, onset: float, variables: Iterable[str] | None = None, *,
                n_boot: int = 2000, level: float = 0.95, seed: int = 0, before: float = 10,
                around: float = 5, after: float = 10, ci: str = "t") -> pd.DataFrame:
    """One row per metric (extra dims flattened as ``name[dim=value,...]``): phase means with CIs
    and the paired changes after - before and around - before with CIs; see the module docstring."""
    labels = phase_of_steps(ds["step"].values, onset, before, around, after)
    rows = []
    for name, da in _flat_variables(ds, variables).items():
        v = da.transpose("image", "seed", "step").values.astype(np.float64)
        ph = phase_values(v, labels)
        has = np.isfinite(v).any(-1)                                          # (image, seed)
        row = {"metric": name, "onset": onset, "n_units": int(has.sum()), "n_images": int(has.any(1).sum()),
               "ci": ci}
        for p in PHASES:
            row[f"n_{p}"] = int((labels == p).sum())
            row[p], row[f"{p}_lo"], row[f"{p}_hi"] = (float(x) for x in mean_ci(ph[p], n_boot, level, seed, ci))
        for tag, a in (("after_minus_before", "after"), ("around_minus_before", "around")):
            row[tag], row[f"{tag}_lo"], row[f"{tag}_hi"] = (
                float(x) for x in mean_ci(ph[a] - ph["before"], n_boot, level, seed, ci))
        rows.append(row)
    return pd.DataFrame(rows)
