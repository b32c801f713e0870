"""Figures on small synthetic Datasets in the docs/DESIGN.md layout: files exist, right pixel size."""
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from diffxai import figures as fg
from diffxai.errors import DiffxaiError

DPI = 40  # small PNGs keep the tests fast; the size check is dpi-independent
STEPS = np.array([0, 20, 40, 60, 80, 99])
SEEDS = [3, 4]
CLASSES = {"tiger": (292, "n02129604", "tiger", 38.0), "Egyptian_cat": (285, "n02124075", "Egyptian cat", 48.0)}
METHODS = ["integrated_gradients", "gradient_shap", "occlusion"]
H = W = 32


def _schedule_coords():
    ab_all = np.cumprod(1 - np.linspace(1e-4, 0.02, 100))
    t = 99 - STEPS
    ab = ab_all[t]
    return ab_all, {"step": ("step", STEPS), "t": ("step", t), "alpha_bar": ("step", ab),
                    "log_snr": ("step", np.log(ab / (1 - ab))), "sigma": ("step", np.sqrt(1 - ab)),
                    "seed": ("seed", SEEDS)}


def _attrs(cls):
    idx, syn, name, _ = CLASSES[cls]
    return {"cls": cls, "class_index": idx, "synset": syn, "class_name": name}


def _noised(cls, rng):
    ab_all, coords = _schedule_coords()
    yy, xx = np.mgrid[0:H, 0:W] / H
    x0 = np.stack([np.sin(6 * xx), np.cos(4 * yy), xx * yy * 2 - 1]).astype(np.float32)
    ab = coords["alpha_bar"][1]
    eps = rng.standard_normal((len(SEEDS), 1, 3, H, W))
    x = np.sqrt(ab)[None, :, None, None, None] * x0 + np.sqrt(1 - ab)[None, :, None, None, None] * eps
    return xr.Dataset(
        {"x": (("seed", "step", "channel", "y", "x"), x.astype(np.float32)),
         "x0": (("channel", "y", "x"), x0)},
        coords={**coords, "channel": ("channel", ["R", "G", "B"])},
        attrs={**_attrs(cls), "alphas_cumprod": ab_all.tolist(), "seeds": SEEDS, "noise_mode": "shared"})


def _probs(cls, rng):
    ab_all, coords = _schedule_coords()
    k0 = CLASSES[cls][3]
    p = 1 / (1 + np.exp(-0.2 * (STEPS - k0)))
    p = np.clip(p[None, :] + rng.normal(0, 0.03, (len(SEEDS), len(STEPS))), 0, 1)
    return xr.Dataset({"p_true": (("seed", "step"), p.astype(np.float32))}, coords=coords,
                      attrs={**_attrs(cls), "classifier": "efficientnet_lite0",
                             "alphas_cumprod": ab_all.tolist()})


def _attribution(cls, method, rng):
    _, coords = _schedule_coords()
    a = rng.standard_normal((len(SEEDS), len(STEPS), H, W)).astype(np.float32)
    a[:, :, 8:16, 8:16] += 5
    return xr.Dataset({"attribution": (("seed", "step", "y", "x"), a),
                       "target": (("seed", "step"), np.full((len(SEEDS), len(STEPS)), 1))},
                      coords=coords, attrs={**_attrs(cls), "method": method})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    noised = {c: _noised(c, rng) for c in CLASSES}
    probs = {c: _probs(c, rng) for c in CLASSES}
    attrs = {m: {c: _attribution(c, m, rng) for c in CLASSES} for m in METHODS}
    onset = pd.DataFrame([
        {"cls": "tiger", "onset": 31.4, "onset_lo": 29.0, "onset_hi": 34.5, "flags": "ok"},
        {"cls": "Egyptian_cat", "onset": np.nan, "onset_lo": np.nan, "onset_hi": np.nan,
         "threshold_cross": np.nan, "midpoint": 47.0, "flags": "never_crosses"},
    ])
    return noised, probs, attrs, onset


