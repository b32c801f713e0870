"""rules/analyze.smk: the per-method analysis, the agreement between methods and seeds, the
phase table with the verdicts, and the analysis figures (numerics in diffxai.analysis,
docs/ANALYSIS.md)."""
from __future__ import annotations

import logging
import time

from .. import paths
from ..analysis.metrics import CATEGORY_METRICS
from .common import class_attrs, clean_rgb, job_device, job_torch, open_all, versions

log = logging.getLogger("diffxai.stages.analyze")

def _in_analysis_subset(c: dict, classes) -> bool:
    """Whether class ``c`` gets the costly checks (analysis.subset.classes: synsets or slugs; None: all)."""
    return classes is None or c["slug"] in classes or c["synset"] in classes


def class_onset(onset, slug: str) -> float | None:
    """The class onset k* of results/onset.csv (None: no row or no onset)."""
    import numpy as np
    import pandas as pd

    table = pd.read_csv(onset).set_index("cls")
    if slug not in table.index or not np.isfinite(float(table.loc[slug, "onset"])):
        return None
    return float(table.loc[slug, "onset"])


@paths.files(noised=paths.NOISED, attributions=paths.ATTRIBUTIONS, images=paths.IMAGES, probs=paths.PROBS,
             analyses=paths.ANALYSES)
def analyze(noised, attributions, images, probs, onset, analyses, method, settings, analysis,
            classes, classifier, output, device, shared):
    """results/analysis/{method}/{cls}.zarr: every per-method metric of diffxai.analysis.stage
    (dims image, seed, step[, mask, part, order, fill, fraction, depth, band]), ``p_true`` beside
    them and the masks used (``mask_pixels``). The costly subset is placed around the class onset
    of ``onset`` (results/onset.csv). The gradient methods' control is their own gradient-only map
    (``multiply_by_inputs: false`` on the method's settings). ``shared``: this job also computes the
    method-independent costly check (p_true of the band-filtered inputs; the summary shares it)."""
    dev = job_device(device, log, "analysis.device")
    job_torch()
    from ..registry import X_FACTOR_METHODS
    from ..analysis.stage import engine_attribute_fn, merged_settings
    from ..attribution import EngineOptions, method_spec
    from ..models import load_classifier

    s = merged_settings(analysis)
    model = load_classifier(classifier, dev)
    options = EngineOptions(device=dev, output=output)
    attribute_fn = engine_attribute_fn(method_spec(method, settings), options)
    gradient_fn = (engine_attribute_fn(method_spec(method, {**settings, "multiply_by_inputs": False}), options)
                   if method in X_FACTOR_METHODS else None)
    for c in classes:
        slug = c["slug"]
        _analyze_class(c, noised[slug], attributions[slug], images[slug], probs[slug], analyses[slug], s,
                       model, attribute_fn, gradient_fn, k_star=class_onset(onset, slug), method=method,
                       settings=settings, classifier=classifier, device=dev, shared=shared)


def _analyze_class(c, src, asrc, folder, psrc, dst, s, model, attribute_fn, gradient_fn, *, k_star, method,
                   settings, classifier, device, shared):
    import numpy as np

    from ..analysis import masks as MK
    from ..analysis.stage import analyze_method, user_mask_folder
    from ..store import json_attr, open_store, write_dataset

    t0 = time.perf_counter()
    nds, ads, pds = open_store(src), open_store(asrc), open_store(psrc)
    rgb = clean_rgb(folder)
    masks = MK.class_masks(rgb, s["masks"], user_mask_folder(s["masks"]["folder"], nds.attrs))
    costly = _in_analysis_subset(c, s["subset"]["classes"])
    ds = analyze_method(nds, ads, rgb, model if costly else None, s, probs=pds, onset=k_star,
                        attribute_fn=attribute_fn if costly else None,
                        gradient_fn=gradient_fn if costly else None, masks=masks, shared=shared, method=method)
    for k in ("image_file", "image_sha256"):
        if k in ads.coords:
            ds = ds.assign_coords({k: ("image", ads[k].values)})
    ds.attrs.update(class_attrs(c), xai_method=method, method_settings=json_attr(settings),
                    analysis=json_attr(s), costly_checks=costly, classifier=classifier, device=device,
                    shared_checks=bool(shared and costly), onset=np.nan if k_star is None else k_star,
                    seconds=round(time.perf_counter() - t0, 2), **versions())
    ds.attrs.pop("method", None)
    write_dataset(ds, dst)
    log.info("%s %s: %d maps analysed (%s checks; subset around onset %s) in %.1f s -> %s", method, c["slug"],
             int(np.prod([ds.sizes[d] for d in ("image", "seed", "step")])),
             "costly and cheap" if costly else "cheap", k_star, time.perf_counter() - t0, dst)


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


@paths.files(analyses=paths.ANALYSES, agreements=paths.AGREEMENTS)
def analysis_summary(analyses, agreements, onset, phases, verdicts, by_category, classes, methods, analysis):
    """results/analysis/phases.csv (class x method x metric: before/around/after, paired changes,
    CIs), verdicts.csv (claim, class, method or 'combined', verdict, rule, numbers) and
    metrics_by_category.csv (per category, method and key metric: the classes' phase means)."""
    import pandas as pd

    from ..analysis import verdicts as VE
    from ..analysis import control_verdicts as CV
    from ..analysis.stage import combine, merged_settings, summarize_class
    from ..classes import class_table_df
    from ..store import atomic_path, open_store

    s = merged_settings(analysis)
    table = pd.read_csv(onset).set_index("cls")
    all_phases, all_verdicts = [], []
    for c in classes:
        slug = c["slug"]
        ds = combine(open_all({m: analyses[m][slug] for m in methods}), open_store(agreements[slug]))
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
                           if not CV.is_control_claim(r["claim"])))
    ph = pd.concat(all_phases, ignore_index=True)
    vd = pd.concat(all_verdicts, ignore_index=True)
    voting = s["verdicts"]["combine_methods"]     # the voting methods this run attributed (the rule names them)
    voting = None if voting is None else [m for m in voting if m in set(vd["xai_method"])]
    comb = VE.combine_methods(CV.votes(vd), voting)   # per (class, claim): over the voting methods
    comb["xai_method"], comb["evidence"] = "combined", ""
    comb["synset"] = comb["cls"].map(dict(zip(vd["cls"], vd["synset"])))
    vd = pd.concat([vd, comb], ignore_index=True)
    vd = vd[["claim", "cls", "synset", "xai_method", "verdict", "scope", "rule", "evidence"]]
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
    from ..analysis.stage import _take, combine
    from ..figures import representative_image
    from ..store import open_store

    table = pd.read_csv(onset).set_index("cls")
    per_image = pd.read_csv(onset_images)
    for c in classes:
        slug = c["slug"]
        ads = open_all({m: attributions[m][slug] for m in methods})
        stores = open_all({m: analyses[m][slug] for m in methods})
        ds = combine(stores, open_store(agreements[slug]))
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
