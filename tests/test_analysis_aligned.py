"""Bootstrap CIs, onset phases, phase table and the verdict rules."""
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
    return xr.Dataset({"enrichment": (("image", "seed", "step", "mask", "part"), v)},
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
    out = AL.metric_vs_step(_ds(-0.5, 0.5)["enrichment"], n_boot=200)
    assert out["mean"].dims == ("step", "mask", "part")
    assert "log_snr" in out.coords and out.attrs["n_seeds"] == 4


def test_phases():
    lab = AL.phase_of_steps(range(100), 50.0)
    assert (lab == "before").sum() == 40 and (lab == "after").sum() == 39 and (lab == "around").sum() == 11
    assert (AL.phase_of_steps(range(10), np.nan) == "").all()


def test_phase_table_and_outline_verdicts():
    sup = AL.phase_table(_ds(-0.5, 0.5), 50.0, n_boot=500)
    assert V.enrichment_metric("outline") in set(sup["metric"])
    row = sup.set_index("metric").loc[V.enrichment_metric("outline")]
    assert row["after_minus_before"] < 0 and row["after_minus_before_hi"] < 0
    assert V.outline_first(sup, "c").verdict == V.SUPPORTED
    assert V.outline_first(AL.phase_table(_ds(0.5, -0.5), 50.0, n_boot=500), "c").verdict == V.NOT_SUPPORTED
    flat = V.outline_first(AL.phase_table(_ds(0.0, 0.0, noise=0.5), 50.0, n_boot=500), "c")
    assert flat.verdict.startswith("undecided") and "CI" in flat.rule


def test_face_and_stripes_need_masks():
    t = AL.phase_table(_ds(-0.5, 0.5), 50.0, n_boot=100)
    v = V.faces_at_rise(t, "n02123394", {"outline", "detail"})
    assert v.verdict == "undecided (no face mask)"
    assert V.stripes_then_face(t, "n02129604", {"face"}).verdict == "undecided (no stripes mask)"
    vs = V.class_verdicts("n02129604", t, None, {"outline", "detail"})
    assert [x.claim for x in vs] == ["outline first, details later", "stripes then face"]


def test_face_rule_with_a_face_row():
    t = pd.DataFrame([{"metric": V.enrichment_metric("face"), "around_minus_before": 0.5,
                       "around_minus_before_lo": 0.2, "around_minus_before_hi": 0.8,
                       "around": 1.6, "around_lo": 1.3, "around_hi": 1.9}])
    assert V.faces_at_rise(t, "c", {"face"}).verdict == V.SUPPORTED
    t.loc[0, ["around_lo", "around_hi"]] = [0.5, 0.9]
    assert V.faces_at_rise(t, "c", {"face"}).verdict == V.NOT_SUPPORTED


@pytest.mark.parametrize("ci,expected", [((45, 50, 55), V.SUPPORTED), ((70, 65, 75), V.NOT_SUPPORTED),
                                         ((58, 55, 63), "undecided (CI overlaps the window's edge)"),
                                         ((np.nan, np.nan, np.nan), "undecided (p(true) never crosses 0.5)")])
def test_proper_classification_window(ci, expected):
    row = dict(zip(("threshold_cross", "threshold_cross_lo", "threshold_cross_hi"), ci))
    v = V.proper_classification(row, "c")
    assert v.verdict == expected and "[40, 60]" in v.rule
    assert list(V.verdict_frame([v]).columns) == ["claim", "cls", "verdict", "rule", "evidence"]


def _spec_table(own, diff):
    rows = []
    for name, (m, lo, hi) in (("spectral_centroid", own), ("spectral_centroid_minus_gradient_only", diff)):
        rows.append({"metric": name, "after_minus_before": m, "after_minus_before_lo": lo, "after_minus_before_hi": hi})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("own,diff,expected", [((0.1, 0.05, 0.15), (0.08, 0.02, 0.1), V.SUPPORTED),
                                               ((0.1, 0.05, 0.15), (0.0, -0.02, 0.02), V.NOT_SUPPORTED),
                                               ((0.0, -0.1, 0.1), (0.0, -0.02, 0.02), "undecided (no trend in the map)")])
def test_spectral_trend_survives_control(own, diff, expected):
    vs = V.spectral_trend_survives(_spec_table(own, diff), "c", controls=("gradient_only", "input"))
    assert vs[0].verdict == expected
    assert vs[1].verdict == "undecided (no input control)"


def test_combine_methods():
    f = pd.DataFrame([{"xai_method": m, "cls": "c", "claim": "x", "verdict": v}
                      for m, v in (("ig", V.SUPPORTED), ("occ", V.SUPPORTED))] +
                     [{"xai_method": m, "cls": "c", "claim": "y", "verdict": v}
                      for m, v in (("ig", V.SUPPORTED), ("occ", V.NOT_SUPPORTED))] +
                     [{"xai_method": m, "cls": "c", "claim": "z", "verdict": V.undecided("no face mask")}
                      for m in ("ig", "occ")])
    out = V.combine_methods(f).set_index("claim")["verdict"]
    assert out["x"] == V.SUPPORTED
    assert out["y"].startswith("undecided (methods disagree: ig: supported; occ: not supported")
    assert out["z"] == "undecided (no face mask)", "the same undecided everywhere stays itself"


def test_one_unit_has_no_ci_and_decides_nothing():
    """One seed of one image: the mean exists, the CI does not, so no claim is decided from it."""
    import pandas as pd

    from diffxai.analysis.aligned import mean_ci
    from diffxai.analysis.verdicts import enrichment_metric, outline_first

    m, lo, hi = mean_ci(np.array([[[1.0, 2.0]]]))  # (image=1, seed=1, 2 values)
    assert np.allclose(m, [1.0, 2.0]) and np.isnan(lo).all() and np.isnan(hi).all()
    m, lo, hi = mean_ci(np.array([[[1.0], [3.0]]]))  # two seeds: a CI
    assert np.isfinite(lo).all() and lo[0] <= 2.0 <= hi[0]
    rows = [{"metric": enrichment_metric(mask), "after_minus_before": change,
             "after_minus_before_lo": np.nan, "after_minus_before_hi": np.nan}
            for mask, change in (("outline", -0.5), ("detail", 0.4))]
    v = outline_first(pd.DataFrame(rows), "tiger")
    assert v.verdict == "undecided (no CI: fewer than 2 (image, seed) units)"
