"""How coarse or fine is a map? Windowed radial power spectrum, centroid, low-frequency share.

Definitions, for a map ``a`` (H, W) (:func:`spectral_metrics`):

- the measure reads **where relevance lies**: ``r = |a|`` (a sign that flips from pixel to pixel is
  not fine structure of where the map looks; the signed map's spectrum would call it so);
- ``r`` minus its window-weighted mean (the DC term carries the total, not the spatial scale),
  times the separable 2-D **Hann window** ``w`` (the FFT treats the map as periodic: without the
  window the jump between opposite edges leaks power into every high frequency);
- ``F = fft2(w (r - mean_w r))``, power ``|F(fy, fx)|^2`` on the grid of ``numpy.fft.fftfreq``
  frequencies in cycles per pixel; radial frequency ``f = sqrt(fy^2 + fx^2)``;
- rings: ``n_bins`` bins of equal width on ``(0, 0.5]`` (0.5 = Nyquist); the corners beyond 0.5
  are left out so every ring is a full circle; default ``n_bins = min(H, W) // 2``;
  ``E_b`` = the ring's **energy** (summed power), ``P_b`` = its mean power (white noise: flat P);
- **spectral centroid** ``sum_b f_b E_b / sum_b E_b`` in cycles/px: the energy-weighted mean
  frequency (white noise -> the mean radius of the Nyquist disc, 1/3;
  a smooth blob -> near 0; a 2-px checkerboard -> near the corner frequency, clipped to <= 0.5);
- **low-frequency share**: ``sum_{f_b <= cutoff} E_b / sum_b E_b`` (default cutoff 1/16 cycles/px,
  structures of 16 px and more; white noise -> (1/8)^2).

:func:`radial_spectrum` is the generic core (signed input, optional window) that the theory's
clean-image spectra share. Batched with ``torch.fft.rfft2`` (the half-plane weighted 2x for the
mirrored columns).
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


def hann2d(h: int, w: int) -> torch.Tensor:
    """The separable (symmetric) 2-D Hann window (H, W), float32."""
    return torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))


def radial_spectrum(maps, n_bins: int | None = None, chunk: int = 256,
                    window: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps (..., H, W) -> (P (..., n_bins) mean power per ring, E (..., n_bins) ring energy, f_b).

    Each map loses its mean (``window=True``: its Hann-weighted mean, then times the Hann window,
    so the DC term is exactly 0). ``chunk`` maps at a time go through the FFT.
    """
    a = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.array(maps, copy=None, order="C"))
    h, w = a.shape[-2:]
    n_bins = int(n_bins or min(h, w) // 2)
    idx, wgt, centres = _ring_index(h, w, n_bins)
    bins = torch.where(idx >= 0, idx, n_bins)          # DC and corners go to a dropped extra bin
    wk = wgt.float()
    counts = torch.zeros(n_bins + 1, dtype=torch.float64).index_add_(0, bins, wgt.double())[:n_bins]
    flat = a.reshape(-1, h, w).float()
    win = hann2d(h, w) if window else None
    E = torch.empty(flat.shape[0], n_bins, dtype=torch.float64)
    for s in range(0, flat.shape[0], chunk):
        x = flat[s:s + chunk]
        if win is None:
            x = x - x.mean((-2, -1), keepdim=True)
        else:
            x = (x - (x * win).sum((-2, -1), keepdim=True) / win.sum()) * win
        f = torch.fft.rfft2(x)
        p = (f.real.square() + f.imag.square()).reshape(x.shape[0], -1) * wk
        E[s:s + chunk] = torch.zeros(x.shape[0], n_bins + 1).index_add_(1, bins, p)[:, :n_bins].double()
    P = E / counts
    lead = a.shape[:-2]
    return P.numpy().reshape(*lead, n_bins), E.numpy().reshape(*lead, n_bins), centres


def spectral_centroid(E: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Energy-weighted mean frequency of ring energies E (..., B) over ``freqs`` (B,); NaN for no energy."""
    tot = E.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (E * freqs).sum(-1) / np.where(tot > 0, tot, 1), np.nan)


def low_frequency_share(E: np.ndarray, freqs: np.ndarray, cutoff: float = DEFAULT_CUTOFF) -> np.ndarray:
    """Share of the ring energy E (..., B) in rings with centre frequency <= ``cutoff``."""
    tot = E.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, E[..., freqs <= cutoff].sum(-1) / np.where(tot > 0, tot, 1), np.nan)


def spectral_metrics(maps, n_bins: int | None = None, cutoff: float = DEFAULT_CUTOFF) -> dict[str, np.ndarray]:
    """``{"centroid": (...), "low_share": (...)}`` of ``|maps|`` (..., H, W), Hann-windowed (module doc)."""
    a = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.array(maps, copy=None, order="C"))
    _, E, f = radial_spectrum(a.abs(), n_bins, window=True)
    # float32 round-off leaves ~1e-12 of a constant map's energy: below that, the map has no structure
    scale = (a.abs().reshape(*a.shape[:-2], -1).double().pow(2).sum(-1)).numpy().reshape(E.shape[:-1])
    E = np.where((E.sum(-1) > 1e-9 * np.maximum(scale, 1e-300))[..., None], E, 0.0)
    return {"centroid": spectral_centroid(E, f), "low_share": low_frequency_share(E, f, cutoff)}
