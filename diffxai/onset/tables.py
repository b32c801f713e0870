"""The onset tables (per class, per image, per (image, seed) curve) and their input from the
probability stores."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .bootstrap import class_estimate, image_estimates, mean_curve
from .detection import detect_curve
from .schedule import t_and_log_snr

METHODS = ("logistic", "steepest", "threshold")

_ESTIMATE_COLUMNS = [
    "onset", "onset_lo", "onset_hi",
    "midpoint", "midpoint_lo", "midpoint_hi", "slope", "floor", "plateau",
    "steepest", "steepest_lo", "steepest_hi",
    "threshold_cross", "threshold_cross_lo", "threshold_cross_hi",
    "t_onset", "log_snr_onset",
]
PER_CLASS_COLUMNS = [
    "cls", "class_index", "synset", "name", "n_images", "n_seeds", *_ESTIMATE_COLUMNS,
    "p_clean", "n_clean_wrong", "flags",
]
#: per image; ``image_file`` only when the stores name their images (see :func:`per_image_columns`)
PER_IMAGE_COLUMNS = [
    "cls", "image", "image_file", "n_seeds", *_ESTIMATE_COLUMNS,
    "p_clean", "clean_top1", "clean_wrong", "flags",
]
PER_SEED_COLUMNS = [
    "cls", "image", "seed", "onset", "midpoint", "slope", "floor", "plateau", "steepest",
    "threshold_cross", "t_onset", "log_snr_onset", "flags",
]
PER_SEED_COLUMNS_FILES = PER_SEED_COLUMNS[:2] + ["image_file"] + PER_SEED_COLUMNS[2:]


def per_image_columns(with_files: bool = False) -> list[str]:
    return PER_IMAGE_COLUMNS if with_files else [c for c in PER_IMAGE_COLUMNS if c != "image_file"]


def per_seed_columns(with_files: bool = False) -> list[str]:
    return PER_SEED_COLUMNS_FILES if with_files else PER_SEED_COLUMNS


def _primary_key(primary: str) -> str:
    if primary not in METHODS:
        raise ValueError(f"primary must be one of {METHODS}, got {primary!r}")
    return {"logistic": "onset", "steepest": "steepest", "threshold": "threshold_cross"}[primary]


def _split_curve(cls, entry):
    """(steps, p (I, S, K), seeds, images, files, clean_correct) from a 3-tuple (steps, p, seeds)
    or a 4-tuple with a dict of extras (image (I,), image_file (I,), clean_correct (I, S) bool)."""
    if len(entry) == 3:
        (steps, p, seeds), extras = entry, {}
    elif len(entry) == 4:
        steps, p, seeds, extras = entry
        extras = dict(extras or {})
    else:
        raise ValueError(f"class {cls!r}: expected (steps, p, seeds[, extras]), got {len(entry)} items")
    steps = np.asarray(steps, dtype=float)
    p = np.asarray(p, dtype=float)
    if p.ndim == 1:
        p = p[None, None, :]
    elif p.ndim == 2:
        p = p[None]
    seeds = np.asarray(seeds).ravel()
    if p.ndim != 3 or p.shape[2] != steps.size or p.shape[1] != seeds.size:
        raise ValueError(f"class {cls!r}: p has shape {p.shape}, expected "
                         f"([images,] {seeds.size}, {steps.size}) from seeds and steps")
    I = p.shape[0]
    images = np.asarray(extras.get("image", np.arange(I))).ravel()
    if images.size != I:
        raise ValueError(f"class {cls!r}: {images.size} image labels for {I} images in p")
    files = extras.get("image_file")
    if files is not None:
        files = np.asarray(files).ravel()
        if files.size != I:
            raise ValueError(f"class {cls!r}: {files.size} image files for {I} images in p")
    correct = extras.get("clean_correct")
    if correct is not None:
        correct = np.asarray(correct, dtype=bool).reshape(I, seeds.size)
    return steps, p, seeds, images, files, correct


def _item(x):
    return x.item() if hasattr(x, "item") else x


def _estimate_cols(r: Mapping[str, Any], key: str, cis, alphas_cumprod) -> dict[str, Any]:
    t_on, l_on = t_and_log_snr(r[key], alphas_cumprod)
    return dict(onset=r[key], onset_lo=cis["onset"][0], onset_hi=cis["onset"][1],
                midpoint=r["midpoint"], midpoint_lo=cis["midpoint"][0], midpoint_hi=cis["midpoint"][1],
                slope=r["slope"], floor=r["floor"], plateau=r["plateau"],
                steepest=r["steepest"], steepest_lo=cis["steepest"][0], steepest_hi=cis["steepest"][1],
                threshold_cross=r["threshold_cross"], threshold_cross_lo=cis["threshold_cross"][0],
                threshold_cross_hi=cis["threshold_cross"][1], t_onset=t_on, log_snr_onset=l_on)


class _Class:
    """One class's parsed curves and what every table row of it shares."""

    def __init__(self, cls, parsed, with_files, alphas_cumprod):
        self.cls = cls
        self.steps, self.p, self.seeds, self.images, self.files, correct = parsed
        self.with_files, self.ab = with_files, alphas_cumprod
        I, S, _ = self.p.shape
        self.k_last = int(np.argmax(self.steps)) if self.steps.size else None
        if correct is None:  # clean correctness per (image, seed)
            with np.errstate(invalid="ignore"):
                correct = ((self.p[:, :, self.k_last] >= 0.5) if self.k_last is not None
                           else np.zeros((I, S), bool))
        self.correct = correct
        self.clean_wrong = ~correct.any(axis=1)

    def image_id(self, i: int) -> dict[str, Any]:
        out = dict(cls=self.cls, image=_item(self.images[i]))
        if self.with_files:
            out["image_file"] = str(self.files[i]) if self.files is not None else ""
        return out

    def p_clean(self, curves: np.ndarray) -> float:
        return float(mean_curve(curves)[self.k_last]) if self.k_last is not None else np.nan


