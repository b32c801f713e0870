"""Onset detection along a diffusion trajectory: logistic fit, steepest rise, threshold crossing.

Axis convention (docs/DESIGN.md): ``step`` is the study's index k, 0 = noisiest ... T-1 = cleanest;
the DDPM timestep is t = T - 1 - k. Steps may be a non-uniform subset of 0..T-1 (a preview).

Three per-curve estimates of "where the classifier starts to see the class":

* logistic: fit p(k) = L + (U - L) / (1 + exp(-s (k - k0))) with 0 <= L <= U <= 1, s > 0.
  ``midpoint`` = k0; ``onset`` = k0 - 1.317/s, the point of fastest acceleration (third
  derivative zero), where the curve has covered 21 % of its own rise from L to U. Being relative to
  the curve's own floor and plateau, it exists for curves that never reach p = 0.5.
* steepest: argmax of a Savitzky-Golay first derivative (sub-step by a parabola through the peak).
* threshold: first k with p >= threshold, linearly interpolated between the two bracketing steps.

Curves that cannot give an answer get NaN and a flag, never an exception:
``never_rises`` (fitted rise U-L < min_rise or max p < min_rise), ``high_from_start`` (p at the first
step >= threshold, or fitted midpoint before the first step), ``fit_failed``, ``never_crosses``
(threshold never reached), ``too_few_points``, ``nan_dropped``. Informational flags keep the value:
``onset_before_first_step`` (extrapolated 21 % point), ``midpoint_after_last_step`` (the plateau is
extrapolated), ``poor_fit`` (R^2 < 0.5). Per class and per image also ``single_seed`` (CI NaN),
``ci_few_seeds`` (2-3 seeds: few distinct resamples), ``ci_partial``/``ci_unavailable`` (some/most
resamples NaN); per class with 2-9 images ``ci_few_images`` (simulated coverage of the nominal
95 % class CI: 73-80 % with 3 images, 89-90 % with 10, 93-96 % with 50; one image: the CI is that
image's seed CI, not the class's); per image ``clean_wrong`` (the
classifier's top-1 is not the class at the cleanest step for any seed). Flags are joined with ";";
"ok" when there are none.

Curves are (image, seed, step); a (seed, step) array is one image. Three tables
(:func:`onset_tables`): per (image, seed) curve; per image, from the seed-mean curve of that image
with a percentile bootstrap over its seeds; per class, from the mean curve over images and seeds
with a hierarchical percentile bootstrap (draw images with replacement, then seeds with replacement
within each drawn image, refit the mean curve). Fits of identical resamples are memoised. With one
image the class bootstrap is the seed bootstrap of the one-image code, draw for draw and fit for
fit (one ``detect_curve`` per distinct multiset of seeds), so its numbers are unchanged; with more
images the resampled mean curves are fitted in one batch (:func:`detect_batch`, same model, bounds,
grid start and NaN rules; a vectorised Levenberg-Marquardt replaces the per-curve ``curve_fit``).
The method and its coverage on synthetic classes: :mod:`diffxai.onset_coverage`,
bench/onset_coverage/README.md. The hierarchical percentile interval covered at least as often as
resampling images only and as BCa (own, or ``scipy.stats.bootstrap`` over images) in every cell,
so it is the only method; none of them fixes the under-coverage with few images.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.signal import savgol_filter

#: k0 - ONSET_OFFSET/s is where the logistic's third derivative vanishes (rise fraction (3-sqrt3)/6).
ONSET_OFFSET = math.log(2.0 + math.sqrt(3.0))  # 1.3169578969...

METHODS = ("logistic", "steepest", "threshold")

_ESTIMATE_COLUMNS = [
    "onset", "onset_lo", "onset_hi",
    "midpoint", "midpoint_lo", "midpoint_hi", "slope", "floor", "plateau",
    "steepest", "steepest_lo", "steepest_hi",
    "threshold_cross", "threshold_cross_lo", "threshold_cross_hi",
    "t_onset", "log_snr_onset",
]
PER_CLASS_COLUMNS = [
    "cls", "class_index", "synset", "name", "n_images", "n_seeds", *_ESTIMATE_COLUMNS,
    "p_clean", "n_clean_wrong", "flags",
]
#: per image; ``image_file`` only when the stores name their images (see :func:`per_image_columns`)
PER_IMAGE_COLUMNS = [
    "cls", "image", "image_file", "n_seeds", *_ESTIMATE_COLUMNS,
    "p_clean", "clean_top1", "clean_wrong", "flags",
]
PER_SEED_COLUMNS = [
    "cls", "image", "seed", "onset", "midpoint", "slope", "floor", "plateau", "steepest",
    "threshold_cross", "t_onset", "log_snr_onset", "flags",
]
PER_SEED_COLUMNS_FILES = PER_SEED_COLUMNS[:2] + ["image_file"] + PER_SEED_COLUMNS[2:]

#: fewer images than this get the class flag ``ci_few_images`` (see bench/onset_coverage)
FEW_IMAGES = 10

_MIN_POINTS = 4  # a 4-parameter logistic needs at least this many points


def logistic(k, L, U, k0, s):
    """Four-parameter logistic L + (U - L) / (1 + exp(-s (k - k0))); overflow-safe."""
    z = -s * (np.asarray(k, dtype=float) - k0)
    return L + (U - L) * 0.5 * (1.0 - np.tanh(0.5 * z))  # == 1/(1+exp(z)) without overflow


def _logistic_ab(k, a, b, k0, s):
    # L = a, U = a + (1 - a) b with a, b in [0, 1] enforces 0 <= L <= U <= 1 with box bounds only.
    return logistic(k, a, a + (1.0 - a) * b, k0, s)


# --------------------------------------------------------------------------------------------------
# single-curve pieces
# --------------------------------------------------------------------------------------------------
_GRID_CACHE: dict[tuple, tuple] = {}  # the p-independent part of _grid_start, per step grid


def _grid_basis(k: np.ndarray, k0_lo, k0_hi, s_lo, s_hi):
    key = (k.tobytes(), float(k0_lo), float(k0_hi), float(s_lo), float(s_hi))
    hit = _GRID_CACHE.get(key)
    if hit is None:
        k0s = np.linspace(k0_lo, k0_hi, 49)
        ss = np.geomspace(s_lo, s_hi, 14)
        K0, S = np.meshgrid(k0s, ss, indexing="ij")
        K0, S = K0.ravel()[:, None], S.ravel()[:, None]
        z = 0.5 * (1.0 - np.tanh(-0.5 * S * (k[None, :] - K0)))  # (G, n)
        # p ~ L (1 - z) + U z: 2x2 normal equations per grid point
        a11 = np.sum((1 - z) ** 2, 1)
        a12 = np.sum((1 - z) * z, 1)
        a22 = np.sum(z**2, 1)
        det = a11 * a22 - a12**2
        hit = (K0, S, z, 1 - z, a11, a12, a22, det)
        if len(_GRID_CACHE) > 64:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = hit
    return hit


def _grid_start(k: np.ndarray, p: np.ndarray, k0_lo, k0_hi, s_lo, s_hi, top=None):
    """Coarse global search over (k0, s); L and U by linear least squares. Returns the ``top``
    (default all) starts, best first."""
    K0, S, z, omz, a11, a12, a22, det = _grid_basis(k, k0_lo, k0_hi, s_lo, s_hi)
    b1 = omz @ p
    b2 = z @ p
    with np.errstate(divide="ignore", invalid="ignore"):
        L = np.where(det > 1e-12, (a22 * b1 - a12 * b2) / det, p.mean())
        U = np.where(det > 1e-12, (a11 * b2 - a12 * b1) / det, p.mean())
    L, U = np.clip(L, 0, 1), np.clip(U, 0, 1)
    bad = U < L
    L[bad] = U[bad] = p.mean()
    sse = np.sum((L[:, None] + (U - L)[:, None] * z - p[None, :]) ** 2, 1)
    order = np.argsort(sse)[:top]
    return [(L[i], U[i], K0[i, 0], S[i, 0], sse[i]) for i in order]


def fit_logistic(k, p) -> dict[str, Any]:
    """Least-squares logistic fit with box bounds; multi-start, never raises.

    Returns dict(floor, plateau, midpoint, slope, r2, ok). ``ok`` is False when every start failed.
    """
    k = np.asarray(k, dtype=float)
    p = np.asarray(p, dtype=float)
    out = dict(floor=np.nan, plateau=np.nan, midpoint=np.nan, slope=np.nan, r2=np.nan, ok=False)
    if k.size < _MIN_POINTS:
        return out
    span = float(k.max() - k.min())
    dk = float(np.min(np.diff(np.unique(k)))) if span > 0 else 1.0
    if span <= 0:
        return out
    k0_lo, k0_hi = k.min() - 0.5 * span, k.max() + 0.5 * span
    s_lo, s_hi = 0.5 / span, 50.0 / dk
    starts = _grid_start(k, p, k.min() - 0.25 * span, k.max() + 0.25 * span, 2.0 / span, 4.0 / dk,
                         top=3)
    lb = np.array([0.0, 0.0, k0_lo, s_lo])
    ub = np.array([1.0, 1.0, k0_hi, s_hi])
    best = None
    for L0, U0, k00, s0, _ in starts[:3]:
        a0 = L0
        b0 = (U0 - L0) / (1.0 - L0) if L0 < 1 else 0.5
        x0 = np.clip([a0, b0, k00, s0], lb + 1e-9 * (ub - lb), ub - 1e-9 * (ub - lb))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, _ = curve_fit(_logistic_ab, k, p, p0=x0, bounds=(lb, ub), x_scale="jac",
                                    max_nfev=2000)
        except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(popt)):
            continue
        sse = float(np.sum((_logistic_ab(k, *popt) - p) ** 2))
        if best is None or sse < best[1]:
            best = (popt, sse)
        if best is not None and best[1] <= starts[0][4] * (1 + 1e-9):
            break  # improved on (or matched) the global grid optimum: no need for more starts
    if best is None:
        return out
    (a, b, k0, s), sse = best
    sst = float(np.sum((p - p.mean()) ** 2))
    out.update(floor=float(a), plateau=float(a + (1 - a) * b), midpoint=float(k0), slope=float(s),
               r2=1.0 - sse / sst if sst > 0 else np.nan, ok=True)
    return out


def _uniform(k: np.ndarray) -> bool:
    d = np.diff(k)
    return bool(np.allclose(d, d[0], rtol=1e-6, atol=1e-9))


def steepest_rise(k, p, *, window=7, polyorder=2) -> float:
    """k of the largest Savitzky-Golay first derivative dp/dk (fractional, sub-step by parabola).

    Non-uniform steps are linearly interpolated onto a uniform grid with as many points as the input.
    The window (in points) shrinks to the largest odd length that fits; with < 3 points, NaN.
    """
    k = np.asarray(k, dtype=float)
    p = np.asarray(p, dtype=float)
    n = k.size
    if n < 3:
        return np.nan
    if _uniform(k):
        grid, y = k, p
    else:
        grid = np.linspace(k[0], k[-1], n)
        y = np.interp(grid, k, p)
    dk = float(grid[1] - grid[0])
    w = min(int(window), n if n % 2 else n - 1)
    if w % 2 == 0:
        w -= 1
    if w >= 3:
        po = min(int(polyorder), w - 1)
        # mode="nearest": "interp" extrapolates a polynomial at the ends and puts spurious maxima there
        d = savgol_filter(y, w, po, deriv=1, delta=dk, mode="nearest")
    else:
        d = np.gradient(y, grid)
    i = int(np.nanargmax(d))
    frac = 0.0
    if 0 < i < n - 1:
        y0, y1, y2 = d[i - 1], d[i], d[i + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            frac = float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    return float(grid[i] + frac * dk)


def threshold_crossing(k, p, threshold=0.5) -> float:
    """First k where p >= threshold, linearly interpolated; NaN if never or already at k[0]."""
    k = np.asarray(k, dtype=float)
    p = np.asarray(p, dtype=float)
    above = np.flatnonzero(p >= threshold)
    if above.size == 0 or above[0] == 0:
        return np.nan
    i = int(above[0])
    p0, p1 = p[i - 1], p[i]
    return float(k[i - 1] + (threshold - p0) / (p1 - p0) * (k[i] - k[i - 1]))


def detect_curve(steps, p, *, threshold=0.5, min_rise=0.1, savgol_window=7,
                 savgol_polyorder=2) -> dict[str, Any]:
    """All onset estimates for one curve p(step). Never raises on bad data: see the module flags.

    Returns dict with keys: onset (logistic 21 % point), midpoint, slope, floor, plateau, r2,
    steepest, threshold_cross, p_first, p_clean (p at the cleanest step), max_p, n_points, flags.
    """
    steps = np.asarray(steps, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if steps.shape != p.shape:
        raise ValueError(f"steps {steps.shape} and p {p.shape} differ in shape")
    flags: list[str] = []
    res: dict[str, Any] = dict(onset=np.nan, midpoint=np.nan, slope=np.nan, floor=np.nan,
                               plateau=np.nan, r2=np.nan, steepest=np.nan, threshold_cross=np.nan,
                               p_first=np.nan, p_clean=np.nan, max_p=np.nan, n_points=0)
    good = np.isfinite(steps) & np.isfinite(p)
    if not good.all():
        flags.append("nan_dropped")
    k, p = steps[good], p[good]
    order = np.argsort(k, kind="stable")
    k, p = k[order], p[order]
    res["n_points"] = int(k.size)
    if k.size < _MIN_POINTS:
        flags.append("too_few_points")
        if k.size:
            res.update(p_first=float(p[0]), p_clean=float(p[-1]), max_p=float(p.max()))
        res["flags"] = ";".join(flags)
        return res
    res.update(p_first=float(p[0]), p_clean=float(p[-1]), max_p=float(p.max()))

    fit = fit_logistic(k, p)
    logistic_ok = fit["ok"]
    if logistic_ok:
        res.update(floor=fit["floor"], plateau=fit["plateau"], midpoint=fit["midpoint"],
                   slope=fit["slope"], r2=fit["r2"])
        res["onset"] = fit["midpoint"] - ONSET_OFFSET / fit["slope"]
    else:
        flags.append("fit_failed")

    never_rises = p.max() < min_rise or (logistic_ok and fit["plateau"] - fit["floor"] < min_rise)
    high_start = p[0] >= threshold or (logistic_ok and not never_rises and fit["midpoint"] < k[0])
    if never_rises:
        flags.append("never_rises")
    elif high_start:
        flags.append("high_from_start")

    if never_rises or high_start:
        res.update(onset=np.nan, midpoint=np.nan, slope=np.nan)
    else:
        if logistic_ok:
            if res["onset"] < k[0]:
                flags.append("onset_before_first_step")
            if res["midpoint"] > k[-1]:
                flags.append("midpoint_after_last_step")
            if np.isfinite(fit["r2"]) and fit["r2"] < 0.5:
                flags.append("poor_fit")
        res["steepest"] = steepest_rise(k, p, window=savgol_window, polyorder=savgol_polyorder)

    if p[0] < threshold:
        res["threshold_cross"] = threshold_crossing(k, p, threshold)
        if not np.isfinite(res["threshold_cross"]):
            flags.append("never_crosses")
    elif "high_from_start" not in flags:
        flags.append("high_from_start")
    res["flags"] = ";".join(flags) if flags else "ok"
    return res


# --------------------------------------------------------------------------------------------------
# schedule helpers
# --------------------------------------------------------------------------------------------------
def step_to_t(k, T: int):
    """DDPM timestep t = T - 1 - k (fractional k gives fractional t)."""
    return (T - 1) - np.asarray(k, dtype=float)


def log_snr_at(k, alphas_cumprod) -> np.ndarray | float:
    """log(ab/(1-ab)) at (fractional) step k, linear in log-SNR between integer t; NaN outside."""
    ab = np.asarray(alphas_cumprod, dtype=float)
    T = ab.size
    ab = np.clip(ab, 1e-300, 1 - 1e-16)
    lsnr = np.log(ab) - np.log1p(-ab)
    t = step_to_t(k, T)
    out = np.interp(t, np.arange(T, dtype=float), lsnr, left=np.nan, right=np.nan)
    out = np.where(np.isfinite(t), out, np.nan)
    return float(out) if np.ndim(out) == 0 else out


def _t_and_log_snr(k: float, alphas_cumprod) -> tuple[float, float]:
    if alphas_cumprod is None or not np.isfinite(k):
        return np.nan, np.nan
    T = len(alphas_cumprod)
    return float(step_to_t(k, T)), float(log_snr_at(k, alphas_cumprod))


# --------------------------------------------------------------------------------------------------
# batched estimates for bootstrap replicates (many curves on one step grid)
# --------------------------------------------------------------------------------------------------
def _logistic_ab_jac(k, th):
    """f and df/d(a, b, k0, s) of :func:`_logistic_ab` for a batch th (B, 4) on k (n,)."""
    a, b, k0, s = (th[:, i:i + 1] for i in range(4))
    sig = 0.5 * (1.0 - np.tanh(-0.5 * s * (k[None, :] - k0)))
    f = a + (1.0 - a) * b * sig
    ds = sig * (1.0 - sig)
    J = np.stack([1.0 - b * sig, (1.0 - a) * sig, -(1.0 - a) * b * ds * s,
                  (1.0 - a) * b * ds * (k[None, :] - k0)], axis=-1)
    return f, J


def fit_logistic_batch(k, P, *, max_iter=300) -> dict[str, np.ndarray]:
    """:func:`fit_logistic` for many curves on one grid: same model, bounds and grid start.

    k (n,) sorted, P (B, n) finite. The local refinement is a projected Levenberg-Marquardt on all
    rows at once instead of one ``curve_fit`` per row (~100x faster); it reaches the same least-squares
    optimum (tests: onsets agree with :func:`fit_logistic` to < 0.01 steps). Returns arrays
    floor, plateau, midpoint, slope, sse (B,).
    """
    k = np.asarray(k, dtype=float)
    P = np.asarray(P, dtype=float)
    B, n = P.shape
    span = float(k.max() - k.min())
    dk = float(np.min(np.diff(np.unique(k))))
    lb = np.array([0.0, 0.0, k.min() - 0.5 * span, 0.5 / span])
    ub = np.array([1.0, 1.0, k.max() + 0.5 * span, 50.0 / dk])
    # grid start, as _grid_start but for all rows (sse expanded so no (B, G, n) tensor is formed)
    k0s = np.linspace(k.min() - 0.25 * span, k.max() + 0.25 * span, 49)
    ss = np.geomspace(2.0 / span, 4.0 / dk, 14)
    K0, S = np.meshgrid(k0s, ss, indexing="ij")
    K0, S = K0.ravel(), S.ravel()
    z = 0.5 * (1.0 - np.tanh(-0.5 * S[:, None] * (k[None, :] - K0[:, None])))  # (G, n)
    a11, a12, a22 = np.sum((1 - z) ** 2, 1), np.sum((1 - z) * z, 1), np.sum(z**2, 1)
    b1, b2 = P @ (1 - z).T, P @ z.T  # (B, G)
    det = a11 * a22 - a12**2
    pm = P.mean(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        L = np.where(det > 1e-12, (a22 * b1 - a12 * b2) / det, pm)
        U = np.where(det > 1e-12, (a11 * b2 - a12 * b1) / det, pm)
    L, U = np.clip(L, 0, 1), np.clip(U, 0, 1)
    bad = U < L
    L = np.where(bad, pm, L)
    U = np.where(bad, pm, U)
    sse_g = (L**2 * a11 + 2 * L * U * a12 + U**2 * a22 - 2 * L * b1 - 2 * U * b2
             + np.sum(P**2, 1, keepdims=True))
    g = np.argmin(sse_g, 1)
    L0, U0 = L[np.arange(B), g], U[np.arange(B), g]
    with np.errstate(divide="ignore", invalid="ignore"):
        b0 = np.where(L0 < 1, (U0 - L0) / (1.0 - L0), 0.5)
    th = np.stack([L0, b0, K0[g], S[g]], 1)
    th = np.clip(th, lb + 1e-9 * (ub - lb), ub - 1e-9 * (ub - lb))
    # projected Levenberg-Marquardt, rows that have converged drop out
    f, J = _logistic_ab_jac(k, th)
    r = f - P
    sse = np.sum(r**2, 1)
    lam = np.full(B, 1e-3)
    live = np.arange(B)
    eye = np.eye(4)
    for _ in range(max_iter):
        if live.size == 0:
            break
        t, Jl, rl = th[live], J[live], r[live]
        Jt = Jl.transpose(0, 2, 1)
        grad = (Jt @ rl[:, :, None])[:, :, 0]
        A = Jt @ Jl
        tol = 1e-12 * (ub - lb)
        frozen = ((t <= lb + tol) & (grad > 0)) | ((t >= ub - tol) & (grad < 0))
        keep = (~frozen).astype(float)
        A = A * keep[:, :, None] * keep[:, None, :]
        d = np.maximum(np.diagonal(A, axis1=1, axis2=2), 1e-12)
        M = A + (lam[live, None] * d)[:, :, None] * eye + frozen[:, :, None] * eye
        step = -np.linalg.solve(M, (grad * keep)[..., None])[..., 0]
        tn = np.clip(t + step, lb, ub)
        fn, Jn = _logistic_ab_jac(k, tn)
        rn = fn - P[live]
        ssen = np.sum(rn**2, 1)
        acc = np.isfinite(ssen) & (ssen < sse[live])
        moved = np.max(np.abs(tn - t) / (ub - lb), 1)
        idx = live[acc]
        th[idx], J[idx], r[idx] = tn[acc], Jn[acc], rn[acc]
        gain = sse[idx] - ssen[acc]
        sse[idx] = ssen[acc]
        lam[live] = np.where(acc, np.maximum(lam[live] / 3.0, 1e-12), lam[live] * 4.0)
        done = np.zeros(live.size, bool)
        done[acc] = (gain <= 1e-14 * np.maximum(sse[idx], 1e-300)) | (moved[acc] < 1e-12)
        done[~acc] = lam[live[~acc]] > 1e10
        live = live[~done]
    a, b = th[:, 0], th[:, 1]
    return dict(floor=a, plateau=a + (1 - a) * b, midpoint=th[:, 2].copy(), slope=th[:, 3].copy(),
                sse=sse)


def steepest_rise_batch(k, P, *, window=7, polyorder=2) -> np.ndarray:
    """:func:`steepest_rise` for each row of P (B, n) on one grid k (n,) sorted."""
    k = np.asarray(k, dtype=float)
    P = np.asarray(P, dtype=float)
    B, n = P.shape
    if n < 3:
        return np.full(B, np.nan)
    if _uniform(k):
        grid, y = k, P
    else:
        grid = np.linspace(k[0], k[-1], n)
        j = np.clip(np.searchsorted(k, grid, side="right") - 1, 0, n - 2)
        w = (grid - k[j]) / (k[j + 1] - k[j])
        y = P[:, j] * (1 - w) + P[:, j + 1] * w
    dk = float(grid[1] - grid[0])
    w = min(int(window), n if n % 2 else n - 1)
    if w % 2 == 0:
        w -= 1
    if w >= 3:
        d = savgol_filter(y, w, min(int(polyorder), w - 1), deriv=1, delta=dk, mode="nearest", axis=1)
    else:
        d = np.gradient(y, grid, axis=1)
    i = np.argmax(d, 1)
    rows = np.arange(B)
    inner = (i > 0) & (i < n - 1)
    il, ir = np.clip(i - 1, 0, n - 1), np.clip(i + 1, 0, n - 1)
    y0, y1, y2 = d[rows, il], d[rows, i], d[rows, ir]
    den = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(inner & (den < 0), np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5), 0.0)
    return grid[i] + frac * dk


def threshold_crossing_batch(k, P, threshold=0.5) -> np.ndarray:
    """:func:`threshold_crossing` for each row of P (B, n)."""
    k = np.asarray(k, dtype=float)
    above = P >= threshold
    i = np.argmax(above, 1)
    ok = above.any(1) & (i > 0)
    i = np.where(ok, i, 1)
    rows = np.arange(P.shape[0])
    p0, p1 = P[rows, i - 1], P[rows, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = k[i - 1] + (threshold - p0) / (p1 - p0) * (k[i] - k[i - 1])
    return np.where(ok, v, np.nan)


_BOOT_KEYS = ("onset", "midpoint", "steepest", "threshold_cross")


def detect_batch(steps, P, *, threshold=0.5, min_rise=0.1, savgol_window=7,
                 savgol_polyorder=2) -> dict[str, np.ndarray]:
    """The values of :func:`detect_curve` that the bootstrap needs (onset, midpoint, steepest,
    threshold_cross), for many curves P (B, K) on one step grid, with the same NaN rules. Rows with
    NaN or too few points go through :func:`detect_curve` one by one."""
    steps = np.asarray(steps, dtype=float).ravel()
    P = np.atleast_2d(np.asarray(P, dtype=float))
    B = P.shape[0]
    out = {key: np.full(B, np.nan) for key in _BOOT_KEYS}
    kw = dict(threshold=threshold, min_rise=min_rise, savgol_window=savgol_window,
              savgol_polyorder=savgol_polyorder)
    fin = np.isfinite(steps)
    good_rows = np.all(np.isfinite(P[:, fin]), 1) if fin.any() else np.zeros(B, bool)
    if not fin.all() or fin.sum() < _MIN_POINTS or np.ptp(steps[fin]) <= 0:
        good_rows[:] = False
    for i in np.flatnonzero(~good_rows):
        r = detect_curve(steps, P[i], **kw)
        for key in _BOOT_KEYS:
            out[key][i] = r[key]
    rows = np.flatnonzero(good_rows)
    if rows.size == 0:
        return out
    order = np.argsort(steps, kind="stable")
    k, Q = steps[order], P[rows][:, order]
    fit = fit_logistic_batch(k, Q)
    ok = np.isfinite(fit["sse"]) & np.isfinite(fit["midpoint"]) & np.isfinite(fit["slope"])
    never = (Q.max(1) < min_rise) | (ok & (fit["plateau"] - fit["floor"] < min_rise))
    high = (Q[:, 0] >= threshold) | (ok & ~never & (fit["midpoint"] < k[0]))
    bad = never | high
    out["midpoint"][rows] = np.where(ok & ~bad, fit["midpoint"], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["onset"][rows] = np.where(ok & ~bad, fit["midpoint"] - ONSET_OFFSET / fit["slope"], np.nan)
    st = steepest_rise_batch(k, Q, window=savgol_window, polyorder=savgol_polyorder)
    out["steepest"][rows] = np.where(bad, np.nan, st)
    tc = threshold_crossing_batch(k, Q, threshold)
    out["threshold_cross"][rows] = np.where(Q[:, 0] < threshold, tc, np.nan)
    return out


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------
def _primary_key(primary: str) -> str:
    if primary not in METHODS:
        raise ValueError(f"primary must be one of {METHODS}, got {primary!r}")
    return {"logistic": "onset", "steepest": "steepest", "threshold": "threshold_cross"}[primary]


def _mean_curve(p: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN step -> NaN, dropped later
        return np.nanmean(p, axis=0)


def _weighted_means(counts: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Rows of counts (R, N) times curves P (N, K): the NaN-skipping mean of each multiset."""
    fin = np.isfinite(P)
    num = counts @ np.where(fin, P, 0.0)
    den = counts @ fin.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _boot_from_counts(counts: np.ndarray, P: np.ndarray, steps, kw) -> dict[str, np.ndarray]:
    """Estimates for each bootstrap draw given as a count row over the N curves of P (N, K);
    identical draws (the same multiset) are fitted once."""
    uniq, inv = np.unique(counts, axis=0, return_inverse=True)
    est = detect_batch(steps, _weighted_means(uniq.astype(float), P), **kw)
    return {key: v[np.ravel(inv)] for key, v in est.items()}


