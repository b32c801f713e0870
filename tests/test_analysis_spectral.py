"""Radial spectrum metrics on constructed maps."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from diffxai.analysis import spectral as SP


def test_white_noise_has_flat_radial_spectrum_and_midband_centroid():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(64, 64, 64, generator=g)
    P, E, f = SP.radial_spectrum(maps)
    mean_p = P.mean(0)
    # flat: every ring's mean power within 15 % of the overall mean (ring 0 has few coefficients)
    assert np.all(np.abs(mean_p[2:] / mean_p[2:].mean() - 1) < 0.15)
    c = SP.spectral_centroid(P, f)
    assert c.mean() == pytest.approx(0.25, abs=0.01)


def test_parseval_energy_and_dc_removed():
    a = np.random.default_rng(1).standard_normal((32, 32)) + 5.0
    P, E, f = SP.radial_spectrum(a)
    full = np.abs(np.fft.fft2(a - a.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij")
    inside = (np.hypot(fy, fx) <= 0.5) & (np.hypot(fy, fx) > 0)
    assert E.sum() == pytest.approx(full[inside].sum(), rel=1e-6)


def test_smooth_map_low_centroid_high_low_share():
    rng = np.random.default_rng(2)
    noise = rng.standard_normal((8, 96, 96))
    smooth = np.stack([ndimage.gaussian_filter(n, 6, mode="wrap") for n in noise])
    m_s, m_n = SP.spectral_metrics(smooth), SP.spectral_metrics(noise)
    assert np.all(m_s["centroid"] < 0.1) and np.all(m_n["centroid"] > 0.2)
    assert np.all(m_s["low_share"] > 0.9)
    # white noise: low share ~ area of the disc f <= 1/16 over the Nyquist disc = (1/8)^2
    assert m_n["low_share"].mean() == pytest.approx((1 / 8) ** 2, abs=0.01)


def test_single_frequency_lands_in_its_ring_and_leading_dims_kept():
    yy, xx = np.mgrid[0:64, 0:64]
    wave = np.cos(2 * np.pi * 8 * xx / 64)  # 0.125 cycles/px
    P, E, f = SP.radial_spectrum(np.broadcast_to(wave, (2, 3, 64, 64)))
    assert P.shape == (2, 3, 32)
    assert abs(f[np.argmax(E[0, 0])] - 0.125) <= 0.5 / 32
    assert SP.spectral_centroid(P, f)[0, 0] == pytest.approx(0.125, abs=0.5 / 32)


def test_constant_map_gives_nan():
    m = SP.spectral_metrics(np.ones((2, 16, 16)))
    assert np.isnan(m["centroid"]).all() and np.isnan(m["low_share"]).all()