def _seed_rows(c: _Class, key: str, kw) -> list[dict]:
    rows = []
    for i_i in range(c.p.shape[0]):
        for s_i in range(c.p.shape[1]):
            r = detect_curve(c.steps, c.p[i_i, s_i], **kw)
            t_on, l_on = t_and_log_snr(r[key], c.ab)
            rows.append(dict(**c.image_id(i_i), seed=_item(c.seeds[s_i]), onset=r[key],
                             midpoint=r["midpoint"], slope=r["slope"], floor=r["floor"],
                             plateau=r["plateau"], steepest=r["steepest"],
                             threshold_cross=r["threshold_cross"], t_onset=t_on,
                             log_snr_onset=l_on, flags=r["flags"]))
    return rows


def _class_row(c: _Class, info: Mapping[str, Any], key, full, cis, flags) -> dict:
    I, S, K = c.p.shape
    return dict(
        cls=c.cls, class_index=info.get("index", info.get("class_index", np.nan)),
        synset=info.get("synset", ""), name=info.get("name", info.get("class_name", "")),
        n_images=I, n_seeds=S, **_estimate_cols(full, key, cis, c.ab),
        p_clean=c.p_clean(c.p.reshape(I * S, K)), n_clean_wrong=int(c.clean_wrong.sum()),
        flags=";".join(flags) if flags else "ok")


def _image_rows(c: _Class, key, img_res) -> list[dict]:
    rows = []
    for i_i, (r, cis, fl) in enumerate(img_res):
        fl = list(fl) + (["clean_wrong"] if c.clean_wrong[i_i] else [])
        rows.append(dict(
            **c.image_id(i_i), n_seeds=c.p.shape[1], **_estimate_cols(r, key, cis, c.ab),
            p_clean=c.p_clean(c.p[i_i]), clean_top1=float(c.correct[i_i].mean()),
            clean_wrong=bool(c.clean_wrong[i_i]), flags=";".join(fl) if fl else "ok"))
    return rows


