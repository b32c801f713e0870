"""The per-class stage on a tiny class in the stores' layout (docs/DESIGN.md), with Captum as the attribute function."""
import numpy as np
import pytest
import torch
import xarray as xr
from captum.attr import IntegratedGradients, Occlusion
from torch import nn

from diffxai.analysis import aligned as AL
from diffxai.analysis import masks as MK
from diffxai.analysis import stage as ST
from diffxai.analysis import verdicts as V

H = W = 16
K, S, N_IMG = 6, 2, 2


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


def ig(model, x, t):
    return IntegratedGradients(model).attribute(x, target=t, n_steps=8).sum(1).detach()


def ig_grad_only(model, x, t):
    return IntegratedGradients(model, multiply_by_inputs=False).attribute(x, target=t, n_steps=8).sum(1).detach()


def occ(model, x, t):
    return Occlusion(model).attribute(x, target=t, sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4)).sum(1)


@pytest.fixture(scope="module")
def tiny_class():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (N_IMG, H, W, 3), dtype=np.uint8)
    x0 = ST.x0_from_rgb(rgb).numpy()                                    # (image, C, H, W)
    ab = np.linspace(0.05, 0.95, K)
    eps = rng.standard_normal((N_IMG, S, 1, 3, H, W)).astype(np.float32)
    x = np.sqrt(ab)[None, None, :, None, None, None] * x0[:, None, None] + np.sqrt(1 - ab)[None, None, :, None, None, None] * eps
    coords = {"step": np.arange(K) * 10, "t": ("step", 99 - np.arange(K) * 10), "alpha_bar": ("step", ab),
              "log_snr": ("step", np.log(ab / (1 - ab))), "seed": [0, 1], "image": np.arange(N_IMG)}
    noised = xr.Dataset({"x": (("image", "seed", "step", "channel", "y", "x"), x.astype(np.float32))}, coords=coords)
    noised.attrs["class_index"] = 2
    probs = xr.Dataset({"p_true": (("image", "seed", "step"), rng.random((N_IMG, S, K)))}, coords=coords)
    model = _model()
    xt = torch.as_tensor(x[:1].reshape(-1, 3, H, W).astype(np.float32))
    tg = torch.full((len(xt),), 2)
    attrs = {}
    for name, fn in (("integrated_gradients", ig), ("occlusion", occ)):
        a = fn(model, xt, tg).numpy().reshape(1, S, K, H, W)
        attrs[name] = xr.Dataset({"attribution": (("image", "seed", "step", "y", "x"), a),
                                  "target": (("image", "seed", "step"), np.full((1, S, K), 2))},
                                 coords={k: v for k, v in coords.items() if k != "image"} | {"image": [0]},
                                 attrs={"method": name, "class_index": 2})
    return noised, probs, attrs, rgb, model, eps


SETTINGS = {"subset": {"images": 1, "seeds": 1, "steps_every": 3},
            "faithfulness": {"fractions": [0, 0.25, 0.5, 1.0], "n_random": 2, "batch_size": 16},
            "enrichment": {"n_null": 4}, "masks": {"detail": {"sigma_fine": 0.5, "sigma_coarse": 1.5}}}