def _check(paths, figsize, dpi=DPI):
    png, pdf = paths
    assert png.suffix == ".png" and pdf == png.with_suffix(".pdf")
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    with Image.open(png) as im:
        w, h = im.size
    assert abs(w - figsize[0] * dpi) <= 1 and abs(h - figsize[1] * dpi) <= 1, (w, h, figsize)
    assert not list(png.parent.glob(".*.tmp-*"))  # no temporaries left behind


# --------------------------------------------------------------------------- helpers
def test_pick_steps():
    assert fg.pick_steps(range(100), 5) == [0, 25, 50, 74, 99]
    assert fg.pick_steps([40, 0, 20, 20], 10) == [0, 20, 40]
    assert fg.pick_steps(STEPS, 2) == [0, 99]
    assert fg.pick_steps(STEPS, 0) == []


def test_nearest_steps():
    assert fg.nearest_steps(STEPS, [21, 31, 41, 51, 61]) == [20, 40, 60]
    assert fg.nearest_steps(STEPS, [21, 31, 41, 51, 61], unique=False) == [20, 40, 40, 60, 60]
    assert fg.nearest_steps(STEPS, [30, np.nan, 150, -5]) == [20, 99, 0]  # tie -> lower
    assert fg.nearest_steps([], [3]) == []


# --------------------------------------------------------------------------- figures
def test_softmax_curves(tmp_path, data):
    _, probs, _, onset = data
    paths = fg.softmax_curves(probs, onset, tmp_path / "figs" / "softmax_curves.png",
                              study={"tiger": 38.0, "Egyptian_cat": 48.0}, dpi=DPI)
    _check(paths, fg.SOFTMAX_FIGSIZE)
    # no study marks, an onset table that lacks a class, one seed only
    one = {c: ds.isel(seed=[0]) for c, ds in probs.items()}
    _check(fg.softmax_curves(one, onset.iloc[:1], tmp_path / "s2.png", None, dpi=DPI),
           fg.SOFTMAX_FIGSIZE)


def test_method_grid(tmp_path, data):
    noised, _, attrs, _ = data
    steps = [0, 41, 99]  # 41 is not available: nearest (40) is shown
    for m in METHODS:
        paths = fg.method_grid(m, noised, attrs[m], steps, tmp_path / f"{m}_grid.png", dpi=DPI)
        _check(paths, fg.grid_figsize(len(CLASSES), len(steps)))
    paths = fg.method_grid("occlusion", noised, attrs["occlusion"], [20], tmp_path / "one.png",
                           seed=4, gray=False, dpi=DPI)
    _check(paths, fg.grid_figsize(len(CLASSES), 1))


def test_method_grid_errors(tmp_path, data):
    noised, _, attrs, _ = data
    with pytest.raises(DiffxaiError, match="seed 99"):
        fg.method_grid("occlusion", noised, attrs["occlusion"], [20], tmp_path / "x.png", seed=99)
    with pytest.raises(DiffxaiError, match="'tiger'"):
        fg.method_grid("occlusion", {"Egyptian_cat": noised["Egyptian_cat"]}, attrs["occlusion"],
                       [20], tmp_path / "x.png")
    with pytest.raises(DiffxaiError, match=r"\.png"):
        fg.method_grid("occlusion", noised, attrs["occlusion"], [20], tmp_path / "x.pdf")


def test_zero_and_nan_attributions_do_not_crash(tmp_path, data):
    noised, _, attrs, _ = data
    a = {c: ds.copy(deep=True) for c, ds in attrs["gradient_shap"].items()}
    a["tiger"]["attribution"][:] = 0.0
    a["Egyptian_cat"]["attribution"][:, :, :4, :] = np.nan
    _check(fg.method_grid("gradient_shap", noised, a, [0, 99], tmp_path / "z.png", dpi=DPI),
           fg.grid_figsize(2, 2))


