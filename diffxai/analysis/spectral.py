"""How coarse or fine is a map? Radially averaged power spectrum, centroid, low-frequency share.

Definitions, for a map ``a`` (H, W):

- the map's mean is subtracted first (the DC term carries the total, not the spatial scale);
- ``F = fft2(a - mean(a))``, power ``|F(fy, fx)|^2`` on the grid of ``numpy.fft.fftfreq``
  frequencies in cycles per pixel; radial frequency ``f = sqrt(fy^2 + fx^2)``;
- rings: ``n_bins`` bins of equal width on ``(0, 0.5]`` (0.5 = Nyquist); the corners beyond 0.5
  are left out so every ring is a full circle; default ``n_bins = min(H, W) // 2``;
- **radially averaged power spectrum** ``P(f_b)`` = mean power over the coefficients of ring b
  (a white-noise map has a flat ``P``);
- **spectral centroid** ``sum_b f_b P(f_b) / sum_b P(f_b)`` in cycles/px: the centre of mass of the
  radially averaged spectrum (white noise -> the band's midpoint, ~0.25; a smooth map -> near 0);
- **low-frequency share**: the fraction of the map's (non-DC, within-Nyquist) energy in the rings
  with ``f <= cutoff`` (default 1/16 cycles/px, i.e. structures of 16 px and more, about 14
  cycles across 224 px). Energy, not mean power: ``sum_{f_b <= c} E_b / sum_b E_b`` where ``E_b``
  is the summed power of ring b.

Batched with ``torch.fft.rfft2`` (the half-plane is weighted 2x for the mirrored columns).
"""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_CUTOFF = 1.0 / 16


def _ring_index(h: int, w: int, n_bins: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Bin index per rfft2 coefficient (-1 = DC or beyond Nyquist), its weight, bin centres."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    idx = np.digitize(f, edges[1:-1], right=True)  # 0 .. n_bins-1 for f in (0, 0.5]
    idx[(f <= 0) | (f > 0.5)] = -1
    # rfft keeps columns 0..w//2; all but column 0 (and the Nyquist column for even w) stand
    # for two coefficients of the full spectrum
    wgt = np.full(f.shape, 2.0)
    wgt[:, 0] = 1.0
    if w % 2 == 0:
        wgt[:, -1] = 1.0
    centres = 0.5 * (edges[1:] + edges[:-1])
    return torch.as_tensor(idx.ravel()), torch.as_tensor(wgt.ravel()), centres


def radial_spectrum(maps, n_bins: int | None = None, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps (..., H, W) -> (P (..., n_bins) mean power per ring, E (..., n_bins) ring energy, f_b).

    ``chunk`` maps at a time go through the FFT (memory stays small on any leading shape).
    """
    a = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.array(maps, copy=None, order="C"))
    h, w = a.shape[-2:]
    n_bins = int(n_bins or min(h, w) // 2)
    idx, wgt, centres = _ring_index(h, w, n_bins)
    bins = torch.where(idx >= 0, idx, n_bins)          # DC and corners go to a dropped extra bin
    wk = wgt.float()
    counts = torch.zeros(n_bins + 1, dtype=torch.float64).index_add_(0, bins, wgt.double())[:n_bins]
    flat = a.reshape(-1, h, w).float()
    E = torch.empty(flat.shape[0], n_bins, dtype=torch.float64)
    for s in range(0, flat.shape[0], chunk):
        x = flat[s:s + chunk]
        x = x - x.mean((-2, -1), keepdim=True)
        f = torch.fft.rfft2(x)
        p = (f.real.square() + f.imag.square()).reshape(x.shape[0], -1) * wk
        E[s:s + chunk] = torch.zeros(x.shape[0], n_bins + 1).index_add_(1, bins, p)[:, :n_bins].double()
    P = E / counts
    lead = a.shape[:-2]
    return P.numpy().reshape(*lead, n_bins), E.numpy().reshape(*lead, n_bins), centres


def spectral_centroid(P: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Centre of mass of the radially averaged spectrum P (..., B) over ``freqs`` (B,)."""
    tot = P.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (P * freqs).sum(-1) / tot, np.nan)


def low_frequency_share(E: np.ndarray, freqs: np.ndarray, cutoff: float = DEFAULT_CUTOFF) -> np.ndarray:
    """Share of the ring energy E (..., B) in rings with centre frequency <= ``cutoff``."""
    tot = E.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, E[..., freqs <= cutoff].sum(-1) / tot, np.nan)


def spectral_metrics(maps, n_bins: int | None = None, cutoff: float = DEFAULT_CUTOFF) -> dict[str, np.ndarray]:
    """``{"centroid": (...), "low_share": (...)}`` of maps (..., H, W)."""
    P, E, f = radial_spectrum(maps, n_bins)
    return {"centroid": spectral_centroid(P, f), "low_share": low_frequency_share(E, f, cutoff)}