def test_analyze_class_layout_and_subset(tiny_class):
    noised, probs, attrs, rgb, model, _ = tiny_class
    ds = ST.analyze_class(noised, probs, attrs, rgb, model, SETTINGS, attribute_fn={"integrated_gradients": ig,
                          "occlusion": occ}, gradient_fn={"integrated_gradients": ig_grad_only})
    assert list(ds["xai_method"].values) == ["integrated_gradients", "occlusion"]
    assert ds["enrichment"].dims == ("xai_method", "image", "seed", "step", "mask", "part")
    assert list(ds["mask"].values) == list(MK.COMPUTED)
    # |map| always has relevance; a map with no positive part has a NaN 'pos' enrichment; an empty
    # mask (GrabCut on a noise image may fill the frame: no outline) is NaN, never a number
    ms = MK.class_masks(rgb, SETTINGS["masks"])
    full = [n for n in ms if ms[n][0].any()]
    assert np.isfinite(ds["enrichment"].sel(part="abs", mask=full)).all() and np.isfinite(ds["spectral_centroid"]).all()
    assert np.isnan(ds["enrichment"].sel(mask=[n for n in ms if n not in full])).all()
    assert "log_snr" in ds.coords and ds.sizes["step"] == K
    sub = ds["in_subset"].isel(xai_method=0).values
    assert sub.sum() == 3 and list(np.flatnonzero(sub[0, 0])) == [0, 3, 5]  # every 3rd position + the last
    auc = ds["deletion_auc"].sel(xai_method="integrated_gradients")
    assert auc.dims == ("image", "seed", "step", "fill", "order")
    assert list(ds["fill"].values) == ["baseline", "noise"]
    assert np.isfinite(auc.values[sub]).all() and np.isnan(auc.values[~sub]).all()
    assert list(ds["order"].values) == ["attribution", "random0", "random1", "input_abs"]
    rsub = ds["in_randomization_subset"].isel(xai_method=0).values
    assert list(np.flatnonzero(rsub[0, 0])) == [0, 5]                  # its own subset: every 50th + last
    rs = ds["randomization_spearman"].sel(xai_method="integrated_gradients").values
    np.testing.assert_allclose(rs[rsub][:, 0], 1.0, atol=1e-6)        # depth 'original' of a deterministic method
    assert np.isnan(rs[~rsub]).all()
    # each gradient method's own gradient-only control; Occlusion has no x factor and none
    g = ds["enrichment_gradient_only"]
    assert g.dims == ("xai_method", "image", "seed", "step", "mask", "part")
    gi = ds["spectral_centroid_gradient_only"].sel(xai_method="integrated_gradients").values
    assert np.isfinite(gi[sub]).all() and np.isnan(gi[~sub]).all()
    assert np.isnan(ds["spectral_centroid_gradient_only"].sel(xai_method="occlusion").values).all()
    # method-independent: one class-level copy, every unit
    for k in ("enrichment_input_abs", "spectral_centroid_input_abs", "p_true", "p_true_band"):
        assert "xai_method" not in ds[k].dims and ds[k].dims[:3] == ("image", "seed", "step"), k
        assert np.isfinite(ds[k].sel(part="abs", mask=full) if "part" in ds[k].dims else ds[k]).all(), k
    assert ds["crossover_frequency"].dims == ("image", "step")
    assert list(ds["band"].values) == ["low@crossover", "high@crossover"]
    assert ds["method_spearman"].dims == ("pair", "image", "seed", "step")
    assert list(ds["pair"].values) == ["integrated_gradients~occlusion"]
    assert ds["seed_spearman"].dims == ("xai_method", "image", "step")
    np.testing.assert_allclose(ds["p_true"].values, probs["p_true"].values[:1])
    # every stored variable is a metric of analysis.metrics (or one of its controls) with the dims it
    # declares, or a named auxiliary: nothing the stage writes goes undescribed
    from diffxai.analysis import metrics as ME
    for k in ds.data_vars:
        m = ME.described(k)
        assert m is not None or k in ME.AUXILIARY, f"{k} is not described in analysis.metrics"
        if m is not None and k == m.name:
            assert set(m.dims) <= set(ds[k].dims), (k, m.dims, ds[k].dims)
    made_here = {m.name for m in ME.METRICS} - {"stripes_minus_face"}     # that one needs stripes and face masks
    assert made_here - set(ds.data_vars) == set(), "a described metric the stage does not make"
    # the phase table reads the stage's output directly
    t = AL.phase_table(ds.sel(xai_method="integrated_gradients"), onset=25.0, variables=["enrichment"],
                       n_boot=50, before=10, around=5, after=10)
    assert V.enrichment_metric("outline") in set(t["metric"])


def test_the_tests_take_the_workflows_path(tiny_class, tmp_path):
    """analyze_class is the workflow's composition: per-method stores written and read back, the
    agreement store, stage.combine (what analysis_summary and the figures call)."""
    from diffxai.store import open_store, write_dataset
    noised, probs, attrs, rgb, model, _ = tiny_class
    s = dict(SETTINGS, randomization={"enabled": False}, faithfulness={"enabled": False})
    direct = ST.analyze_class(noised, probs, attrs, rgb, model, s, gradient_fn=ig_grad_only)
    stores = {m: open_store(write_dataset(ST.analyze_method(noised, attrs[m], rgb, model, s, probs=probs,
                                                            gradient_fn=ig_grad_only, shared=m == "integrated_gradients",
                                                            method=m), tmp_path / f"{m}.zarr"))
              for m in sorted(attrs)}
    agree = open_store(write_dataset(ST.analyze_agreement(attrs, s), tmp_path / "agreement.zarr"))
    via_stores = ST.combine(stores, agree)
    xr.testing.assert_allclose(via_stores.drop_attrs().load(), direct.drop_attrs())
    assert not hasattr(ST, "DEFAULTS")
    from diffxai import figures_analysis as FIG     # the figure reads the combined Dataset: theory, bands
    png = FIG.metric_figure(via_stores, {"onset": 25.0}, "tiny", tmp_path / "analysis.png", n_boot=20)
    assert png.stat().st_size > 10_000