def onset_tables(curves: Mapping[str, Sequence],
                 class_info: Mapping[str, Mapping[str, Any]] | None,
                 alphas_cumprod, *, primary="logistic", threshold=0.5, min_rise=0.1,
                 savgol_window=7, savgol_polyorder=2, n_boot=999, ci=0.95, rng_seed=0
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-class, per-image and per-seed onset tables.

    curves: {cls: (steps (K,), p, seeds (S,)[, extras])} with p (image, seed, step) or (seed, step)
    (= one image); extras (optional dict): ``image`` labels (I,), ``image_file`` (I,) and
    ``clean_correct`` (I, S) bool (top-1 == class at the cleanest step; see ``clean_wrong``).
    class_info: {cls: {index, synset, name}}; alphas_cumprod: all T values of the schedule
    (t = T-1-k), or None (t/log-SNR left NaN). ``onset`` is the ``primary`` method's estimate
    ("logistic" | "steepest" | "threshold") and onset_lo/hi its bootstrap CI; t_onset and
    log_snr_onset are taken at that onset.

    * per seed: one row per (cls, image, seed), each curve on its own.
    * per image: the seed-mean curve of each image; CI = percentile bootstrap over that image's seeds.
    * per class: the mean curve over all images and seeds; CI = hierarchical percentile bootstrap
      (draw images with replacement, then seeds with replacement within each drawn image, refit the
      mean curve). With one image this is the seed bootstrap of that image, and the image row
      repeats the class row.

    ``clean_wrong`` (per image): the classifier's top-1 is not the class at the cleanest step for any
    seed (from ``clean_correct``; without it, p_true < 0.5 there for every seed, which may also flag
    an image that is top-1 with p < 0.5). ``clean_top1`` (per image) is the fraction of its seeds
    that are right there (same fallback). Per class, ``n_clean_wrong`` counts clean_wrong images.

    Columns: :data:`PER_CLASS_COLUMNS`, :data:`PER_IMAGE_COLUMNS` and :data:`PER_SEED_COLUMNS`;
    ``image_file`` (per image and per seed, after ``image``) only when some class names its images.
    """
    key = _primary_key(primary)
    kw = dict(threshold=threshold, min_rise=min_rise, savgol_window=savgol_window,
              savgol_polyorder=savgol_polyorder)
    alpha = (1.0 - ci) / 2.0
    class_info = class_info or {}
    parsed = {cls: _split_curve(cls, entry) for cls, entry in curves.items()}
    with_files = any(v[4] is not None for v in parsed.values())
    rows, image_rows, seed_rows = [], [], []
    for ci_idx, (cls, entry) in enumerate(parsed.items()):
        c = _Class(cls, entry, with_files, alphas_cumprod)
        seed_rows += _seed_rows(c, key, kw)
        full, cis, _, flags = class_estimate(c.steps, c.p, key, kw, alpha, n_boot,
                                             np.random.default_rng([rng_seed, ci_idx]))
        rows.append(_class_row(c, class_info.get(cls, {}), key, full, cis, flags))
        if c.p.shape[0] == 1:
            img_res = [(full, cis, flags)]
        else:
            img_res = image_estimates(c.steps, c.p, key, kw, alpha, n_boot,
                                      np.random.default_rng([rng_seed, ci_idx, 1]))
        image_rows += _image_rows(c, key, img_res)
    per_class = pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)
    per_image = pd.DataFrame(image_rows, columns=per_image_columns(with_files))
    per_seed = pd.DataFrame(seed_rows, columns=per_seed_columns(with_files))
    return per_class, per_image, per_seed


def curves_from_datasets(probs: Mapping[str, Any], var: str = "p_true"):
    """(curves, class_info, alphas_cumprod) for :func:`onset_tables` from probability Datasets.

    ``probs``: {cls: xarray Dataset in the results/probs layout (docs/DESIGN.md)}, ``var`` with dims
    (image, seed, step) or (seed, step) (= one image). Each curve is (steps, p (image, seed, step),
    seeds) plus, when the store has them, a dict of extras: ``image`` and ``image_file`` coords, and
    ``clean_correct`` (image, seed) = (``pred`` == class_index at the cleanest step). Duck-typed, so
    this module does not import xarray.
    """
    curves, info, ab = {}, {}, None
    for cls, ds in probs.items():
        curves[cls] = _curve_of(ds, var)
        a = ds.attrs
        info[cls] = dict(index=a.get("class_index", np.nan), synset=a.get("synset", ""),
                         name=a.get("class_name", ""))
        this = a.get("alphas_cumprod")
        if this is not None:
            this = np.asarray(this, dtype=float)
            if ab is None:
                ab = this
            elif this.shape != ab.shape or not np.allclose(this, ab):
                raise ValueError(f"class {cls!r}: alphas_cumprod differs from the other classes")
    return curves, info, ab


def _curve_of(ds, var: str) -> tuple:
    """(steps, p (image, seed, step), seeds[, extras]) of one probability Dataset."""
    has_image = "image" in ds[var].dims
    dims = ("image", "seed", "step") if has_image else ("seed", "step")
    p = np.asarray(ds[var].transpose(*dims).values, dtype=float)
    if not has_image:
        p = p[None]
    steps = np.asarray(ds["step"].values)
    extras: dict[str, Any] = {}
    if has_image:
        extras["image"] = np.asarray(ds["image"].values)
        if "image_file" in ds.coords or "image_file" in getattr(ds, "data_vars", {}):
            extras["image_file"] = np.asarray(ds["image_file"].values).astype(str)
    idx = ds.attrs.get("class_index")
    if "pred" in getattr(ds, "data_vars", {}) and idx is not None and steps.size:
        pred = ds["pred"].transpose(*dims).values
        pred = np.asarray(pred)[None] if not has_image else np.asarray(pred)
        extras["clean_correct"] = pred[:, :, int(np.argmax(steps))] == int(idx)
    seeds = np.asarray(ds["seed"].values)
    return (steps, p, seeds, extras) if extras else (steps, p, seeds)
