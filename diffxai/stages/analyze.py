"""rules/analyze.smk: the per-method analysis, the agreement between methods and seeds, the
phase table with the verdicts, and the analysis figures (numerics in diffxai.analysis,
docs/ANALYSIS.md)."""
from __future__ import annotations

import logging
import time

from .. import paths
from .common import class_attrs, clean_rgb, job_device, job_torch, open_all, versions

log = logging.getLogger("diffxai.stages.analyze")

#: metrics the per-category summary keeps (rows of the phase table)
CATEGORY_METRICS = ("enrichment[mask=outline,part=abs]", "enrichment[mask=detail,part=abs]", "spectral_centroid",
                    "low_freq_share", "method_spearman", "deletion_auc[order=attribution]", "insertion_auc[order=attribution]")


def _in_analysis_subset(c: dict, classes) -> bool:
    """Whether class ``c`` gets the costly checks (analysis.subset.classes: synsets or slugs; None: all)."""
    return classes is None or c["slug"] in classes or c["synset"] in classes


@paths.files(noised=paths.NOISED, attributions=paths.ATTRIBUTIONS, images=paths.IMAGES, probs=paths.PROBS,
             analyses=paths.ANALYSES)
def analyze(noised, attributions, images, probs, analyses, method, settings, ig_settings, analysis,
            classes, classifier, output, device, gradient_only):
    """results/analysis/{method}/{cls}.zarr: every per-method metric of diffxai.analysis.stage
    (dims image, seed, step[, mask, part, order, fraction, depth]), ``p_true`` beside them and the
    masks used (``mask_pixels``). ``gradient_only``: this job also computes the method-independent
    gradient-only IG control (one method's job does, the summary shares it)."""
    dev = job_device(device, log, "analysis.device")
    job_torch()
    from ..analysis.stage import engine_attribute_fn, merged_settings
    from ..attribution import EngineOptions, method_spec
    from ..models import load_classifier

    s = merged_settings(analysis)
    model = load_classifier(classifier, dev)
    options = EngineOptions(device=dev, output=output)
    attribute_fn = engine_attribute_fn(method_spec(method, settings), options)
    gradient_fn = (engine_attribute_fn(method_spec("integrated_gradients", {**ig_settings, "multiply_by_inputs": False}),
                                       options) if gradient_only else None)
    for c in classes:
        slug = c["slug"]
        _analyze_class(c, noised[slug], attributions[slug], images[slug], probs[slug], analyses[slug], s,
                       model, attribute_fn, gradient_fn, method=method, settings=settings, classifier=classifier,
                       device=dev, gradient_only=gradient_only)


def _analyze_class(c, src, asrc, folder, psrc, dst, s, model, attribute_fn, gradient_fn, *, method, settings,
                   classifier, device, gradient_only):
    import numpy as np

    from ..analysis import masks as MK
    from ..analysis.stage import analyze_method, user_mask_folder
    from ..store import json_attr, open_store, write_dataset

    t0 = time.perf_counter()
    nds, ads, pds = open_store(src), open_store(asrc), open_store(psrc)
    rgb = clean_rgb(folder)
    masks = MK.class_masks(rgb, s["masks"], user_mask_folder(s["masks"]["folder"], nds.attrs))
    costly = _in_analysis_subset(c, s["subset"]["classes"])
    ds = analyze_method(nds, ads, rgb, model if costly else None, s,
                        attribute_fn=attribute_fn if costly else None,
                        gradient_fn=gradient_fn if costly else None, masks=masks, method=method)
    imgs = ds["image"].values
    p = probs_at(pds, ds)
    ds["p_true"] = (("image", "seed", "step"), p)
    ds["mask_pixels"] = (("mask", "image", "y", "x"),
                         np.stack([np.asarray(masks[m])[imgs] for m in ds["mask"].values]).astype(np.uint8))
    for k in ("image_file", "image_sha256"):
        if k in ads.coords:
            ds = ds.assign_coords({k: ("image", ads[k].values)})
    ds.attrs.update(class_attrs(c), xai_method=method, method_settings=json_attr(settings),
                    analysis=json_attr(s), costly_checks=costly, classifier=classifier, device=device,
                    gradient_only_control=bool(gradient_only and costly),
                    seconds=round(time.perf_counter() - t0, 2), **versions())
    ds.attrs.pop("method", None)
    write_dataset(ds, dst)
    log.info("%s %s: %d maps analysed (%s checks) in %.1f s -> %s", method, c["slug"],
             int(np.prod([ds.sizes[d] for d in ("image", "seed", "step")])),
             "costly and cheap" if costly else "cheap", time.perf_counter() - t0, dst)