def test_onset_panels(tmp_path, data):
    noised, _, attrs, onset = data
    per_method = {m: attrs[m]["tiger"] for m in METHODS}
    row = onset.set_index("cls").loc["tiger"]
    offsets = (-20, -10, 0, 10, 20)
    ncols = len(fg.nearest_steps(STEPS, [row["onset"] + o for o in offsets]))
    paths = fg.onset_panels("tiger", noised["tiger"], per_method, row,
                            tmp_path / "onset_tiger.png", offsets=offsets, dpi=DPI)
    _check(paths, fg.grid_figsize(1 + len(METHODS), ncols))
    # NaN onset: falls back to the logistic midpoint (47 -> steps 20..80 around it)
    row = onset.set_index("cls").loc["Egyptian_cat"]
    ncols = len(fg.nearest_steps(STEPS, [47 + o for o in offsets]))
    paths = fg.onset_panels("Egyptian_cat", noised["Egyptian_cat"],
                            {"occlusion": attrs["occlusion"]["Egyptian_cat"]}, row,
                            tmp_path / "onset_cat.png", offsets=offsets, dpi=DPI)
    _check(paths, fg.grid_figsize(2, ncols))
    # no usable estimate at all: evenly spaced steps
    empty = pd.Series({"onset": np.nan, "flags": "never_rises"})
    paths = fg.onset_panels("Egyptian_cat", noised["Egyptian_cat"],
                            {"occlusion": attrs["occlusion"]["Egyptian_cat"]}, empty,
                            tmp_path / "onset_none.png", offsets=(-10, 0, 10), dpi=DPI)
    _check(paths, fg.grid_figsize(2, 3))


def test_figures_from_zarr_stores(tmp_path, data):
    """The real inputs are lazily opened Zarr v3 stores."""
    noised, probs, attrs, onset = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: unstable string dtype / consolidated metadata
        for c in CLASSES:
            noised[c].to_zarr(tmp_path / f"noised_{c}.zarr", mode="w")
            probs[c].to_zarr(tmp_path / f"probs_{c}.zarr", mode="w")
            attrs["integrated_gradients"][c].to_zarr(tmp_path / f"ig_{c}.zarr", mode="w")
        nz = {c: xr.open_zarr(tmp_path / f"noised_{c}.zarr") for c in CLASSES}
        pz = {c: xr.open_zarr(tmp_path / f"probs_{c}.zarr") for c in CLASSES}
        az = {c: xr.open_zarr(tmp_path / f"ig_{c}.zarr") for c in CLASSES}
    _check(fg.softmax_curves(pz, onset, tmp_path / "sc.png", dpi=DPI), fg.SOFTMAX_FIGSIZE)
    _check(fg.method_grid("integrated_gradients", nz, az, [0, 40, 99], tmp_path / "g.png", dpi=DPI),
           fg.grid_figsize(2, 3))


# --------------------------------------------------------------------------- aggregate (1000 classes)
def _synthetic_onsets(n=1000, seed=0):
    from diffxai.classes import class_table_df

    table = class_table_df()
    rng = np.random.default_rng(seed)
    shift = {"animal": 40.0, "artifact": 50.0, "food": 45.0, "geological": 35.0, "person": 60.0,
             "plant_fungus": 42.0}
    onset = np.array([shift[c] for c in table["category"]]) + rng.normal(0, 5, len(table))
    onset[rng.choice(len(table), 37, replace=False)] = np.nan
    df = pd.DataFrame({"cls": table["slug"], "class_index": table["index"], "synset": table["synset"],
                       "name": table["name"], "onset": onset, "onset_lo": onset - 2,
                       "onset_hi": onset + 2, "p_clean": 0.9, "flags": "ok"})
    return df.iloc[:n], table