def test_controls_are_the_inputs_magnitude_and_the_methods_own_gradient(tiny_class):
    from diffxai.analysis import controls as CT
    noised, _, attrs, rgb, model, _ = tiny_class
    seen = []

    def spy(m, x, t):
        seen.append(x.clone())
        return ig_grad_only(m, x, t)

    s = dict(SETTINGS, faithfulness={"enabled": False}, randomization={"enabled": False}, theory={"enabled": False})
    ds = ST.analyze_method(noised, attrs["integrated_gradients"], rgb, model, s, gradient_fn=spy)
    x = noised["x"].values[:1]
    torch.testing.assert_close(seen[0], torch.as_tensor(x[0, 0, [0, 3, 5]]))      # the subset's own inputs
    ref = CT.map_metrics(torch.as_tensor(np.abs(x).sum(3)).reshape(-1, H, W), np.zeros(S * K, int),
                         {m: ds["mask_pixels"].sel(mask=m).values.astype(bool) for m in ds["mask"].values},
                         ST.merged_settings(s))
    np.testing.assert_allclose(ds["enrichment_input_abs"].values.reshape(-1, *ds.enrichment.shape[-2:]),
                               ref["enrichment"])
    np.testing.assert_allclose(ds["spectral_centroid_input_abs"].values.ravel(), ref["spectral_centroid"])
    assert "p_true_band" not in ds and "crossover_frequency" not in ds
    occl = ST.analyze_method(noised, attrs["occlusion"], rgb, model, s, gradient_fn=spy, method="occlusion")
    assert "spectral_centroid_gradient_only" not in occl and len(seen) == 1


def test_noise_fill_is_the_steps_noise_alone():
    ab = np.array([0.19, 0.99])
    f = ST.noise_fill(ab, (2, 3, 64, 64), seed=0)
    np.testing.assert_allclose(f.flatten(1).std(1).numpy(), np.sqrt(1 - ab), rtol=0.05)
    torch.testing.assert_close(f, ST.noise_fill(ab, (2, 3, 64, 64), seed=0))


def test_user_face_and_stripes_masks_give_the_difference(tiny_class, tmp_path):
    noised, probs, attrs, rgb, model, _ = tiny_class
    face = np.zeros((N_IMG, H, W), bool)
    face[:, 2:6, 2:6] = True
    stripes = np.zeros((N_IMG, H, W), bool)
    stripes[:, 8:12] = True
    MK.write_masks({"face": face, "stripes": stripes}, tmp_path / "n02129604")   # per-class subfolder
    noised = noised.assign_attrs(cls="n02129604")
    s = dict(SETTINGS, masks={"folder": str(tmp_path)}, faithfulness={"enabled": False})
    ds = ST.analyze_method(noised, attrs["occlusion"], rgb, None, s)
    assert set(ds["mask"].values) == set(MK.COMPUTED) | {"face", "stripes"}
    d = ds["enrichment_vs_null"].sel(mask="stripes") - ds["enrichment_vs_null"].sel(mask="face")
    np.testing.assert_allclose(ds["stripes_minus_face"].values, d.values)
    assert np.isfinite(ds["enrichment_vs_null"].sel(mask="edges", part="abs").values).all()


def test_subset_mask_explicit_steps():
    m = ST.subset_mask((2, 3, 5), np.array([0, 10, 20, 30, 40]), {"images": 2, "seeds": 1, "steps": [10, 40]})
    assert m.sum() == 4 and m[:, 0][:, [1, 4]].all()


def test_subset_around_the_onset_on_all_seeds():
    steps = np.arange(0, 100, 5)
    sub = {"images": None, "seeds": None, "steps": [0], "steps_relative_to_onset": [-15, 0, 15]}
    m = ST.subset_mask((2, 4, len(steps)), steps, sub, onset=52.0)
    assert m.all(axis=(0, 1)).sum() == m.any(axis=(0, 1)).sum()              # every image, every seed
    assert list(steps[m[0, 0]]) == [0, 35, 50, 65]                           # 52-15 -> 35, 52 -> 50, 67 -> 65
    assert list(steps[ST.subset_mask((1, 1, len(steps)), steps, sub, onset=None)[0, 0]]) == [0]   # no onset
    assert list(steps[ST.subset_steps(steps, {"steps_relative_to_onset": [30]}, 90.0)]) == [95]  # clipped


