"""The onset model and its least-squares fit: a four-parameter logistic in the step index k.

p(k) = L + (U - L) / (1 + exp(-s (k - k0))) with 0 <= L <= U <= 1, s > 0, fitted as
L = a, U = a + (1 - a) b with (a, b) in [0, 1]^2 so that box bounds alone keep 0 <= L <= U <= 1.
Every fit starts from a coarse global search over (k0, s) with L and U by linear least squares
(:func:`grid_starts`), then refines locally with one of two solvers (:data:`SOLVERS`):

* ``"curve_fit"``: scipy's bounded trust-region ``curve_fit`` from the three best grid points in
  turn, one curve at a time (stops once a fit matches the best grid point). Point estimates.
* ``"lm"``: a projected Levenberg-Marquardt on all curves at once from the best grid point; it
  reaches the same least-squares optimum (onsets agree to < 0.01 steps) about 100x faster, for the
  many resampled curves of a bootstrap.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

#: k0 - ONSET_OFFSET/s is where the logistic's third derivative vanishes (rise fraction (3-sqrt3)/6).
ONSET_OFFSET = math.log(2.0 + math.sqrt(3.0))  # 1.3169578969...

#: the local refinements of :func:`fit_logistic_batch`
SOLVERS = ("curve_fit", "lm")

MIN_POINTS = 4  # a 4-parameter logistic needs at least this many points

_FIT_KEYS = ("floor", "plateau", "midpoint", "slope", "sse", "r2")


def logistic(k, L, U, k0, s):
    """Four-parameter logistic L + (U - L) / (1 + exp(-s (k - k0))); overflow-safe."""
    z = -s * (np.asarray(k, dtype=float) - k0)
    return L + (U - L) * 0.5 * (1.0 - np.tanh(0.5 * z))  # == 1/(1+exp(z)) without overflow


def _logistic_ab(k, a, b, k0, s):
    # L = a, U = a + (1 - a) b with a, b in [0, 1] enforces 0 <= L <= U <= 1 with box bounds only.
    return logistic(k, a, a + (1.0 - a) * b, k0, s)


def _logistic_ab_jac(k, th):
    """f and df/d(a, b, k0, s) of :func:`_logistic_ab` for a batch th (B, 4) on k (n,)."""
    a, b, k0, s = (th[:, i:i + 1] for i in range(4))
    sig = 0.5 * (1.0 - np.tanh(-0.5 * s * (k[None, :] - k0)))
    f = a + (1.0 - a) * b * sig
    ds = sig * (1.0 - sig)
    J = np.stack([1.0 - b * sig, (1.0 - a) * sig, -(1.0 - a) * b * ds * s,
                  (1.0 - a) * b * ds * (k[None, :] - k0)], axis=-1)
    return f, J


def _box(k: np.ndarray, span: float):
    """Bounds lb, ub of (a, b, k0, s) and the grid's (k0_lo, k0_hi, s_lo, s_hi) on the steps k."""
    dk = float(np.min(np.diff(np.unique(k))))
    lb = np.array([0.0, 0.0, k.min() - 0.5 * span, 0.5 / span])
    ub = np.array([1.0, 1.0, k.max() + 0.5 * span, 50.0 / dk])
    grid = (k.min() - 0.25 * span, k.max() + 0.25 * span, 2.0 / span, 4.0 / dk)
    return lb, ub, grid


_GRID_CACHE: dict[tuple, tuple] = {}  # the p-independent part of grid_starts, per step grid


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
        hit = (K0[:, 0], S[:, 0], z, 1 - z, a11, a12, a22, det)
        if len(_GRID_CACHE) > 64:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = hit
    return hit


