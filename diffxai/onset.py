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
extrapolated), ``poor_fit`` (R^2 < 0.5). Per class also ``single_seed`` (CI NaN),
``ci_few_seeds`` (2-3 seeds: few distinct resamples), ``ci_partial``/``ci_unavailable`` (some/most
resamples NaN). Flags are joined with ";"; "ok" when there are none.

Per class, point estimates come from the seed-mean curve; the 95 % CI is a percentile bootstrap over
seeds (resample seeds with replacement, refit the mean curve), memoised on the multiset of seeds.
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

PER_CLASS_COLUMNS = [
    "cls", "class_index", "synset", "name", "n_seeds",
    "onset", "onset_lo", "onset_hi",
    "midpoint", "midpoint_lo", "midpoint_hi", "slope", "floor", "plateau",
    "steepest", "steepest_lo", "steepest_hi",
    "threshold_cross", "threshold_cross_lo", "threshold_cross_hi",
    "t_onset", "log_snr_onset", "p_clean", "flags",
]
PER_SEED_COLUMNS = [
    "cls", "seed", "onset", "midpoint", "slope", "floor", "plateau", "steepest",
    "threshold_cross", "t_onset", "log_snr_onset", "flags",
]

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
def _grid_start(k: np.ndarray, p: np.ndarray, k0_lo, k0_hi, s_lo, s_hi):
    """Coarse global search over (k0, s); L and U by linear least squares. Returns sorted starts."""
    k0s = np.linspace(k0_lo, k0_hi, 49)
    ss = np.geomspace(s_lo, s_hi, 14)
    K0, S = np.meshgrid(k0s, ss, indexing="ij")
    K0, S = K0.ravel()[:, None], S.ravel()[:, None]
    z = 0.5 * (1.0 - np.tanh(-0.5 * S * (k[None, :] - K0)))  # (G, n)
    # p ~ L (1 - z) + U z: 2x2 normal equations per grid point
    a11 = np.sum((1 - z) ** 2, 1)
    a12 = np.sum((1 - z) * z, 1)
    a22 = np.sum(z**2, 1)
    b1 = (1 - z) @ p
    b2 = z @ p
    det = a11 * a22 - a12**2
    with np.errstate(divide="ignore", invalid="ignore"):
        L = np.where(det > 1e-12, (a22 * b1 - a12 * b2) / det, p.mean())
        U = np.where(det > 1e-12, (a11 * b2 - a12 * b1) / det, p.mean())
    L, U = np.clip(L, 0, 1), np.clip(U, 0, 1)
    bad = U < L
    L[bad] = U[bad] = p.mean()
    sse = np.sum((L[:, None] + (U - L)[:, None] * z - p[None, :]) ** 2, 1)
    order = np.argsort(sse)
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
    starts = _grid_start(k, p, k.min() - 0.25 * span, k.max() + 0.25 * span, 2.0 / span, 4.0 / dk)
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


