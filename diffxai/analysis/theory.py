"""What forward noising alone predicts: the scale below which the step's noise drowns the image.

Natural images' power falls with spatial frequency roughly as a power law, while the forward
process adds white noise of equal power at every frequency; so as the noise grows the fine scales
are drowned first and only ever coarser structure stays visible. In the Gaussian (linear-score)
model of diffusion (Wang and Vastola 2023, "The hidden linear structure in score-based models";
also "Diffusion models generate images like painters") each Fourier mode of variance ``P`` is
kept by the optimal denoiser in the share ``alpha_bar P / (alpha_bar P + 1 - alpha_bar)``: a
mode is visible when its signal power exceeds the noise power. "Outline first" is, to that extent,
what noising alone predicts; the maps show more than noising only if their trend exceeds this.

Definitions, for a clean image ``x0`` (C, H, W) in DDPM space [-1, 1] and a step with ``alpha_bar``:

- clean spectrum ``P_b``: each channel Hann-windowed and mean-free (:func:`spectral.radial_spectrum`,
  ``window=True``), mean power per ring b, averaged over channels; ``E_b`` the ring energy likewise;
- noise power ``N = sum(w^2)``: the expected power of every coefficient of windowed unit white
  noise (``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps``, ``eps ~ N(0, 1)`` per pixel and channel);
- per-ring signal-to-noise ``SNR_b = ab P_b / ((1 - ab) N)``;
- **crossover frequency** ``f*``: going outward from the coarsest ring, where ``SNR_b`` first falls
  below 1 (log-linear interpolation between the two ring centres around the crossing); 0.5 (Nyquist)
  when no ring falls below 1, 0 when the coarsest already does. Cycles/px, like the maps' centroid;
- **predicted centroid** ``sum_b f_b g_b E_b / sum_b g_b E_b`` with the Wiener gain
  ``g_b = SNR_b / (1 + SNR_b)``: the energy-weighted mean frequency of what of the clean image the
  noise leaves (the linear model's denoised image);
- **band-filtered inputs** (:func:`band_split`): ideal circular low-pass ``f <= cutoff`` of the
  noised input (FFT, the DC term in the low band) and its complement (``x_t - low``); classifying
  both shows which band carries the class at each step.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DiffxaiError
from . import spectral as SPE


def clean_spectrum(x0, n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """x0 (N, C, H, W) -> (P (N, B), E (N, B) channel-mean ring power and energy, f_b (B,), noise power N)."""
    x = torch.as_tensor(np.asarray(x0, np.float32)) if not isinstance(x0, torch.Tensor) else x0.float()
    if x.ndim != 4:
        raise DiffxaiError(f"theory: clean images must be (N, C, H, W), got shape {tuple(x.shape)}")
    P, E, f = SPE.radial_spectrum(x, n_bins, window=True)
    noise = float(SPE.hann2d(*x.shape[-2:]).double().pow(2).sum())
    return P.mean(1), E.mean(1), f, noise


def snr(P: np.ndarray, alpha_bar, noise_power: float) -> np.ndarray:
    """Per-ring SNR (N, K, B) of clean ring powers P (N, B) at each alpha_bar (K,)."""
    ab = np.asarray(alpha_bar, np.float64)[None, :, None]
    with np.errstate(divide="ignore"):
        return ab * P[:, None, :] / ((1.0 - ab) * noise_power)


def crossover_frequency(P: np.ndarray, freqs: np.ndarray, alpha_bar, noise_power: float) -> np.ndarray:
    """f* (N, K): where the per-ring SNR first falls below 1 going outward (module doc)."""
    r = snr(P, alpha_bar, noise_power)
    below = r < 1.0
    first = np.argmax(below, -1)                      # first ring below 1 (0 if none: fixed next)
    none = ~below.any(-1)
    lr = np.log(np.maximum(r, 1e-300))
    prev = np.maximum(first - 1, 0)
    a = np.take_along_axis(lr, prev[..., None], -1)[..., 0]          # log SNR >= 0 before the crossing
    b = np.take_along_axis(lr, first[..., None], -1)[..., 0]         # log SNR < 0 at it
    f0, f1 = freqs[prev], freqs[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(a > b, a / (a - b), 0.0)
    out = f0 + np.clip(t, 0, 1) * (f1 - f0)
    out = np.where(first == 0, 0.0, out)
    return np.where(none, 0.5, out)


def predicted_centroid(P: np.ndarray, E: np.ndarray, freqs: np.ndarray, alpha_bar, noise_power: float) -> np.ndarray:
    """Energy-weighted mean frequency (N, K) of the clean energy E kept by the Wiener gain."""
    r = snr(P, alpha_bar, noise_power)
    kept = np.where(np.isinf(r), 1.0, r / (1.0 + r)) * E[:, None, :]
    return SPE.spectral_centroid(kept, freqs)


def theory_metrics(x0, alpha_bar, n_bins: int | None = None) -> dict[str, np.ndarray]:
    """``{"crossover": (N, K), "centroid": (N, K)}`` for clean images (N, C, H, W) and steps' alpha_bar (K,)."""
    P, E, f, noise = clean_spectrum(x0, n_bins)
    return {"crossover": crossover_frequency(P, f, alpha_bar, noise),
            "centroid": predicted_centroid(P, E, f, alpha_bar, noise)}


def band_split(x: torch.Tensor, cutoff) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N, C, H, W), cutoffs (N,) or scalar in cycles/px -> (low-pass, high-pass = x - low);
    a cutoff >= 0.5 keeps the whole input (the corners beyond Nyquist too) in the low band."""
    n, _, h, w = x.shape
    f = torch.as_tensor(np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]), dtype=torch.float32)
    c = torch.as_tensor(cutoff, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(n, 1, 1, 1)
    c = torch.where(c >= 0.5, torch.inf, c)          # Nyquist (nothing drowned): the corners too
    keep = (f[None, None] <= c).to(x.dtype)
    low = torch.fft.irfft2(torch.fft.rfft2(x) * keep, s=(h, w))
    return low, x - low


def cutoff_label(cutoff) -> str:
    """``crossover`` or the number as written (``0.0625``)."""
    return cutoff if isinstance(cutoff, str) else f"{float(cutoff):g}"


def band_names(cutoffs: Sequence) -> list[str]:
    """Labels along the ``band`` dim: ``low@{cutoff}``, ``high@{cutoff}`` per cutoff."""
    return [f"{side}@{cutoff_label(c)}" for c in cutoffs for side in ("low", "high")]


@torch.no_grad()
def band_scores(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, cutoffs: Sequence,
                crossover: np.ndarray, batch_size: int = 64, output: str = "softmax") -> np.ndarray:
    """p(target) (N, 2 * len(cutoffs)) of the low- and high-pass inputs (order of :func:`band_names`);
    a cutoff ``"crossover"`` takes each input's own ``crossover`` (N,)."""
    from .faithfulness import target_scores

    cols = []
    for c in cutoffs:
        if isinstance(c, str) and c != "crossover":
            raise DiffxaiError(f"theory.band_cutoffs: {c!r} is not 'crossover' or a number")
        cut = np.asarray(crossover, np.float32) if c == "crossover" else np.full(len(x), float(c), np.float32)
        low_high = [np.empty(len(x), np.float64), np.empty(len(x), np.float64)]
        for s in range(0, len(x), batch_size):
            sl = slice(s, s + batch_size)
            for j, part in enumerate(band_split(x[sl], cut[sl])):
                low_high[j][sl] = target_scores(model, part, targets[sl], output).cpu().numpy()
        cols += low_high
    return np.stack(cols, -1)