def probs_at(pds, ds):
    """p_true of a probs store at the (image, seed, step) labels of ``ds``."""
    import numpy as np

    from ..analysis.stage import _take

    p = pds["p_true"]
    for d in ("image", "seed", "step"):
        p = _take(p, d, ds[d].values)
    return np.asarray(p.transpose("image", "seed", "step").values, dtype=np.float64)


@paths.files(attributions=paths.ATTRIBUTIONS, agreements=paths.AGREEMENTS)
def analyze_agreement(attributions, agreements, classes, methods, agreement):
    """results/analysis/agreement/{cls}.zarr: method-method and seed-seed agreement on a common
    grid (``attributions``: {method: {cls: store}})."""
    job_torch()
    from ..analysis.stage import analyze_agreement as agree
    from ..store import write_dataset

    for c in classes:
        slug = c["slug"]
        ds = agree(open_all({m: attributions[m][slug] for m in methods}), {"agreement": agreement})
        ds.attrs.update(class_attrs(c))
        write_dataset(ds, agreements[slug])
        log.info("%s: agreement of %s -> %s", slug, ", ".join(methods), agreements[slug])


def class_analysis(method_stores: dict, agreement_store=None):
    """One class's analysis Dataset along ``xai_method`` from the per-method stores and the
    agreement store; the gradient-only control (one job computes it) is shared by every method."""
    import numpy as np
    import xarray as xr

    per = [ds.drop_vars(["mask_pixels"], errors="ignore").expand_dims(xai_method=[m])
           for m, ds in method_stores.items()]
    ds = xr.concat(per, dim="xai_method", data_vars="all", coords="minimal", compat="override",
                   join="outer", combine_attrs="drop_conflicts")
    for k in ("spectral_centroid_gradient_only", "low_freq_share_gradient_only", "p_true",
              "spectral_centroid_input", "low_freq_share_input"):
        if k in ds:  # method-independent: one copy (the first method that has it)
            v = ds[k]
            have = [m for m in ds["xai_method"].values if np.isfinite(v.sel(xai_method=m).values).any()]
            ds[k] = v.sel(xai_method=have[0] if have else ds["xai_method"].values[0], drop=True)
    if agreement_store is not None:
        ag = agreement_store
        ds = ds.assign({k: ag[k].variable for k in ag.data_vars if k.startswith("method_")})
        for k in ag.data_vars:
            if k.startswith("seed_"):
                ds[k] = ag[k]
        if "pair" in ag.coords:
            ds = ds.assign_coords(pair=ag["pair"].values)
    return ds


@paths.files(analyses=paths.ANALYSES, agreements=paths.AGREEMENTS)
def analysis_summary(analyses, agreements, onset, phases, verdicts, by_category, classes, methods, analysis):
    """results/analysis/phases.csv (class x method x metric: before/around/after, paired changes,
    CIs), verdicts.csv (claim, class, method or 'combined', verdict, rule, numbers) and
    metrics_by_category.csv (per category, method and key metric: the classes' phase means)."""
    import pandas as pd

    from ..analysis import verdicts as VE
    from ..analysis.stage import merged_settings, summarize_class
    from ..classes import class_table_df
    from ..store import atomic_path, open_store

    s = merged_settings(analysis)
    table = pd.read_csv(onset).set_index("cls")
    all_phases, all_verdicts = [], []
    for c in classes:
        slug = c["slug"]
        ds = class_analysis(open_all({m: analyses[m][slug] for m in methods}), open_store(agreements[slug]))
        row = table.loc[slug].to_dict() if slug in table.index else None
        # claim_classes name synsets: judge with the synset, report with the slug
        ph, vd = summarize_class(ds, row, c["synset"], s)
        ph.insert(0, "cls", slug)
        ph.insert(1, "synset", c["synset"])
        vd["cls"], vd["synset"] = slug, c["synset"]
        all_phases.append(ph)
        all_verdicts.append(vd)
        log.info("%s: %d phase rows, verdicts: %s", slug, len(ph),
                 "; ".join(f"{r['xai_method']} {r['claim']}: {r['verdict']}" for _, r in vd.iterrows()
                           if not r["claim"].startswith(("spectral", "low_freq"))))
    ph = pd.concat(all_phases, ignore_index=True)
    vd = pd.concat(all_verdicts, ignore_index=True)
    comb = VE.combine_methods(vd)   # per (class, claim): one verdict over the methods
    comb["xai_method"], comb["evidence"] = "combined", ""
    comb["synset"] = comb["cls"].map(dict(zip(vd["cls"], vd["synset"])))
    vd = pd.concat([vd, comb], ignore_index=True)
    vd = vd[["claim", "cls", "synset", "xai_method", "verdict", "rule", "evidence"]]
    cats = category_summary(ph, class_table_df())
    for df, dst in ((ph, phases), (vd, verdicts), (cats, by_category)):
        with atomic_path(dst) as tmp:
            df.to_csv(tmp, index=False, float_format="%.5g")