def grid_starts(k: np.ndarray, P: np.ndarray, grid, top: int = 1):
    """Coarse global search over (k0, s) for each row of P (B, n) on the steps k (n,): 49 x 14
    grid points, L and U of each by linear least squares (clipped to [0, 1], L <= U). Returns
    arrays L, U, k0, s, sse, each (B, top), best first."""
    K0, S, z, omz, a11, a12, a22, det = _grid_basis(k, *grid)
    b1, b2 = P @ omz.T, P @ z.T  # (B, G)
    pm = P.mean(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        L = np.where(det > 1e-12, (a22 * b1 - a12 * b2) / det, pm)
        U = np.where(det > 1e-12, (a11 * b2 - a12 * b1) / det, pm)
    L, U = np.clip(L, 0, 1), np.clip(U, 0, 1)
    bad = U < L
    L = np.where(bad, pm, L)
    U = np.where(bad, pm, U)
    sse = np.empty_like(L)
    chunk = max(1, 2_000_000 // max(1, z.size))  # rows per (rows, G, n) residual block
    for i in range(0, P.shape[0], chunk):
        j = slice(i, i + chunk)
        res = L[j, :, None] + (U - L)[j, :, None] * z[None] - P[j, None, :]
        sse[j] = np.sum(res**2, 2)
    order = np.argsort(sse, 1)[:, :top] if top > 1 else np.argmin(sse, 1)[:, None]
    rows = np.arange(P.shape[0])[:, None]
    return L[rows, order], U[rows, order], K0[order], S[order], sse[rows, order]


def _start(L0, U0, k00, s0, lb, ub) -> np.ndarray:
    """(a, b, k0, s) starts (B, 4) from grid starts, just inside the bounds."""
    with np.errstate(divide="ignore", invalid="ignore"):
        b0 = np.where(L0 < 1, (U0 - L0) / (1.0 - L0), 0.5)
    th = np.stack([L0, b0, k00, s0], -1)
    return np.clip(th, lb + 1e-9 * (ub - lb), ub - 1e-9 * (ub - lb))


def _refine_curve_fit(k, p, starts, lb, ub):
    """Bounded trust-region least squares (``curve_fit``) of one curve from each start (rows of
    (a, b, k0, s)) in turn, until a fit matches the best grid point's sse ``starts_sse[0]``.
    Returns (theta (4,), sse) of the best fit, or None when every start failed."""
    x0s, grid_sse = starts
    best = None
    for x0 in x0s:
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
        if best is not None and best[1] <= grid_sse * (1 + 1e-9):
            break  # improved on (or matched) the global grid optimum: no need for more starts
    return best


def _refine_lm(k, P, th, lb, ub, max_iter=300):
    """Projected Levenberg-Marquardt from the starts th (B, 4) for all rows of P (B, n) at once;
    rows that have converged drop out. Returns (theta (B, 4), sse (B,))."""
    f, J = _logistic_ab_jac(k, th)
    r = f - P
    sse = np.sum(r**2, 1)
    lam = np.full(P.shape[0], 1e-3)
    live = np.arange(P.shape[0])
    eye = np.eye(4)
    tol = 1e-12 * (ub - lb)
    for _ in range(max_iter):
        if live.size == 0:
            break
        t, Jl, rl = th[live], J[live], r[live]
        Jt = Jl.transpose(0, 2, 1)
        grad = (Jt @ rl[:, :, None])[:, :, 0]
        A = Jt @ Jl
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
    return th, sse


def fit_logistic_batch(k, P, *, solver: str = "lm", max_iter: int = 300) -> dict[str, np.ndarray]:
    """Least-squares logistic fits with box bounds of the curves P (B, n), all finite, on the steps
    k (n,); never raises. ``solver``: see :data:`SOLVERS` (``max_iter`` is the LM's).

    Returns arrays (B,) floor, plateau, midpoint, slope, sse, r2 (NaN where the fit failed) and ok
    (False where every start failed, and for all rows with fewer than 4 points or one step).
    """
    k = np.asarray(k, dtype=float)
    P = np.atleast_2d(np.asarray(P, dtype=float))
    B, n = P.shape
    out: dict[str, np.ndarray] = {key: np.full(B, np.nan) for key in _FIT_KEYS}
    out["ok"] = np.zeros(B, bool)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    span = float(k.max() - k.min()) if n else 0.0
    if n < MIN_POINTS or span <= 0:
        return out
    lb, ub, grid = _box(k, span)
    th = np.full((B, 4), np.nan)
    if solver == "lm":
        L0, U0, k00, s0, _ = grid_starts(k, P, grid)
        th, out["sse"] = _refine_lm(k, P, _start(L0[:, 0], U0[:, 0], k00[:, 0], s0[:, 0], lb, ub),
                                    lb, ub, max_iter)
    else:
        for i in range(B):
            L0, U0, k00, s0, g_sse = (a[0] for a in grid_starts(k, P[i:i + 1], grid, top=3))
            best = _refine_curve_fit(k, P[i], (_start(L0, U0, k00, s0, lb, ub), g_sse[0]), lb, ub)
            if best is not None:
                th[i], out["sse"][i] = best
    out["ok"] = np.isfinite(out["sse"]) & np.isfinite(th[:, 2]) & np.isfinite(th[:, 3])
    a, b = th[:, 0], th[:, 1]
    out.update(floor=a, plateau=a + (1 - a) * b, midpoint=th[:, 2].copy(), slope=th[:, 3].copy())
    sst = np.sum((P - P.mean(1, keepdims=True)) ** 2, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["r2"] = np.where(sst > 0, 1.0 - out["sse"] / sst, np.nan)
    return out


def fit_logistic(k, p) -> dict[str, Any]:
    """:func:`fit_logistic_batch` of one curve with the ``curve_fit`` solver, as floats.

    Returns dict(floor, plateau, midpoint, slope, r2, ok). ``ok`` is False when every start failed.
    """
    fit = fit_logistic_batch(k, np.asarray(p, dtype=float)[None], solver="curve_fit")
    if not fit["ok"][0]:
        return dict(floor=np.nan, plateau=np.nan, midpoint=np.nan, slope=np.nan, r2=np.nan, ok=False)
    return dict(floor=float(fit["floor"][0]), plateau=float(fit["plateau"][0]),
                midpoint=float(fit["midpoint"][0]), slope=float(fit["slope"][0]),
                r2=float(fit["r2"][0]), ok=True)