def onset_tables(curves: Mapping[str, tuple[Sequence, Any, Sequence]],
                 class_info: Mapping[str, Mapping[str, Any]] | None,
                 alphas_cumprod, *, primary="logistic", threshold=0.5, min_rise=0.1,
                 savgol_window=7, savgol_polyorder=2, n_boot=999, ci=0.95, rng_seed=0
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-class and per-seed onset tables.

    curves: {cls: (steps (K,), p (S, K), seeds (S,))}; class_info: {cls: {index, synset, name}};
    alphas_cumprod: all T values of the schedule (t = T-1-k), or None (t/log-SNR left NaN).
    ``onset`` is the ``primary`` method's estimate ("logistic" | "steepest" | "threshold") and
    onset_lo/hi its bootstrap CI; t_onset and log_snr_onset are taken at that onset.
    """
    key = _primary_key(primary)
    kw = dict(threshold=threshold, min_rise=min_rise, savgol_window=savgol_window,
              savgol_polyorder=savgol_polyorder)
    alpha = (1.0 - ci) / 2.0
    class_info = class_info or {}
    rows, seed_rows = [], []
    for ci_idx, (cls, (steps, p, seeds)) in enumerate(curves.items()):
        steps = np.asarray(steps, dtype=float)
        p = np.atleast_2d(np.asarray(p, dtype=float))
        seeds = np.asarray(seeds).ravel()
        if p.shape[1] != steps.size or p.shape[0] != seeds.size:
            raise ValueError(f"class {cls!r}: p has shape {p.shape}, expected "
                             f"({seeds.size}, {steps.size}) from seeds and steps")
        S = p.shape[0]
        # ---- per seed
        for s_i in range(S):
            r = detect_curve(steps, p[s_i], **kw)
            t_on, l_on = _t_and_log_snr(r[key], alphas_cumprod)
            seed_rows.append(dict(cls=cls, seed=seeds[s_i].item(), onset=r[key],
                                  midpoint=r["midpoint"], slope=r["slope"], floor=r["floor"],
                                  plateau=r["plateau"], steepest=r["steepest"],
                                  threshold_cross=r["threshold_cross"], t_onset=t_on,
                                  log_snr_onset=l_on, flags=r["flags"]))
        # ---- per class: point estimate from the seed-mean curve
        memo: dict[tuple[int, ...], dict] = {}

        def fit_subset(idx: tuple[int, ...]) -> dict:
            if idx not in memo:
                memo[idx] = detect_curve(steps, _mean_curve(p[list(idx)]), **kw)
            return memo[idx]

        full = fit_subset(tuple(range(S)))
        flags = [] if full["flags"] == "ok" else full["flags"].split(";")
        boot_keys = ("onset", "midpoint", "steepest", "threshold_cross")
        cis = {b: (np.nan, np.nan) for b in boot_keys}
        if S < 2:
            flags.append("single_seed")
        elif S < 4:
            flags.append("ci_few_seeds")  # 2 seeds: 3 distinct resamples; the CI is only a range
        if S >= 2 and n_boot > 0:
            rng = np.random.default_rng([rng_seed, ci_idx])
            draws = np.sort(rng.integers(0, S, size=(int(n_boot), S)), axis=1)
            vals = {b: np.empty(len(draws)) for b in boot_keys}
            for j, d in enumerate(draws):
                r = fit_subset(tuple(int(x) for x in d))
                vals["onset"][j] = r[key]
                for b in boot_keys[1:]:
                    vals[b][j] = r[b]
            for b, v in vals.items():
                ok = v[np.isfinite(v)]
                if ok.size >= 0.5 * v.size:
                    cis[b] = (float(np.percentile(ok, 100 * alpha)),
                              float(np.percentile(ok, 100 * (1 - alpha))))
            v = vals["onset"]
            n_bad = int((~np.isfinite(v)).sum())
            if np.isfinite(full[key]) and n_bad:
                flags.append("ci_partial" if n_bad <= 0.5 * v.size else "ci_unavailable")
        info = class_info.get(cls, {})
        t_on, l_on = _t_and_log_snr(full[key], alphas_cumprod)
        k_sorted = np.argsort(steps)
        mean = _mean_curve(p)
        p_clean = float(mean[k_sorted[-1]]) if steps.size else np.nan
        rows.append(dict(
            cls=cls, class_index=info.get("index", info.get("class_index", np.nan)),
            synset=info.get("synset", ""), name=info.get("name", info.get("class_name", "")),
            n_seeds=S,
            onset=full[key], onset_lo=cis["onset"][0], onset_hi=cis["onset"][1],
            midpoint=full["midpoint"], midpoint_lo=cis["midpoint"][0],
            midpoint_hi=cis["midpoint"][1], slope=full["slope"], floor=full["floor"],
            plateau=full["plateau"],
            steepest=full["steepest"], steepest_lo=cis["steepest"][0],
            steepest_hi=cis["steepest"][1],
            threshold_cross=full["threshold_cross"], threshold_cross_lo=cis["threshold_cross"][0],
            threshold_cross_hi=cis["threshold_cross"][1],
            t_onset=t_on, log_snr_onset=l_on, p_clean=p_clean,
            flags=";".join(flags) if flags else "ok"))
    per_class = pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)
    per_seed = pd.DataFrame(seed_rows, columns=PER_SEED_COLUMNS)
    return per_class, per_seed


def curves_from_datasets(probs: Mapping[str, Any], var: str = "p_true"):
    """(curves, class_info, alphas_cumprod) for :func:`onset_tables` from probability Datasets.

    ``probs``: {cls: xarray Dataset in the results/probs layout (docs/DESIGN.md)}. Duck-typed, so this
    module does not import xarray.
    """
    curves, info, ab = {}, {}, None
    for cls, ds in probs.items():
        da = ds[var].transpose("seed", "step")
        curves[cls] = (np.asarray(ds["step"].values), np.asarray(da.values, dtype=float),
                       np.asarray(ds["seed"].values))
        a = ds.attrs
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
