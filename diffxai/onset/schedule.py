"""The study's step index k on the DDPM schedule: timestep t = T - 1 - k and log-SNR at k."""
from __future__ import annotations

import numpy as np


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


def t_and_log_snr(k: float, alphas_cumprod) -> tuple[float, float]:
    """(t, log-SNR) at step k; NaN without a schedule or a finite k."""
    if alphas_cumprod is None or not np.isfinite(k):
        return np.nan, np.nan
    T = len(alphas_cumprod)
    return float(step_to_t(k, T)), float(log_snr_at(k, alphas_cumprod))