def category_summary(ph, class_table):
    """Per (category, method, metric): classes, and the median over classes of each phase mean
    and of the paired changes; for many-class runs (the 1000-class config)."""
    import pandas as pd

    from ..aggregate import with_category

    keep = ph[ph["metric"].isin(CATEGORY_METRICS)].copy()
    cols = ["category", "xai_method", "metric", "n_classes", "before", "around", "after",
            "after_minus_before", "around_minus_before", "n_change_ci_above_0", "n_change_ci_below_0"]
    if keep.empty:
        return pd.DataFrame(columns=cols)
    keep = with_category(keep, class_table)
    rows = []
    for (cat, m, metric), g in keep.groupby(["category", "xai_method", "metric"], sort=True):
        rows.append({"category": cat, "xai_method": m, "metric": metric, "n_classes": g["cls"].nunique(),
                     **{k: g[k].median() for k in ("before", "around", "after", "after_minus_before",
                                                   "around_minus_before")},
                     "n_change_ci_above_0": int((g["after_minus_before_lo"] > 0).sum()),
                     "n_change_ci_below_0": int((g["after_minus_before_hi"] < 0).sum())})
    return pd.DataFrame(rows, columns=cols)


@paths.files(noised=paths.NOISED, images=paths.IMAGES, attributions=paths.ATTRIBUTIONS, analyses=paths.ANALYSES,
             agreements=paths.AGREEMENTS, analysis_png=paths.ANALYSIS_PNG, masks_png=paths.MASKS_PNG,
             animation_gif=paths.ANIMATION_GIF)
def figure_analysis(noised, images, attributions, analyses, agreements, onset, onset_images, analysis_png, masks_png,
                    animation_gif, classes, methods, aligned, image=None, animation_ms=250):
    """Per class: metrics vs step and log-SNR (analysis_{cls}.png), the masks over the clean images
    (masks_{cls}.png) and a GIF across steps (animation_{cls}.gif) of the representative image."""
    import pandas as pd

    from .. import figures_analysis as FA
    from ..analysis.stage import _take
    from ..figures import representative_image
    from ..store import open_store

    table = pd.read_csv(onset).set_index("cls")
    per_image = pd.read_csv(onset_images)
    for c in classes:
        slug = c["slug"]
        ads = open_all({m: attributions[m][slug] for m in methods})
        stores = open_all({m: analyses[m][slug] for m in methods})
        ds = class_analysis(stores, open_store(agreements[slug]))
        row = table.loc[slug].to_dict() if slug in table.index else None
        FA.metric_figure(ds, row, slug, analysis_png[slug], n_boot=min(int(aligned["n_boot"]), 500),
                         level=float(aligned["level"]), seed=int(aligned["seed"]))
        first = stores[methods[0]]
        mp = first["mask_pixels"].transpose("mask", "image", "y", "x")
        nds = open_store(noised[slug])
        imgs = [int(i) for i in first["image"].values]
        rgb = clean_rgb(images[slug])[imgs]
        FA.masks_figure(rgb, {str(m): mp.sel(mask=m).values.astype(bool) for m in mp["mask"].values}, slug,
                        masks_png[slug], image_labels=[f"image {i} ({nds['image_file'].values[i]})" for i in imgs])
        i, why = representative_image(per_image[per_image["cls"] == slug], imgs, image)
        nds_i = _take(nds.sel(image=i), "step", first["step"].values)
        FA.animation(nds_i, {m: a.sel(image=i) for m, a in ads.items()},
                     first["p_true"].sel(image=i).transpose("seed", "step").values, row, slug, animation_gif[slug],
                     frame_ms=animation_ms, label=f"image {i} ({why})")
