"""CIs over (image, seed) units, onset phases and the phase table (the verdict rules: test_analysis_verdicts.py)."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from diffxai.analysis import aligned as AL
from diffxai.analysis import verdicts as V


def _ds(outline_slope, detail_slope, n_img=2, n_seed=4, K=100, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    k = np.arange(K)
    base = np.stack([1 + outline_slope * (k - 50) / 50, 1 + detail_slope * (k - 50) / 50])  # (mask, step)
    v = base[None, None] + noise * rng.standard_normal((n_img, n_seed, 2, K))
    v = np.moveaxis(v, 2, 3)[..., None]                                   # (image, seed, step, mask, part)
    ab = np.linspace(0.01, 0.99, K)
    return xr.Dataset({"enrichment_vs_null": (("image", "seed", "step", "mask", "part"), v)},
                      coords={"step": k, "log_snr": ("step", np.log(ab / (1 - ab))),
                              "mask": ["outline", "detail"], "part": ["abs"]})


def test_bootstrap_ci_covers_mean_and_shrinks_with_units():
    rng = np.random.default_rng(0)
    small = rng.standard_normal((1, 4, 3))
    big = rng.standard_normal((10, 40, 3))
    m, lo, hi = AL.mean_ci(small, 500)
    assert np.all(lo <= m) and np.all(m <= hi)
    mb, lob, hib = AL.mean_ci(big, 500)
    assert np.all(hib - lob < hi - lo)
    # one image, identical seeds -> zero-width CI
    m1, lo1, hi1 = AL.mean_ci(np.ones((1, 4, 2)), 100)
    np.testing.assert_allclose([lo1, hi1], 1.0)


def test_hierarchical_bootstrap_resamples_images_first():
    v = np.zeros((2, 3, 1))
    v[1] = 10.0                                # image means 0 and 10; seeds identical within images
    b = AL.bootstrap_means(v, 4000, seed=1)[:, 0]
    assert set(np.unique(b)) <= {0.0, 5.0, 10.0}
    assert (b == 0).mean() == pytest.approx(0.25, abs=0.03)


def test_metric_vs_step_keeps_log_snr():
    out = AL.metric_vs_step(_ds(-0.5, 0.5)["enrichment_vs_null"], n_boot=200)
    assert out["mean"].dims == ("step", "mask", "part")
    assert "log_snr" in out.coords and out.attrs["n_seeds"] == 4


def test_phases():
    lab = AL.phase_of_steps(range(100), 50.0)
    assert (lab == "before").sum() == 40 and (lab == "after").sum() == 39 and (lab == "around").sum() == 11
    assert (AL.phase_of_steps(range(10), np.nan) == "").all()


def test_phase_table_and_outline_verdicts():
    sup = AL.phase_table(_ds(-0.5, 0.5), 50.0)
    row = sup.set_index("metric").loc[V.vs_null_metric("outline")]
    assert row["after_minus_before"] < 0 and row["after_minus_before_hi"] < 0
    assert row["n_units"] == 8 and row["n_images"] == 2 and row["ci"] == "t"
    v = V.outline_first(sup, "c")
    assert v.verdict == V.SUPPORTED and v.scope == "class (2 images)"
    assert V.outline_first(AL.phase_table(_ds(0.5, -0.5), 50.0), "c").verdict.startswith(V.NOT_SUPPORTED)
    flat = V.outline_first(AL.phase_table(_ds(0.0, 0.0, noise=0.5), 50.0), "c")
    assert not flat.verdict.startswith("supported") and "CI" in flat.rule
    one = V.outline_first(AL.phase_table(_ds(-0.5, 0.5, n_img=1), 50.0), "c")
    assert one.verdict == V.SUPPORTED and one.scope == "image (1 image, 4 seeds)"


def test_t_interval_known_answers():
    t1 = 12.706204736174707                                  # t_0.975 with 1 df
    m, lo, hi, n = AL.t_interval(np.array([[[1.0], [3.0]]]))   # one image, two seeds
    assert n[0] == 2 and m[0] == 2.0 and hi[0] - m[0] == pytest.approx(t1)
    v = np.array([[0.0, 2.0], [10.0, 12.0]])[..., None]       # two images: units are image means 1, 11
    m, lo, hi, n = AL.t_interval(v)
    assert n[0] == 2 and m[0] == 6.0 and hi[0] - m[0] == pytest.approx(t1 * 10 / np.sqrt(2) / np.sqrt(2))
    v = np.array([[1.0, np.nan], [np.nan, np.nan]])[..., None]  # one finite unit: no CI
    m, lo, hi, n = AL.t_interval(v)
    assert m[0] == 1.0 and np.isnan(lo[0]) and np.isnan(hi[0])
    assert AL.scope(1, 4) == "image (1 image, 4 seeds)" and AL.scope(3, 12) == "class (3 images)"


def test_percentile_interval_still_selectable_and_bad_method_raises():
    from diffxai.errors import DiffxaiError
    m, lo, hi = AL.mean_ci(np.array([[[1.0], [3.0]]]), 200, ci="percentile")
    assert 1.0 <= lo[0] <= hi[0] <= 3.0                      # the range of two values at most
    with pytest.raises(DiffxaiError):
        AL.mean_ci(np.ones((1, 2, 1)), ci="bca")


def test_one_unit_has_no_ci_and_decides_nothing():
    """One seed of one image: the mean exists, the CI does not, so no claim is decided from it."""
    m, lo, hi = AL.mean_ci(np.array([[[1.0, 2.0]]]))  # (image=1, seed=1, 2 values)
    assert np.allclose(m, [1.0, 2.0]) and np.isnan(lo).all() and np.isnan(hi).all()
    t = AL.phase_table(_ds(-0.5, 0.5, n_img=1, n_seed=1), 50.0)
    assert (t["n_units"] == 1).all() and t["after_minus_before_lo"].isna().all()
    v = V.outline_first(t, "tiger")
    assert v.verdict.startswith("undecided (outline change: 1 (image, seed) unit")
