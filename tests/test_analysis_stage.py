"""The per-class stage on a tiny class in the CONTRACT.md layout, with Captum as the attribute function."""
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
                          "occlusion": occ}, gradient_fn=ig_grad_only)
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
    assert auc.dims == ("image", "seed", "step", "order")
    assert np.isfinite(auc.values[sub]).all() and np.isnan(auc.values[~sub]).all()
    assert list(ds["order"].values) == ["attribution", "random0", "random1", "input_abs"]
    rsub = ds["in_randomization_subset"].isel(xai_method=0).values
    assert list(np.flatnonzero(rsub[0, 0])) == [0, 5]                  # its own subset: every 50th + last
    rs = ds["randomization_spearman"].sel(xai_method="integrated_gradients").values
    np.testing.assert_allclose(rs[rsub][:, 0], 1.0, atol=1e-6)        # depth 'original' of a deterministic method
    assert np.isnan(rs[~rsub]).all()
    # the gradient-only control does not depend on the method: one class-level variable
    assert ds["spectral_centroid_gradient_only"].dims == ("image", "seed", "step")
    assert np.isfinite(ds["spectral_centroid_gradient_only"].values[sub]).all()
    assert np.isnan(ds["spectral_centroid_gradient_only"].values[~sub]).all()
    assert ds["method_spearman"].dims == ("pair", "image", "seed", "step")
    assert list(ds["pair"].values) == ["integrated_gradients~occlusion"]
    assert ds["seed_spearman"].dims == ("xai_method", "image", "step")
    assert ds["p_true"].dims == ("image", "seed", "step")
    np.testing.assert_allclose(ds["p_true"].values, probs["p_true"].values[:1])
    # the phase table reads the stage's output directly
    t = AL.phase_table(ds.sel(xai_method="integrated_gradients"), onset=25.0, variables=["enrichment"],
                       n_boot=50, before=10, around=5, after=10)
    assert V.enrichment_metric("outline") in set(t["metric"])


def test_noise_only_control_sees_the_noise_alone(tiny_class):
    noised, _, attrs, rgb, model, eps = tiny_class
    seen = []

    def spy(m, x, t):
        seen.append(x.clone())
        return ig(m, x, t)

    s = dict(SETTINGS, faithfulness={"enabled": False}, randomization={"enabled": False},
             controls={"noise_only": True, "gradient_only": False})
    ST.analyze_method(noised, attrs["integrated_gradients"], rgb, model, s, attribute_fn=spy)
    ab = noised["alpha_bar"].values
    expect = torch.as_tensor(np.sqrt(1 - ab[[0, 3, 5]])[:, None, None, None] * eps[0, 0, 0])
    torch.testing.assert_close(seen[0], expect.float(), rtol=1e-4, atol=1e-5)


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


def test_summarize_class_gives_tables_and_verdicts(tiny_class):
    noised, probs, attrs, rgb, model, _ = tiny_class
    s = dict(SETTINGS, randomization={"enabled": False}, aligned={"n_boot": 50, "before": 10, "around": 5, "after": 10})
    ds = ST.analyze_class(noised, probs, attrs, rgb, model, s)
    onset_row = {"onset": 25.0, "threshold_cross": 45.0, "threshold_cross_lo": 42.0, "threshold_cross_hi": 55.0}
    table, verdicts = ST.summarize_class(ds, onset_row, "n02123394", s)
    assert set(table["xai_method"]) == {"integrated_gradients", "occlusion"}
    assert {"enrichment[mask=outline,part=abs]", "deletion_auc[order=attribution]",
            "method_spearman[pair=integrated_gradients~occlusion]"} <= set(table["metric"])
    v = verdicts.set_index(["xai_method", "claim"])["verdict"]
    assert v[("occlusion", "faces at the rise")] == "undecided (no face mask)"
    assert v[("occlusion", "proper classification from 40-60")] == "supported"
    assert (verdicts["rule"].str.len() > 20).all()
    assert "spectral_centroid_minus_input" in set(table["metric"])
    assert "spectral_centroid trend survives the input control" in set(verdicts["claim"])
    assert v[("occlusion", "spectral_centroid trend survives the gradient_only control")] == "undecided (no gradient_only control)"
    assert verdicts["scope"].str.startswith("image (1 image, 2 seeds)").any()
    assert {"enrichment_vs_null[mask=outline,part=abs]", "enrichment_null[mask=detail,part=abs]"} <= set(table["metric"])


def test_method_filters_for_costly_checks(tiny_class):
    noised, _, attrs, rgb, model, _ = tiny_class
    s = dict(SETTINGS, faithfulness={"enabled": False},
             randomization={"methods": ["integrated_gradients"]}, controls={"noise_only_methods": []})
    ds = ST.analyze_method(noised, attrs["occlusion"], rgb, model, s, attribute_fn=occ)
    assert "randomization_spearman" not in ds and "spectral_centroid_noise_only" not in ds
    s["controls"] = {"noise_only_methods": None}                         # null = every method
    ds = ST.analyze_method(noised, attrs["occlusion"], rgb, model, s, attribute_fn=occ, method="occlusion")
    assert "spectral_centroid_noise_only" in ds


def test_result_round_trips_through_a_zarr_store(tiny_class, tmp_path):
    from diffxai.store import open_store, write_dataset
    noised, probs, attrs, rgb, model, _ = tiny_class
    s = dict(SETTINGS, randomization={"enabled": False})
    ds = ST.analyze_class(noised, probs, attrs, rgb, model, s, gradient_fn=ig_grad_only)
    back = open_store(write_dataset(ds, tmp_path / "a.zarr")).load()
    xr.testing.assert_allclose(back.drop_attrs(), ds.drop_attrs())


def test_noise_only_control_prefers_the_stores_x0(tiny_class):
    noised, _, attrs, rgb, model, _ = tiny_class
    seen = []
    spy = lambda m, x, t: (seen.append(x.clone()), ig(m, x, t))[1]  # noqa: E731
    zero = noised.assign(x0=(("image", "channel", "y", "x"), np.zeros((N_IMG, 3, H, W), np.float32)))
    s = dict(SETTINGS, faithfulness={"enabled": False}, randomization={"enabled": False})
    ST.analyze_method(zero, attrs["integrated_gradients"], rgb, model, s, attribute_fn=spy)
    # with x0 = 0 in the store, the "noise alone" input is x_t itself
    expect = torch.as_tensor(noised["x"].values[0, 0, [0, 3, 5]])
    torch.testing.assert_close(seen[0], expect)


def test_engine_adapter_calls_the_contract_signature(monkeypatch):
    """CONTRACT.md: maps, stats = attribute(model, inputs, targets, spec, options)."""
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
