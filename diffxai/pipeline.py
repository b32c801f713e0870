"""One function per workflow stage. Snakemake scripts call these (via diffxai.smk.run) with the
rule's named inputs, outputs and params as keyword arguments (smk.run checks the names against the
signature); tests call them directly. Each stage writes exactly the paths its rule declares."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("diffxai.pipeline")

#: images per forward when the targets are the model's own predictions (target: predicted)
PREDICT_BATCH = 64
#: how the engine ran a call, recorded in the attribution store (provenance: no number depends on it)
ENGINE_PROVENANCE = ("batch_size", "compiled", "compile_mode", "channels_last", "oom_halvings",
                     "occlusion_incremental_cut")


def _class_attrs(c: dict) -> dict:
    return {"cls": c["slug"], "synset": c["synset"], "class_index": int(c["index"]), "class_name": c["name"]}


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "diffusers", "captum", "zarr", "xarray"):
        try:
            out[f"{pkg}_version"] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def read_manifest(folder) -> dict:
    """The manifest.json of a fetched class folder (resources/images/{cls}/)."""
    return json.loads((Path(folder) / "manifest.json").read_text())


# -- fetch -------------------------------------------------------------------------------------
def fetch_image(images, classes, image_dir, download_dir, resize, crop, images_per_class=1,
                image_seed=None, min_images_per_class=None, skip_bad_images=False):
    """One folder per class: 000.png, 001.png, ... and manifest.json (diffxai.fetch)."""
    from .classes import resolve_class
    from .fetch import fetch_class_images

    for c, out_dir in zip(classes, images):
        info = resolve_class(c["synset"])
        m = fetch_class_images(info, out_dir, image_dir=image_dir, cache_dir=download_dir,
                               n=images_per_class, image_seed=image_seed,
                               min_images=min_images_per_class, skip_bad=skip_bad_images,
                               resize=resize, crop=crop)
        for w in m["warnings"] + [f"{r['file']}: {w}" for r in m["images"] for w in r["warnings"]]:
            log.warning("%s: %s", c["slug"], w)
        log.info("%s: %d image(s) <- %s (%s)", out_dir, len(m["images"]),
                 ", ".join(r["file"] for r in m["images"][:5]) + (" ..." if len(m["images"]) > 5 else ""),
                 m["order"])


# -- noise -------------------------------------------------------------------------------------
def noise(images, stores, classes, noise):
    """x (image, seed, step, channel, y, x), written image by image (one image's trajectories in memory)."""
    import xarray as xr
    from PIL import Image

    from .fetch import image_name
    from .noise import image_to_x0, make_scheduler, noise_trajectory, seed_values, select_steps
    from .store import StreamingStore, image_coords

    sched = make_scheduler(noise["num_train_timesteps"], noise["beta_schedule"],
                           noise["beta_start"], noise["beta_end"])
    ks = select_steps(noise["num_train_timesteps"], noise.get("steps"), noise.get("timesteps"))
    seeds = seed_values(noise["seeds"], noise.get("base_seed", 0))
    mode = noise.get("mode", "shared")
    for c, folder, dst in zip(classes, images, stores):
        entries = read_manifest(folder)["images"]
        x0s = []
        for e in entries:
            with Image.open(Path(folder) / image_name(e["image"])) as im:
                x0s.append(image_to_x0(np.asarray(im.convert("RGB"))))
        first = noise_trajectory(x0s[0], sched, ks, seeds, mode, image=0)
        S, K, C, H, W = first["x"].shape
        I = len(entries)
        skeleton = xr.Dataset({"x0": (("image", "channel", "y", "x"), np.stack([x.numpy() for x in x0s]))},
                              coords={**{k: v for k, v in first.coords.items() if set(v.dims) <= {"seed", "step", "channel"}},
                                      **image_coords(entries)},
                              attrs={**first.attrs, **_class_attrs(c), **_versions()})
        with StreamingStore(dst, skeleton, "x", ("image", "seed", "step", "channel", "y", "x"),
                            (I, S, K, C, H, W), (1, 1, min(K, 10), C, H, W)) as st:
            for i in range(I):
                ds = first if i == 0 else noise_trajectory(x0s[i], sched, ks, seeds, mode, image=i)
                for s in range(S):
                    st.write((i, s), ds["x"].values[s])
                del ds
            first = None
        log.info("%s: %d image(s) x %d seeds x %d steps (k=%d..%d) -> %s", c["slug"], I, S, K, ks[0], ks[-1], dst)


# -- classify ----------------------------------------------------------------------------------
def classify(noised, probs, classes, classifier, batch_size, device):
    """p_true, entropy, pred, top5 per (image, seed, step); one image's tensors in memory at a time."""
    import xarray as xr

    from .classify import classify_trajectory, resolve_device
    from .models import load_classifier
    from .store import open_store, write_dataset

    device = resolve_device(device)
    model = load_classifier(classifier, device)
    for c, src, dst in zip(classes, noised, probs):
        nds = open_store(src)
        per_image = [classify_trajectory(model, nds.isel(image=i), int(c["index"]), device, int(batch_size))
                     for i in range(nds.sizes["image"])]
        pds = xr.concat(per_image, dim="image")
        # (concat leaves equal scalar coords scalar: with one image, image_file would lose its dim)
        pds = pds.assign_coords({k: ("image", nds[k].values) for k in ("image", "image_file", "image_sha256")})
        pds.attrs.update(_class_attrs(c), classifier=classifier, device=device,
                         alphas_cumprod=nds.attrs["alphas_cumprod"], seeds=nds.attrs["seeds"],
                         schedule=nds.attrs["schedule"])
        write_dataset(pds, dst)
        p = pds["p_true"].values
        log.info("%s: p_true noisiest %.3f, cleanest %.3f (mean over %d images x %d seeds)", c["slug"],
                 p[..., 0].mean(), p[..., -1].mean(), p.shape[0], p.shape[1])


# -- attribute ---------------------------------------------------------------------------------
def draw_key(seed: int, t: int, image: int = 0) -> int:
    """Per-map key for the engine's random draws: depends on (image, seed, t) only, not on batching.
    Image 0 keeps the one-image pipeline's keys, so its draws are those of earlier runs."""
    return int(seed) * 1_000_003 + int(t) + int(image) * (1 << 40)


def attribute(noised, attributions, method, settings, classes, classifier, seeds, images, target,
              output, device, precision, batch_size, compile):
    """attribution (image, seed, step, y, x) for the first ``images`` images (None: all) and the
    first ``seeds`` seeds (None: all) of each class; one engine call per class."""
    import torch
    import xarray as xr

    from . import gpu
    from .attribution import EngineOptions, attribute as run_engine, method_spec
    from .classify import predict_targets
    from .models import load_classifier
    from .store import RowChunkWriter, StreamingStore, json_attr, open_store

    claim = gpu.claim_for_job(device, log)
    model = load_classifier(classifier, claim.device)
    spec = method_spec(method, settings)
    options = EngineOptions.from_environ(device=claim.device, precision=precision, batch_size=batch_size,
                                         compile=compile, output=output)
    for c, src, dst in zip(classes, noised, attributions):
        nds = open_store(src)
        S = nds.sizes["seed"] if seeds is None else min(int(seeds), nds.sizes["seed"])
        I = nds.sizes["image"] if images is None else min(int(images), nds.sizes["image"])
        nds = nds.isel(image=slice(0, I), seed=slice(0, S))
        K = nds.sizes["step"]
        # (image, seed, step) flattened in C order: map i of the engine is row-major index i
        x = torch.from_numpy(nds["x"].values.reshape(I * S * K, *nds["x"].shape[3:]))
        if target == "predicted":
            targets = predict_targets(model, x, claim.device, PREDICT_BATCH)
        else:
            targets = torch.full((I * S * K,), int(c["index"]), dtype=torch.long)
        keys = [draw_key(s, t, i) for i in nds["image"].values for s in nds["seed"].values for t in nds["t"].values]
        H, W = x.shape[-2:]
        coords = {k: v for k, v in nds.coords.items() if set(v.dims) <= {"image", "seed", "step"}}
        skeleton = xr.Dataset({"target": (("image", "seed", "step"),
                                          targets.numpy().reshape(I, S, K).astype(np.int16))}, coords=coords)
        chunk = min(K, 10)
        t0 = time.perf_counter()
        last = [0.0]

        def progress(done, total, _slug=c["slug"]):
            now = time.perf_counter()
            if done == total or now - last[0] > 10:
                last[0] = now
                log.info("%s %s: %d/%d maps (%.0f s)", method, _slug, done, total, now - t0)

        with StreamingStore(dst, skeleton, "attribution", ("image", "seed", "step", "y", "x"),
                            (I, S, K, H, W), (1, 1, chunk, H, W)) as st:
            writer = RowChunkWriter(st, (I, S), K, chunk)

            def on_result(index, maps):
                idx = range(index.start, index.stop) if isinstance(index, slice) else np.atleast_1d(index)
                for i, m in zip(idx, maps):
                    writer.add(int(i), m)

            result, run = run_engine(model, x, targets, spec, options, draw_keys=keys, on_result=on_result,
                                     progress=progress)
            engine_info = {k: getattr(run, k) for k in ENGINE_PROVENANCE}
            attrs = dict(_class_attrs(c), method=method, settings=json_attr(settings), classifier=classifier,
                         target_mode=target, output=output, precision=precision, **claim.provenance(),
                         seeds=[int(s) for s in nds["seed"].values], images=[int(i) for i in nds["image"].values],
                         seconds=round(time.perf_counter() - t0, 2),
                         engine=json_attr(engine_info),
                         **_versions())
            if precision == "bf16":
                n = min(4, len(x))
                # (as before the redesign: default batch size, eager)
                fp32 = options.replace(precision="fp32", batch_size=None, compile=False)
                ref, _ = run_engine(model, x[:n], targets[:n], spec, fp32, draw_keys=keys[:n])
                err = np.linalg.norm(result[:n] - ref) / max(np.linalg.norm(ref), 1e-30)
                attrs["bf16_rel_error_vs_fp32"] = float(err)
            st.set_attrs(**attrs)
        log.info("%s %s: %d maps in %.1f s -> %s", method, c["slug"], I * S * K, time.perf_counter() - t0, dst)


# -- onset -------------------------------------------------------------------------------------
def onset(probs, per_class, per_image, per_seed, classes, onset):
    """results/onset.csv (per class), onset_images.csv (per image), onset_seeds.csv (per image, seed)."""
    from . import onset as onset_mod
    from .store import atomic_path

    slugs = [c["slug"] for c in classes]
    dss = dict(zip(slugs, _open_all(probs)))
    pc, pi, ps = onset_mod.onset_tables(*onset_mod.curves_from_datasets(dss), **onset)
    for df, dst in ((pc, per_class), (pi, per_image), (ps, per_seed)):
        with atomic_path(dst) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4g")
    for _, r in pc.iterrows():
        log.info("%s: onset %.1f [%.1f, %.1f], %g-crossing %.1f, %d image(s), flags %s", r["cls"], r["onset"],
                 r["onset_lo"], r["onset_hi"], onset["threshold"], r["threshold_cross"], r["n_images"], r["flags"])
    bad = pi[pi["clean_wrong"]]
    for _, r in bad.iterrows():
        log.warning("%s image %d (%s): the classifier never gets it right clean", r["cls"], r["image"], r["image_file"])


# -- figures -----------------------------------------------------------------------------------
def _open_all(paths):
    from .store import open_store

    return [open_store(p) for p in paths]


def _representatives(onset_images, slugs, attributed: dict, image) -> dict:
    """{cls: (image index, why)}: ``image`` if given, else the attributed image nearest the class
    median of the per-image onsets (see figures.representative_image)."""
    import pandas as pd

    from .figures import representative_image

    table = pd.read_csv(onset_images)
    return {s: representative_image(table[table["cls"] == s], attributed[s], image) for s in slugs}


def figure_curves(probs, onset, onset_images, png, pdf, classes, threshold):
    import pandas as pd

    from . import figures
    from .classes import study_reference

    dss = dict(zip([c["slug"] for c in classes], _open_all(probs)))
    study_threshold, study = study_reference()
    figures.softmax_curves(dss, pd.read_csv(onset), png, study={k: v for k, v in study.items() if k in dss},
                           threshold=threshold, study_threshold=study_threshold, pdf=pdf)


def figure_grid(noised, attributions, onset_images, png, pdf, method, classes, grid_steps, image=None):
    from . import figures

    slugs = [c["slug"] for c in classes]
    nds = dict(zip(slugs, _open_all(noised)))
    ads = dict(zip(slugs, _open_all(attributions)))
    rep = _representatives(onset_images, slugs, {s: list(ads[s]["image"].values) for s in slugs}, image)
    labels = {s: f"image {rep[s][0]} ({nds[s]['image_file'].values[rep[s][0]]})" for s in slugs}
    steps = figures.pick_steps(next(iter(ads.values()))["step"].values, grid_steps)
    figures.method_grid(method, {s: nds[s].sel(image=rep[s][0]) for s in slugs},
                        {s: ads[s].sel(image=rep[s][0]) for s in slugs}, steps, png, pdf=pdf,
                        image_labels=labels,
                        image_note=(f"figures.image = {image}" if image is not None
                                    else "the attributed image nearest its class's median onset"))


def figure_onset(noised, attributions, onset, onset_images, png, pdf, classes, methods, offsets, image=None):
    import pandas as pd

    from . import figures
    from .store import open_store

    table = pd.read_csv(onset).set_index("cls")
    per_image = pd.read_csv(onset_images)
    paths = iter(attributions)
    for c, src, out, out_pdf in zip(classes, noised, png, pdf):
        ads = {m: open_store(next(paths)) for m in methods}
        nds = open_store(src)
        cands = list(ads[methods[0]]["image"].values)
        i, why = figures.representative_image(per_image[per_image["cls"] == c["slug"]], cands, image)
        label = f"image {i} ({nds['image_file'].values[i]}; {why})"
        figures.onset_panels(c["slug"], nds.sel(image=i), {m: a.sel(image=i) for m, a in ads.items()},
                             table.loc[c["slug"]], out, offsets=offsets, pdf=out_pdf, image_label=label)


# -- report ------------------------------------------------------------------------------------
def report_md(onset, onset_images, figures, md, config_summary, threshold):
    import pandas as pd

    from .classes import study_reference
    from .store import atomic_path

    study_threshold, study = study_reference()
    df = pd.read_csv(onset)
    pi = pd.read_csv(onset_images)
    t = f"{threshold:g}"
    lines = ["# diffxai results", "",
             f"Onsets along the study's axis (step k, 0 = noisiest). The study (ResNet-18) reports "
             f"where p(true) crosses {study_threshold:g}; `threshold_cross` is where it crosses "
             f"onset.threshold = {t} here.", "",
             f"| class | images × seeds | onset (logistic, 21 %) | 95 % CI | midpoint | {t} crossing | 95 % CI | "
             f"study's {study_threshold:g} crossing | p at clean end | flags |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "–" if pd.isna(v) else f"{v:.1f}"
    for _, r in df.iterrows():
        lines.append(f"| {r['name']} ({r['synset']}) | {r['n_images']} × {r['n_seeds']} | {f(r['onset'])} | "
                     f"[{f(r['onset_lo'])}, {f(r['onset_hi'])}] | {f(r['midpoint'])} | {f(r['threshold_cross'])} | "
                     f"[{f(r['threshold_cross_lo'])}, {f(r['threshold_cross_hi'])}] | "
                     f"{f(study.get(r['cls'], np.nan))} | {r['p_clean']:.2f} | {r['flags']} |")
    lines += ["", "Per image (curve = mean over that image's seeds; CI over seeds). "
              "**never right clean**: at the cleanest step no seed's top-1 class is the true class.", "",
              f"| class | image | file | onset | 95 % CI | {t} crossing | p at clean end | top-1 right clean | flags |",
              "|---|---|---|---|---|---|---|---|---|"]
    for _, r in pi.iterrows():
        right = f"{r['clean_top1']:.0%}" + (" **never right clean**" if r["clean_wrong"] else "")
        lines.append(f"| {r['cls']} | {r['image']} | `{r['image_file']}` | {f(r['onset'])} | "
                     f"[{f(r['onset_lo'])}, {f(r['onset_hi'])}] | {f(r['threshold_cross'])} | "
                     f"{r['p_clean']:.2f} | {right} | {r['flags']} |")
    never = pi[pi["clean_wrong"]]
    if len(never):
        lines += ["", f"{len(never)} image(s) the classifier never gets right clean: " +
                  ", ".join(f"{r['cls']} image {r['image']} (`{r['image_file']}`)" for _, r in never.iterrows())]
    lines += ["", "Figures:", ""] + [f"- `{Path(p).name}`" for p in figures]
    lines += ["", "Settings:", "", "```json", json.dumps(config_summary, indent=1, sort_keys=True, default=str), "```", ""]
    with atomic_path(md) as tmp:
        Path(tmp).write_text("\n".join(lines))


def aggregate(onset, by_category, by_category_png, by_category_pdf, histogram, histogram_pdf, extremes):
    import pandas as pd

    from . import aggregate as agg

    agg.summarise(pd.read_csv(onset), None, by_category=by_category, by_category_png=by_category_png,
                  by_category_pdf=by_category_pdf, histogram=histogram, histogram_pdf=histogram_pdf,
                  extremes=extremes)  # None: the packaged class table
