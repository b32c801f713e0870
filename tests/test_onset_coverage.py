"""Coverage of the hierarchical class-onset CI on synthetic classes with a known onset (small, fixed seed)."""
import numpy as np
import pytest

from diffxai import onset_coverage as oc

STEPS = np.round(np.linspace(0, 99, 20)).astype(int)


def test_simulated_curves_look_like_real_ones():
    rng = np.random.default_rng(0)
    p = oc.simulate_class(rng, STEPS, 5, 3)
    assert p.shape == (5, 3, 20) and (p >= 0).all() and (p <= 1).all()
    assert p[:, :, :3].mean() < 0.1 and p[:, :, -3:].mean() > 0.5


def test_truth_is_the_population_curve_onset():
    t = oc.truth(STEPS, n=20_000, image_sd=0.0, slope_sd=0.0, seed_sd=0.0)
    assert t["midpoint"] == pytest.approx(45.0, abs=0.05)
    assert t["onset"] == pytest.approx(45.0 - 1.317 / 0.3, abs=0.1)
    # image spread flattens the mean curve: its onset moves earlier, the midpoint stays (symmetric)
    t2 = oc.truth(STEPS, n=20_000, image_sd=6.0, slope_sd=0.0, seed_sd=0.0)
    assert t2["onset"] < t["onset"] - 1 and t2["midpoint"] == pytest.approx(45.0, abs=0.3)


def test_hierarchical_ci_coverage_and_width():
    df = oc.coverage(STEPS, [(10, 2)], n_rep=40, n_boot=199, seed=1, methods=("hier_percentile",),
                     log=lambda *a: None)
    cov = df.set_index("target").coverage
    assert 0.8 <= cov["onset"] <= 1.0 and 0.8 <= cov["midpoint"] <= 1.0, df
    widths = {}
    for sd in (1.0, 6.0):
        d = oc.coverage(STEPS, [(10, 2)], n_rep=10, n_boot=199, seed=2, methods=("hier_percentile",),
                        image_sd=sd, log=lambda *a: None)
        widths[sd] = d.set_index("target").mean_width["midpoint"]
    assert widths[6.0] > 2 * widths[1.0], widths
