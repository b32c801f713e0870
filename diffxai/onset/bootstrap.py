"""Percentile bootstrap CIs of the onset estimates: seeds within an image, and the hierarchical
class bootstrap (draw images with replacement, then seeds with replacement within each drawn
image, refit the mean curve). A resample is a count row over the (image, seed) curves; identical
rows (the same multiset) are fitted once.

Replicate fits: with one image the distinct seed multisets are few (at most C(2S-1, S)) and each is
fitted like a point estimate (``curve_fit`` solver); with more images the distinct draws number
about ``n_boot`` and are fitted in one batch (``lm`` solver, same model, bounds and start).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from .detection import BOOT_KEYS, detect_batch, detect_curve

#: fewer images than this get the class flag ``ci_few_images`` (see bench/onset_coverage)
FEW_IMAGES = 10


def mean_curve(p: np.ndarray) -> np.ndarray:
    """NaN-skipping mean over the curves p (N, K); a step NaN in every curve stays NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN step -> NaN, dropped later
        return np.nanmean(p, axis=0)


def resample_estimates(steps, P: np.ndarray, counts: np.ndarray, kw: Mapping[str, Any],
                       solver: str = "lm") -> dict[str, np.ndarray]:
    """:data:`BOOT_KEYS` estimates of the mean curve of each resample, given as a count row
    (R, N) over the N curves of P (N, K); identical rows are fitted once."""
    uniq, inv = np.unique(counts, axis=0, return_inverse=True)
    idx = np.arange(P.shape[0])
    means = np.stack([mean_curve(P[np.repeat(idx, c)]) for c in uniq])
    est = detect_batch(steps, means, solver=solver, **kw)
    return {key: v[np.ravel(inv)] for key, v in est.items()}


def hierarchical_draws(rng, n_boot: int, I: int, S: int) -> np.ndarray:
    """Count rows (n_boot, I*S) over the (image, seed) curves, flattened image-major: per draw, I
    images with replacement, then S seeds with replacement within each drawn image. With one image
    the draws are exactly ``rng.integers(0, S, (n_boot, S))`` (a range of one draws nothing)."""
    imgs = rng.integers(0, I, size=(int(n_boot), I))
    sds = rng.integers(0, S, size=(int(n_boot), I, S)) if S > 1 else np.zeros((int(n_boot), I, 1), int)
    flat = (imgs[:, :, None] * S + sds).reshape(int(n_boot), I * S)
    counts = np.zeros((int(n_boot), I * S), dtype=np.int32)
    np.add.at(counts, (np.arange(int(n_boot))[:, None], flat), 1)
    return counts


def percentile_cis(vals: Mapping[str, np.ndarray], alpha: float) -> dict[str, tuple[float, float]]:
    """Percentile interval per estimate; NaN when over half the replicates are NaN."""
    cis = {}
    for b, v in vals.items():
        ok = v[np.isfinite(v)]
        cis[b] = ((float(np.percentile(ok, 100 * alpha)), float(np.percentile(ok, 100 * (1 - alpha))))
                  if ok.size and ok.size >= 0.5 * v.size else (np.nan, np.nan))
    return cis


def ci_flag(point: float, v: np.ndarray) -> list[str]:
    """``ci_partial`` / ``ci_unavailable`` when some / most replicates of a finite point are NaN."""
    n_bad = int((~np.isfinite(v)).sum())
    if np.isfinite(point) and n_bad:
        return ["ci_partial" if n_bad <= 0.5 * v.size else "ci_unavailable"]
    return []


def _seed_flags(S: int) -> list[str]:
    if S < 2:
        return ["single_seed"]
    return ["ci_few_seeds"] if S < 4 else []  # 2 seeds: 3 distinct resamples; the CI is only a range


def _point(steps, P, kw) -> tuple[dict, list[str]]:
    full = detect_curve(steps, mean_curve(P), **kw)
    return full, ([] if full["flags"] == "ok" else full["flags"].split(";"))


def _cis(key, full, vals, alpha):
    vals = {b: vals[key] if b == "onset" else vals[b] for b in BOOT_KEYS}
    return percentile_cis(vals, alpha), vals, ci_flag(full[key], vals["onset"])


def class_estimate(steps, p, key, kw, alpha, n_boot, rng):
    """Class estimate from the mean curve of p (I, S, K) over images and seeds, and its
    hierarchical percentile CIs. Returns (estimates, cis, replicate values or None, flags)."""
    I, S, K = p.shape
    P = p.reshape(I * S, K)
    full, flags = _point(steps, P, kw)
    cis = {b: (np.nan, np.nan) for b in BOOT_KEYS}
    vals = None
    flags += _seed_flags(S) if I == 1 else (["ci_few_images"] if I < FEW_IMAGES else [])
    if n_boot > 0 and (I > 1 or S >= 2):
        counts = hierarchical_draws(rng, n_boot, I, S)
        solver = "curve_fit" if I == 1 else "lm"
        cis, vals, extra = _cis(key, full, resample_estimates(steps, P, counts, kw, solver), alpha)
        flags += extra
    return full, cis, vals, flags


def image_estimates(steps, p, key, kw, alpha, n_boot, rng):
    """Per image of p (I, S, K): the estimates of its seed-mean curve and percentile CIs over its
    seeds (the distinct seed multisets of all images fitted in one batch). Returns a list of
    (estimates, cis, flags)."""
    I, S, K = p.shape
    nb = int(n_boot)
    boot = S >= 2 and nb > 0
    if boot:
        draws = rng.integers(0, S, size=(I, nb, S))
        counts = np.zeros((I, nb, I * S), dtype=np.int32)
        for i in range(I):
            np.add.at(counts[i], (np.arange(nb)[:, None], i * S + draws[i]), 1)
        est = resample_estimates(steps, p.reshape(I * S, K), counts.reshape(I * nb, I * S), kw)
    out = []
    for i in range(I):
        full, flags = _point(steps, p[i], kw)
        cis = {b: (np.nan, np.nan) for b in BOOT_KEYS}
        flags += _seed_flags(S)
        if boot:
            cis, _, extra = _cis(key, full, {b: v[i * nb:(i + 1) * nb] for b, v in est.items()},
                                 alpha)
            flags += extra
        out.append((full, cis, flags))
    return out
