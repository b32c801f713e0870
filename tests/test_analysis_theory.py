"""The theory's prediction (analysis.theory) on constructed spectra and images."""
import numpy as np
import pytest
import torch
from torch import nn

from diffxai.analysis import theory as TH


def _power_law_image(n=64, beta=2.0, seed=0):
    """Random-phase image whose power falls as f^-beta (3 channels)."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    amp = np.where(f > 0, np.maximum(f, 1 / n) ** (-beta / 2), 0)
    out = []
    for _ in range(3):
        spec = amp * np.exp(2j * np.pi * rng.random((n, n)))
        out.append(np.real(np.fft.ifft2(spec)))
    x = np.stack(out)
    return (x / np.abs(x).max()).astype(np.float32)


def test_crossover_of_a_power_law_spectrum_is_where_signal_meets_noise():
    f = (np.arange(32) + 0.5) * 0.5 / 32
    P = (1.0 / f ** 2)[None]                          # P(f) = f^-2, noise power 1
    ab = 1 / (1 + 1 / 0.2 ** 2)                       # ab f^-2 = (1 - ab) exactly at f = 0.2
    got = TH.crossover_frequency(P, f, [ab], 1.0)[0, 0]
    assert got == pytest.approx(0.2, abs=0.5 / 32)
    # more noise drowns more: f* rises with alpha_bar, from 0 (all drowned) to Nyquist (none)
    fs = TH.crossover_frequency(P, f, [1e-6, 0.1, 0.5, 0.9, 1 - 1e-9], 1.0)[0]
    assert fs[0] == 0.0 and fs[-1] == 0.5 and np.all(np.diff(fs) >= 0)


def test_theory_on_a_noised_power_law_image():
    x0 = _power_law_image()
    ab = np.array([0.05, 0.3, 0.7, 0.95, 0.999])
    m = TH.theory_metrics(x0[None], ab)
    assert m["crossover"].shape == (1, 5) and np.all(np.diff(m["crossover"][0]) > 0)
    assert np.all(np.diff(m["centroid"][0]) > 0)      # the visible part's centroid moves outward too
    # at f*, the noised image's ring power is twice the noise power (signal = noise)
    P, _, f, noise = TH.clean_spectrum(x0[None])
    k = 2
    fstar = m["crossover"][0, k]
    Pf = np.interp(fstar, f, P[0])
    assert ab[k] * Pf == pytest.approx((1 - ab[k]) * noise, rel=0.35)


def test_band_split_sends_each_grating_to_its_band():
    n = 32
    xx = np.arange(n)[None, :].repeat(n, 0)
    low = np.cos(2 * np.pi * 2 * xx / n)              # 1/16 cycles/px
    high = np.cos(2 * np.pi * 12 * xx / n)            # 3/8 cycles/px
    x = torch.as_tensor(np.stack([low + high] * 3)[None], dtype=torch.float32)
    lo, hi = TH.band_split(x, torch.tensor([0.2]))
    torch.testing.assert_close(lo + hi, x)
    np.testing.assert_allclose(lo[0, 0].numpy(), low, atol=1e-5)
    np.testing.assert_allclose(hi[0, 0].numpy(), high, atol=1e-5)


def test_band_scores_columns_follow_band_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    x = torch.randn(3, 3, 16, 16)
    t = torch.tensor([0, 1, 2])
    p = TH.band_scores(model, x, t, ["crossover", 0.1], np.array([0.5, 0.5, 0.5]), batch_size=2)
    assert p.shape == (3, 4) and TH.band_names(["crossover", 0.1]) == ["low@crossover", "high@crossover",
                                                                       "low@0.1", "high@0.1"]
    # a crossover at Nyquist keeps the whole input in the low band
    full = model(x).softmax(-1).gather(1, t[:, None])[:, 0].detach().numpy()
    np.testing.assert_allclose(p[:, 0], full, rtol=1e-4)