def test_summarize_class_gives_tables_and_verdicts(tiny_class):
    noised, probs, attrs, rgb, model, _ = tiny_class
    s = dict(SETTINGS, randomization={"enabled": False}, aligned={"n_boot": 50, "before": 10, "around": 5, "after": 10})
    ds = ST.analyze_class(noised, probs, attrs, rgb, model, s)
    onset_row = {"onset": 25.0, "threshold_cross": 45.0, "threshold_cross_lo": 42.0, "threshold_cross_hi": 55.0}
    table, verdicts = ST.summarize_class(ds, onset_row, "n02123394", s)
    assert set(table["xai_method"]) == {"integrated_gradients", "occlusion"}
    assert {"enrichment[mask=outline,part=abs]", "deletion_auc[fill=noise,order=attribution]",
            "method_spearman[pair=integrated_gradients~occlusion]"} <= set(table["metric"])
    v = verdicts.set_index(["xai_method", "claim"])["verdict"]
    assert v[("occlusion", "faces at the rise")] == "undecided (no face mask)"
    assert v[("occlusion", "proper classification from 40-60")] == "supported"
    assert (verdicts["rule"].str.len() > 20).all()
    assert {"spectral_centroid_minus_input_abs", "spectral_centroid_minus_theory",
            "enrichment_minus_input_abs[mask=outline,part=abs]", "p_true_band[band=low@crossover]"} <= set(table["metric"])
    assert "spectral_centroid trend beyond noising's prediction" in set(verdicts["claim"])
    assert v[("occlusion", "what carries the spectral_centroid trend")].startswith("undecided (")
    assert verdicts["scope"].str.startswith("image (1 image, 2 seeds)").any()
    assert {"enrichment_vs_null[mask=outline,part=abs]", "enrichment_null[mask=detail,part=abs]"} <= set(table["metric"])


def test_method_filters_for_costly_checks(tiny_class):
    noised, _, attrs, rgb, model, _ = tiny_class
    s = dict(SETTINGS, faithfulness={"enabled": False}, theory={"enabled": False},
             randomization={"methods": ["integrated_gradients"]})
    ds = ST.analyze_method(noised, attrs["occlusion"], rgb, model, s, attribute_fn=occ)
    assert "randomization_spearman" not in ds
    s["randomization"] = {"methods": None}                               # null = every method
    ds = ST.analyze_method(noised, attrs["occlusion"], rgb, model, s, attribute_fn=occ, method="occlusion")
    assert "randomization_spearman" in ds
    s = dict(s, randomization={"enabled": False},
             faithfulness={"methods": ["integrated_gradients"], "fractions": [0, 1.0], "n_random": 0})
    assert "deletion_auc" not in ST.analyze_method(noised, attrs["occlusion"], rgb, model, s, method="occlusion")
    assert "deletion_auc" in ST.analyze_method(noised, attrs["integrated_gradients"], rgb, model, s,
                                               method="integrated_gradients")


def test_result_round_trips_through_a_zarr_store(tiny_class, tmp_path):
    from diffxai.store import open_store, write_dataset
    noised, probs, attrs, rgb, model, _ = tiny_class
    s = dict(SETTINGS, randomization={"enabled": False})
    ds = ST.analyze_class(noised, probs, attrs, rgb, model, s, gradient_fn=ig_grad_only)
    back = open_store(write_dataset(ds, tmp_path / "a.zarr")).load()
    xr.testing.assert_allclose(back.drop_attrs(), ds.drop_attrs())


def test_engine_adapter_calls_the_contract_signature(monkeypatch):
    """The engine's signature: maps, stats = attribute(model, inputs, targets, spec, options)."""
    import sys
    import types
    calls = []
    fake = types.ModuleType("diffxai.attribution")

    def attribute(model, inputs, targets, spec, options, **kw):
        calls.append((model, spec, options))
        return inputs.sum(1), {"batch_size": 1}

    fake.attribute = attribute
    monkeypatch.setitem(sys.modules, "diffxai.attribution", fake)
    fn = ST.engine_attribute_fn("SPEC", "OPTS")
    out = fn("MODEL", torch.ones(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 4, 4) and calls == [("MODEL", "SPEC", "OPTS")]
