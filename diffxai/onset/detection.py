"""Onset estimates of curves p(step): logistic 21 % point and midpoint, steepest rise, threshold
crossing, with the NaN rules and flags of the package docstring. One implementation works on a
batch of curves on one step grid; a single curve is a batch of one."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import savgol_filter

from .fitting import MIN_POINTS, ONSET_OFFSET, fit_logistic_batch

#: the estimates :func:`detect_batch` returns (those the bootstrap resamples)
BOOT_KEYS = ("onset", "midpoint", "steepest", "threshold_cross")


def _uniform(k: np.ndarray) -> bool:
    d = np.diff(k)
    return bool(np.allclose(d, d[0], rtol=1e-6, atol=1e-9))


def steepest_rise_batch(k, P, *, window=7, polyorder=2) -> np.ndarray:
    """k of the largest Savitzky-Golay first derivative dp/dk (fractional, sub-step by a parabola
    through the peak) for each row of P (B, n) on one sorted step grid k (n,).

    Non-uniform steps are linearly interpolated onto a uniform grid with as many points as the input.
    The window (in points) shrinks to the largest odd length that fits; with < 3 points, NaN.
    """
    k = np.asarray(k, dtype=float)
    P = np.atleast_2d(np.asarray(P, dtype=float))
    B, n = P.shape
    if n < 3:
        return np.full(B, np.nan)
    if _uniform(k):
        grid, y = k, P
    else:
        grid = np.linspace(k[0], k[-1], n)
        y = np.stack([np.interp(grid, k, row) for row in P])
    dk = float(grid[1] - grid[0])
    w = min(int(window), n if n % 2 else n - 1)
    if w % 2 == 0:
        w -= 1
    if w >= 3:
        # mode="nearest": "interp" extrapolates a polynomial at the ends and puts spurious maxima there
        d = savgol_filter(y, w, min(int(polyorder), w - 1), deriv=1, delta=dk, mode="nearest", axis=1)
    else:
        d = np.gradient(y, grid, axis=1)
    i = np.nanargmax(d, 1)
    rows = np.arange(B)
    inner = (i > 0) & (i < n - 1)
    il, ir = np.clip(i - 1, 0, n - 1), np.clip(i + 1, 0, n - 1)
    y0, y1, y2 = d[rows, il], d[rows, i], d[rows, ir]
    den = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(inner & (den < 0), np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5), 0.0)
    return grid[i] + frac * dk


def steepest_rise(k, p, *, window=7, polyorder=2) -> float:
    """:func:`steepest_rise_batch` of one curve."""
    return float(steepest_rise_batch(k, np.asarray(p, dtype=float)[None], window=window,
                                     polyorder=polyorder)[0])


def threshold_crossing_batch(k, P, threshold=0.5) -> np.ndarray:
    """First k where p >= threshold, linearly interpolated, for each row of P (B, n); NaN if never
    or already at k[0]."""
    k = np.asarray(k, dtype=float)
    P = np.atleast_2d(np.asarray(P, dtype=float))
    above = P >= threshold
    i = np.argmax(above, 1)
    ok = above.any(1) & (i > 0)
    i = np.where(ok, i, 1)
    rows = np.arange(P.shape[0])
    p0, p1 = P[rows, i - 1], P[rows, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = k[i - 1] + (threshold - p0) / (p1 - p0) * (k[i] - k[i - 1])
    return np.where(ok, v, np.nan)


def threshold_crossing(k, p, threshold=0.5) -> float:
    """:func:`threshold_crossing_batch` of one curve."""
    return float(threshold_crossing_batch(k, np.asarray(p, dtype=float)[None], threshold)[0])


def _estimate(k, Q, *, threshold, min_rise, savgol_window, savgol_polyorder, solver):
    """All estimates and rule outcomes (B,) for the finite curves Q (B, n) on the sorted steps k."""
    fit = fit_logistic_batch(k, Q, solver=solver)
    ok = fit["ok"]
    never = (Q.max(1) < min_rise) | (ok & (fit["plateau"] - fit["floor"] < min_rise))
    high = (Q[:, 0] >= threshold) | (ok & ~never & (fit["midpoint"] < k[0]))
    bad = never | high
    est = {key: np.where(ok, fit[key], np.nan) for key in ("floor", "plateau", "r2")}
    est["midpoint"] = np.where(ok & ~bad, fit["midpoint"], np.nan)
    est["slope"] = np.where(ok & ~bad, fit["slope"], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        est["onset"] = np.where(ok & ~bad, fit["midpoint"] - ONSET_OFFSET / fit["slope"], np.nan)
    st = steepest_rise_batch(k, Q, window=savgol_window, polyorder=savgol_polyorder)
    est["steepest"] = np.where(bad, np.nan, st)
    tc = threshold_crossing_batch(k, Q, threshold)
    est["threshold_cross"] = np.where(Q[:, 0] < threshold, tc, np.nan)
    est.update(ok=ok, never_rises=never, high_from_start=high)
    return est


def _flags(e: dict[str, Any], k: np.ndarray, p: np.ndarray, threshold: float) -> list[str]:
    """The flags of one curve from its row e of :func:`_estimate`, in the documented order."""
    flags = [] if e["ok"] else ["fit_failed"]
    if e["never_rises"]:
        flags.append("never_rises")
    elif e["high_from_start"]:
        flags.append("high_from_start")
    elif e["ok"]:
        if e["onset"] < k[0]:
            flags.append("onset_before_first_step")
        if e["midpoint"] > k[-1]:
            flags.append("midpoint_after_last_step")
        if np.isfinite(e["r2"]) and e["r2"] < 0.5:
            flags.append("poor_fit")
    if p[0] < threshold:
        if not np.isfinite(e["threshold_cross"]):
            flags.append("never_crosses")
    elif "high_from_start" not in flags:
        flags.append("high_from_start")
    return flags


def detect_curve(steps, p, *, threshold=0.5, min_rise=0.1, savgol_window=7,
                 savgol_polyorder=2, solver: str = "curve_fit") -> dict[str, Any]:
    """All onset estimates for one curve p(step). Never raises on bad data: see the package flags.
    Non-finite points are dropped and the steps sorted first.

    Returns dict with keys: onset (logistic 21 % point), midpoint, slope, floor, plateau, r2,
    steepest, threshold_cross, p_first, p_clean (p at the cleanest step), max_p, n_points, flags.
    """
    steps = np.asarray(steps, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if steps.shape != p.shape:
        raise ValueError(f"steps {steps.shape} and p {p.shape} differ in shape")
    keys = ("onset", "midpoint", "slope", "floor", "plateau", "r2", "steepest", "threshold_cross")
    res: dict[str, Any] = dict.fromkeys(keys, np.nan)
    res.update(p_first=np.nan, p_clean=np.nan, max_p=np.nan, n_points=0)
    good = np.isfinite(steps) & np.isfinite(p)
    flags = [] if good.all() else ["nan_dropped"]
    k, p = steps[good], p[good]
    order = np.argsort(k, kind="stable")
    k, p = k[order], p[order]
    res["n_points"] = int(k.size)
    if k.size:
        res.update(p_first=float(p[0]), p_clean=float(p[-1]), max_p=float(p.max()))
    if k.size < MIN_POINTS:
        res["flags"] = ";".join(flags + ["too_few_points"])
        return res
    est = _estimate(k, p[None], threshold=threshold, min_rise=min_rise, savgol_window=savgol_window,
                    savgol_polyorder=savgol_polyorder, solver=solver)
    e = {key: v[0] for key, v in est.items()}
    res.update({key: float(e[key]) for key in keys})
    flags += _flags(e, k, p, threshold)
    res["flags"] = ";".join(flags) if flags else "ok"
    return res


def detect_batch(steps, P, *, threshold=0.5, min_rise=0.1, savgol_window=7,
                 savgol_polyorder=2, solver: str = "lm") -> dict[str, np.ndarray]:
    """The :data:`BOOT_KEYS` estimates of :func:`detect_curve` for many curves P (B, K) on one step
    grid, with the same rules. Rows with NaN or too few points go through :func:`detect_curve`
    one by one (``curve_fit`` solver); the others are fitted together with ``solver``."""
    steps = np.asarray(steps, dtype=float).ravel()
    P = np.atleast_2d(np.asarray(P, dtype=float))
    B = P.shape[0]
    out = {key: np.full(B, np.nan) for key in BOOT_KEYS}
    kw = dict(threshold=threshold, min_rise=min_rise, savgol_window=savgol_window,
              savgol_polyorder=savgol_polyorder)
    fin = np.isfinite(steps)
    good_rows = np.all(np.isfinite(P[:, fin]), 1) if fin.any() else np.zeros(B, bool)
    if not fin.all() or fin.sum() < MIN_POINTS or np.ptp(steps[fin]) <= 0:
        good_rows[:] = False
    for i in np.flatnonzero(~good_rows):
        r = detect_curve(steps, P[i], **kw)
        for key in BOOT_KEYS:
            out[key][i] = r[key]
    rows = np.flatnonzero(good_rows)
    if rows.size == 0:
        return out
    order = np.argsort(steps, kind="stable")
    est = _estimate(steps[order], P[rows][:, order], solver=solver, **kw)
    for key in BOOT_KEYS:
        out[key][rows] = est[key]
    return out