def _percentile_cis(vals: Mapping[str, np.ndarray], alpha: float) -> dict[str, tuple[float, float]]:
    cis = {}
    for b, v in vals.items():
        ok = v[np.isfinite(v)]
        cis[b] = ((float(np.percentile(ok, 100 * alpha)), float(np.percentile(ok, 100 * (1 - alpha))))
                  if ok.size and ok.size >= 0.5 * v.size else (np.nan, np.nan))
    return cis


def _ci_flag(point: float, v: np.ndarray) -> list[str]:
    n_bad = int((~np.isfinite(v)).sum())
    if np.isfinite(point) and n_bad:
        return ["ci_partial" if n_bad <= 0.5 * v.size else "ci_unavailable"]
    return []


def _split_curve(cls, entry):
    """(steps, p (I, S, K), seeds, extras) from a 3-tuple (steps, p, seeds) or a 4-tuple with a dict
    of extras (image (I,), image_file (I,), clean_correct (I, S) bool)."""
    if len(entry) == 3:
        (steps, p, seeds), extras = entry, {}
    elif len(entry) == 4:
        steps, p, seeds, extras = entry
        extras = dict(extras or {})
    else:
        raise ValueError(f"class {cls!r}: expected (steps, p, seeds[, extras]), got {len(entry)} items")
    steps = np.asarray(steps, dtype=float)
    p = np.asarray(p, dtype=float)
    if p.ndim == 1:
        p = p[None, None, :]
    elif p.ndim == 2:
        p = p[None]
    seeds = np.asarray(seeds).ravel()
    if p.ndim != 3 or p.shape[2] != steps.size or p.shape[1] != seeds.size:
        raise ValueError(f"class {cls!r}: p has shape {p.shape}, expected "
                         f"([images,] {seeds.size}, {steps.size}) from seeds and steps")
    I = p.shape[0]
    images = np.asarray(extras.get("image", np.arange(I))).ravel()
    if images.size != I:
        raise ValueError(f"class {cls!r}: {images.size} image labels for {I} images in p")
    files = extras.get("image_file")
    if files is not None:
        files = np.asarray(files).ravel()
        if files.size != I:
            raise ValueError(f"class {cls!r}: {files.size} image files for {I} images in p")
    correct = extras.get("clean_correct")
    if correct is not None:
        correct = np.asarray(correct, dtype=bool).reshape(I, seeds.size)
    return steps, p, seeds, images, files, correct