def test_summarise_1000_classes(tmp_path):
    from diffxai import aggregate as ag

    df, table = _synthetic_onsets()
    paths = ag.summarise(df, table, tmp_path / "summary", dpi=DPI)
    assert set(paths) == {"onset_histogram.png", "onset_histogram.pdf", "onset_by_category.csv",
                          "onset_by_category.png", "onset_by_category.pdf", "onset_extremes.csv"}
    _check((paths["onset_histogram.png"], paths["onset_histogram.pdf"]), fg.SUMMARY_FIGSIZE)
    _check((paths["onset_by_category.png"], paths["onset_by_category.pdf"]), fg.SUMMARY_FIGSIZE)
    cat = pd.read_csv(paths["onset_by_category.csv"])
    assert list(cat.columns) == ag.CATEGORY_COLUMNS
    assert list(cat["category"]) == list(ag.CATEGORIES)
    assert cat["count"].sum() == 1000 and cat["n_valid"].sum() == 1000 - 37
    ref = table.assign(onset=df["onset"].to_numpy())
    art = ref[ref.category == "artifact"]["onset"].dropna()
    row = cat.set_index("category").loc["artifact"]
    assert row["count"] == (table.category == "artifact").sum()
    assert row["median"] == pytest.approx(art.median())
    assert row["iqr"] == pytest.approx(art.quantile(0.75) - art.quantile(0.25))
    ext = pd.read_csv(paths["onset_extremes.csv"])
    assert list(ext.columns) == ag.EXTREME_COLUMNS
    early, late = ext[ext.extreme == "earliest"], ext[ext.extreme == "latest"]
    assert len(early) == len(late) == 10
    valid = df["onset"].dropna().sort_values()
    np.testing.assert_allclose(early["onset"], valid.iloc[:10])
    np.testing.assert_allclose(late["onset"], valid.iloc[::-1].iloc[:10])
    assert early["rank"].tolist() == list(range(1, 11))
    assert early["category"].notna().all()


def test_summarise_small_and_degenerate(tmp_path):
    from diffxai import aggregate as ag

    df, table = _synthetic_onsets()
    few = df.iloc[[0, 400, 999]].copy()
    few.loc[few.index[1], "onset"] = np.nan
    paths = ag.summarise(few, None, tmp_path / "few", dpi=DPI)  # None: packaged class table
    cat = pd.read_csv(paths["onset_by_category.csv"]).set_index("category")
    assert cat["count"].sum() == 3 and cat.loc["food", "count"] == 0
    assert np.isnan(cat.loc["food", "median"])
    assert len(pd.read_csv(paths["onset_extremes.csv"])) == 4  # 2 valid, both earliest and latest
    # all NaN, and a class the table does not know (by synset only)
    nan = pd.DataFrame({"cls": ["a", "b"], "synset": ["n02129604", "n99999999"],
                        "onset": [np.nan, np.nan]})
    paths = ag.summarise(nan, table, tmp_path / "nan", dpi=DPI)
    cat = pd.read_csv(paths["onset_by_category.csv"]).set_index("category")
    assert cat.loc["unknown", "count"] == 1 and cat.loc["animal", "count"] == 1
    assert cat["n_valid"].sum() == 0
    assert pd.read_csv(paths["onset_extremes.csv"]).empty
    _check((paths["onset_histogram.png"], paths["onset_histogram.pdf"]), fg.SUMMARY_FIGSIZE)
    with pytest.raises(DiffxaiError, match="midpoint"):
        ag.summarise(nan, table, tmp_path / "x", value="midpoint")


def test_softmax_curves_with_an_image_axis_and_explicit_pdf(tmp_path, data):
    """Several images: thin per-image curves, median and band; the PDF goes where it is told."""
    _, probs, _, onset = data
    rng = np.random.default_rng(3)
    many = {c: xr.concat([ds.assign(p_true=ds["p_true"] + float(rng.normal(0, 0.05))) for _ in range(4)],
                         dim="image") for c, ds in probs.items()}
    png, pdf = fg.softmax_curves(many, onset, tmp_path / "a.png", dpi=DPI, threshold=0.6,
                                 pdf=tmp_path / "elsewhere" / "b.pdf")
    assert pdf == tmp_path / "elsewhere" / "b.pdf" and pdf.read_bytes()[:5] == b"%PDF-"
    assert not (tmp_path / "a.pdf").exists()
    with Image.open(png) as im:
        assert abs(im.size[0] - fg.SOFTMAX_FIGSIZE[0] * DPI) <= 1
