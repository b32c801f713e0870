"""Radial spectrum metrics on constructed maps."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from diffxai.analysis import spectral as SP


def test_white_noise_has_flat_radial_spectrum_and_disc_mean_centroid():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(64, 64, 64, generator=g)
    P, E, f = SP.radial_spectrum(maps)
    mean_p = P.mean(0)
    # flat: every ring's mean power within 15 % of the overall mean (ring 0 has few coefficients)
    assert np.all(np.abs(mean_p[2:] / mean_p[2:].mean() - 1) < 0.15)
    # energy-weighted: the mean radius of the uniformly filled Nyquist disc, (2/3) * 0.5
    assert SP.spectral_centroid(E, f).mean() == pytest.approx(1 / 3, abs=0.01)
    # |white noise| is white too: the map measure gives the same, windowed or not
    assert SP.spectral_metrics(maps)["centroid"].mean() == pytest.approx(1 / 3, abs=0.015)


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
    smooth -= smooth.min((1, 2), keepdims=True)    # relevance >= 0: |map| is the map itself
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
    assert SP.spectral_centroid(E, f)[0, 0] == pytest.approx(0.125, abs=0.5 / 32)


def test_constant_map_gives_nan():
    m = SP.spectral_metrics(np.ones((2, 16, 16)))
    assert np.isnan(m["centroid"]).all() and np.isnan(m["low_share"]).all()


def _blob(n=64, sigma=6.0):
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    return np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2))


def test_known_answers_blob_checkerboard_and_two_gratings():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    checker = (((yy // 2) + (xx // 2)) % 2).astype(float)   # 2-px squares: fundamental at (1/4, 1/4)
    low = 1 + np.cos(2 * np.pi * 4 * xx / n)                 # 1/16 cycles/px
    high = 1 + np.cos(2 * np.pi * 20 * xx / n)               # 5/16 cycles/px
    m = SP.spectral_metrics(np.stack([_blob(), checker, low, high]))
    c = m["centroid"]
    assert c[0] < 0.04                                       # a smooth blob: coarse
    assert c[1] == pytest.approx(np.hypot(0.25, 0.25), abs=0.03)
    assert c[2] == pytest.approx(4 / n, abs=0.02) and c[3] == pytest.approx(20 / n, abs=0.02)
    assert m["low_share"][0] > 0.9 and m["low_share"][1] < 0.05 and m["low_share"][3] < 0.05


def test_sign_flips_are_not_fine_structure_and_the_window_removes_edge_leakage():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    flips = _blob() * np.where((yy + xx) % 2 == 0, 1.0, -1.0)   # relevance in a blob, signs alternating
    assert SP.spectral_metrics(flips)["centroid"] == pytest.approx(SP.spectral_metrics(_blob())["centroid"])
    ramp = xx / n                                             # smooth, but a jump across the periodic edge
    _, E_raw, f = SP.radial_spectrum(ramp)
    assert SP.spectral_metrics(ramp)["centroid"] < 0.5 * SP.spectral_centroid(E_raw, f)