def _item(x):
    return x.item() if hasattr(x, "item") else x


def per_image_columns(with_files: bool = False) -> list[str]:
    return PER_IMAGE_COLUMNS if with_files else [c for c in PER_IMAGE_COLUMNS if c != "image_file"]


def per_seed_columns(with_files: bool = False) -> list[str]:
    return PER_SEED_COLUMNS_FILES if with_files else PER_SEED_COLUMNS


def onset_tables(curves: Mapping[str, Sequence],
                 class_info: Mapping[str, Mapping[str, Any]] | None,
                 alphas_cumprod, *, primary="logistic", threshold=0.5, min_rise=0.1,
                 savgol_window=7, savgol_polyorder=2, n_boot=999, ci=0.95, rng_seed=0
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-class, per-image and per-seed onset tables.

    curves: {cls: (steps (K,), p, seeds (S,)[, extras])} with p (image, seed, step) or (seed, step)
    (= one image); extras (optional dict): ``image`` labels (I,), ``image_file`` (I,) and
    ``clean_correct`` (I, S) bool (top-1 == class at the cleanest step; see ``clean_wrong``).
    class_info: {cls: {index, synset, name}}; alphas_cumprod: all T values of the schedule
    (t = T-1-k), or None (t/log-SNR left NaN). ``onset`` is the ``primary`` method's estimate
    ("logistic" | "steepest" | "threshold") and onset_lo/hi its bootstrap CI; t_onset and
    log_snr_onset are taken at that onset.

    * per seed: one row per (cls, image, seed), each curve on its own.
    * per image: the seed-mean curve of each image; CI = percentile bootstrap over that image's seeds.
    * per class: the mean curve over all images and seeds; CI = hierarchical percentile bootstrap
      (draw images with replacement, then seeds with replacement within each drawn image, refit the
      mean curve). With one image this is exactly the seed bootstrap of the one-image code (same RNG
      draws, same memoised fits), so onset.csv / onset_seeds.csv numbers are unchanged.

    ``clean_wrong`` (per image): the classifier's top-1 is not the class at the cleanest step for any
    seed (from ``clean_correct``; without it, p_true < 0.5 there for every seed, which may also flag
    an image that is top-1 with p < 0.5). ``clean_top1`` (per image) is the fraction of its seeds
    that are right there (same fallback). Per class, ``n_clean_wrong`` counts clean_wrong images.

    Columns: :data:`PER_CLASS_COLUMNS`, :data:`PER_IMAGE_COLUMNS` and :data:`PER_SEED_COLUMNS`;
    ``image_file`` (per image and per seed, after ``image``) only when some class names its images.
    """
    key = _primary_key(primary)
    kw = dict(threshold=threshold, min_rise=min_rise, savgol_window=savgol_window,
              savgol_polyorder=savgol_polyorder)
    alpha = (1.0 - ci) / 2.0
    class_info = class_info or {}
    parsed = {cls: _split_curve(cls, entry) for cls, entry in curves.items()}
    with_files = any(v[4] is not None for v in parsed.values())
    rows, image_rows, seed_rows = [], [], []
    for ci_idx, (cls, (steps, p, seeds, images, files, correct)) in enumerate(parsed.items()):
        I, S, K = p.shape
        k_last = int(np.argmax(steps)) if steps.size else None

        def file_of(i):
            return dict(image_file=str(files[i]) if files is not None else "") if with_files else {}

        # ---- per (image, seed)
        for i_i in range(I):
            for s_i in range(S):
                r = detect_curve(steps, p[i_i, s_i], **kw)
                t_on, l_on = _t_and_log_snr(r[key], alphas_cumprod)
                seed_rows.append(dict(cls=cls, image=_item(images[i_i]), **file_of(i_i),
                                      seed=_item(seeds[s_i]), onset=r[key],
                                      midpoint=r["midpoint"], slope=r["slope"], floor=r["floor"],
                                      plateau=r["plateau"], steepest=r["steepest"],
                                      threshold_cross=r["threshold_cross"], t_onset=t_on,
                                      log_snr_onset=l_on, flags=r["flags"]))
        # clean correctness per (image, seed)
        if correct is None:
            with np.errstate(invalid="ignore"):
                correct_is = (p[:, :, k_last] >= 0.5) if k_last is not None else np.zeros((I, S), bool)
        else:
            correct_is = correct
        clean_wrong = ~correct_is.any(axis=1)
        # ---- per class: point estimate from the mean curve over images and seeds
        if I == 1:
            full, cis, vals, flags = _class_one_image(steps, p[0], S, key, kw, alpha, n_boot,
                                                      np.random.default_rng([rng_seed, ci_idx]))
        else:
            full, cis, vals, flags = _class_hierarchical(steps, p, key, kw, alpha, n_boot,
                                                         np.random.default_rng([rng_seed, ci_idx]))
        info = class_info.get(cls, {})
        t_on, l_on = _t_and_log_snr(full[key], alphas_cumprod)
        mean = _mean_curve(p.reshape(I * S, K))
        p_clean = float(mean[k_last]) if k_last is not None else np.nan
        rows.append(dict(
            cls=cls, class_index=info.get("index", info.get("class_index", np.nan)),
            synset=info.get("synset", ""), name=info.get("name", info.get("class_name", "")),
            n_images=I, n_seeds=S, **_estimate_cols(full, key, cis),
            t_onset=t_on, log_snr_onset=l_on, p_clean=p_clean,
            n_clean_wrong=int(clean_wrong.sum()), flags=";".join(flags) if flags else "ok"))
        # ---- per image: the seed-mean curve of each image, CI over its seeds
        if I == 1:
            img_res = [(full, cis, flags)]
        else:
            img_res = _images_seed_bootstrap(steps, p, key, kw, alpha, n_boot,
                                             np.random.default_rng([rng_seed, ci_idx, 1]))
        for i_i, (r, c, fl) in enumerate(img_res):
            fl = list(fl)
            if clean_wrong[i_i]:
                fl.append("clean_wrong")
            t_on, l_on = _t_and_log_snr(r[key], alphas_cumprod)
            m = _mean_curve(p[i_i])
            image_rows.append(dict(
                cls=cls, image=_item(images[i_i]), **file_of(i_i), n_seeds=S,
                **_estimate_cols(r, key, c), t_onset=t_on, log_snr_onset=l_on,
                p_clean=float(m[k_last]) if k_last is not None else np.nan,
                clean_top1=float(correct_is[i_i].mean()), clean_wrong=bool(clean_wrong[i_i]),
                flags=";".join(fl) if fl else "ok"))
    per_class = pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)
    per_image = pd.DataFrame(image_rows, columns=per_image_columns(with_files))
    per_seed = pd.DataFrame(seed_rows, columns=per_seed_columns(with_files))
    return per_class, per_image, per_seed


def _estimate_cols(r: Mapping[str, Any], key: str, cis) -> dict[str, Any]:
    return dict(onset=r[key], onset_lo=cis["onset"][0], onset_hi=cis["onset"][1],
                midpoint=r["midpoint"], midpoint_lo=cis["midpoint"][0], midpoint_hi=cis["midpoint"][1],
                slope=r["slope"], floor=r["floor"], plateau=r["plateau"],
                steepest=r["steepest"], steepest_lo=cis["steepest"][0], steepest_hi=cis["steepest"][1],
                threshold_cross=r["threshold_cross"], threshold_cross_lo=cis["threshold_cross"][0],
                threshold_cross_hi=cis["threshold_cross"][1])


def _class_one_image(steps, p, S, key, kw, alpha, n_boot, rng):
    """The one-image class estimate and seed bootstrap, exactly as before the image axis: one
    detect_curve per distinct multiset of seeds (memoised), draws sorted per replicate."""
    memo: dict[tuple[int, ...], dict] = {}

    def fit_subset(idx: tuple[int, ...]) -> dict:
        if idx not in memo:
            memo[idx] = detect_curve(steps, _mean_curve(p[list(idx)]), **kw)
        return memo[idx]

    full = fit_subset(tuple(range(S)))
    flags = [] if full["flags"] == "ok" else full["flags"].split(";")
    cis = {b: (np.nan, np.nan) for b in _BOOT_KEYS}
    vals = None
    if S < 2:
        flags.append("single_seed")
    elif S < 4:
        flags.append("ci_few_seeds")  # 2 seeds: 3 distinct resamples; the CI is only a range
    if S >= 2 and n_boot > 0:
        draws = np.sort(rng.integers(0, S, size=(int(n_boot), S)), axis=1)
        vals = {b: np.empty(len(draws)) for b in _BOOT_KEYS}
        for j, d in enumerate(draws):
            r = fit_subset(tuple(int(x) for x in d))
            vals["onset"][j] = r[key]
            for b in _BOOT_KEYS[1:]:
                vals[b][j] = r[b]
        cis = _percentile_cis(vals, alpha)
        flags += _ci_flag(full[key], vals["onset"])
    return full, cis, vals, flags


def hierarchical_draws(rng, n_boot: int, I: int, S: int) -> np.ndarray:
    """Count rows (n_boot, I*S) over the (image, seed) curves, flattened image-major: per draw, I
    images with replacement, then S seeds with replacement within each drawn image."""
    imgs = rng.integers(0, I, size=(int(n_boot), I))
    sds = rng.integers(0, S, size=(int(n_boot), I, S)) if S > 1 else np.zeros((int(n_boot), I, 1), int)
    flat = (imgs[:, :, None] * S + sds).reshape(int(n_boot), I * S)
    counts = np.zeros((int(n_boot), I * S), dtype=np.int32)
    np.add.at(counts, (np.arange(int(n_boot))[:, None], flat), 1)
    return counts


def _class_hierarchical(steps, p, key, kw, alpha, n_boot, rng):
    I, S, K = p.shape
    P = p.reshape(I * S, K)
    full = detect_curve(steps, _mean_curve(P), **kw)
    flags = [] if full["flags"] == "ok" else full["flags"].split(";")
    cis = {b: (np.nan, np.nan) for b in _BOOT_KEYS}
    vals = None
    if I < FEW_IMAGES:
        flags.append("ci_few_images")  # the CI under-covers: ~75 % at 3 images, ~90 % at 10
    if n_boot > 0:
        vals = _boot_from_counts(hierarchical_draws(rng, n_boot, I, S), P, steps, kw)
        vals = {b: vals[key] if b == "onset" else vals[b] for b in _BOOT_KEYS}
        cis = _percentile_cis(vals, alpha)
        flags += _ci_flag(full[key], vals["onset"])
    return full, cis, vals, flags


def _images_seed_bootstrap(steps, p, key, kw, alpha, n_boot, rng):
    """Per image: detect_curve on its seed-mean curve, percentile CI over its seeds. The distinct
    seed multisets of all images are fitted in one batch."""
    I, S, K = p.shape
    nb = int(n_boot)
    boot = S >= 2 and nb > 0
    if boot:
        draws = rng.integers(0, S, size=(I, nb, S))
        means, invs, start = [], [], 0
        for i in range(I):
            counts = np.zeros((nb, S), dtype=np.int32)
            np.add.at(counts, (np.arange(nb)[:, None], draws[i]), 1)
            uniq, inv = np.unique(counts, axis=0, return_inverse=True)
            means.append(_weighted_means(uniq.astype(float), p[i]))
            invs.append(start + np.ravel(inv))
            start += len(uniq)
        est = detect_batch(steps, np.concatenate(means), **kw)
    out = []
    for i in range(I):
        full = detect_curve(steps, _mean_curve(p[i]), **kw)
        flags = [] if full["flags"] == "ok" else full["flags"].split(";")
        cis = {b: (np.nan, np.nan) for b in _BOOT_KEYS}
        if S < 2:
            flags.append("single_seed")
        elif S < 4:
            flags.append("ci_few_seeds")
        if boot:
            vals = {b: (est[key] if b == "onset" else est[b])[invs[i]] for b in _BOOT_KEYS}
            cis = _percentile_cis(vals, alpha)
            flags += _ci_flag(full[key], vals["onset"])
        out.append((full, cis, flags))
    return out


def curves_from_datasets(probs: Mapping[str, Any], var: str = "p_true"):
    """(curves, class_info, alphas_cumprod) for :func:`onset_tables` from probability Datasets.

    ``probs``: {cls: xarray Dataset in the results/probs layout (docs/DESIGN.md)}, ``var`` with dims
    (image, seed, step) or (seed, step) (= one image). Each curve is (steps, p (image, seed, step),
    seeds) plus, when the store has them, a dict of extras: ``image`` and ``image_file`` coords, and
    ``clean_correct`` (image, seed) = (``pred`` == class_index at the cleanest step). Duck-typed, so
    this module does not import xarray.
    """
    curves, info, ab = {}, {}, None
    for cls, ds in probs.items():
        has_image = "image" in ds[var].dims
        dims = ("image", "seed", "step") if has_image else ("seed", "step")
        p = np.asarray(ds[var].transpose(*dims).values, dtype=float)
        if not has_image:
            p = p[None]
        steps = np.asarray(ds["step"].values)
        a = ds.attrs
        extras: dict[str, Any] = {}
        if has_image:
            extras["image"] = np.asarray(ds["image"].values)
            if "image_file" in ds.coords or "image_file" in getattr(ds, "data_vars", {}):
                extras["image_file"] = np.asarray(ds["image_file"].values).astype(str)
        idx = a.get("class_index")
        if "pred" in getattr(ds, "data_vars", {}) and idx is not None and steps.size:
            pred = ds["pred"].transpose(*dims).values
            pred = np.asarray(pred)[None] if not has_image else np.asarray(pred)
            extras["clean_correct"] = pred[:, :, int(np.argmax(steps))] == int(idx)
        seeds = np.asarray(ds["seed"].values)
        curves[cls] = (steps, p, seeds, extras) if extras else (steps, p, seeds)
        info[cls] = dict(index=a.get("class_index", np.nan), synset=a.get("synset", ""),
                         name=a.get("class_name", ""))
        this = a.get("alphas_cumprod")
        if this is not None:
            this = np.asarray(this, dtype=float)
            if ab is None:
                ab = this
            elif this.shape != ab.shape or not np.allclose(this, ab):
                raise ValueError(f"class {cls!r}: alphas_cumprod differs from the other classes")
    return curves, info, ab
