"""One function per workflow stage. Snakemake scripts call these (via diffxai.smk.run) with the
rule's named inputs, outputs and params as keyword arguments; tests call them directly."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("diffxai.pipeline")

STUDY_CROSSING = {"tiger": 38, "egyptian_cat": 48, "persian_cat": 57, "siamese_cat": 59}
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


# -- fetch -------------------------------------------------------------------------------------
def fetch_image(png, meta, classes, image_dir, resize, crop):
    from .classes import resolve_class
    from .fetch import fetch_class_image
    from .images import prepare_image

    cache = Path("resources/downloads")
    for c, out_png, out_json in zip(classes, png, meta):
        info = resolve_class(c["synset"])
        src, source = fetch_class_image(info, image_dir, cache)
        warnings = prepare_image(src, out_png, out_json, info, resize, crop, source=source)
        for w in warnings or []:
            log.warning("%s: %s", c["slug"], w)
        log.info("%s <- %s", out_png, source)


# -- noise -------------------------------------------------------------------------------------
def noise(png, stores, classes, noise):
    from PIL import Image

    from .images import sha256_file
    from .noise import image_to_x0, make_scheduler, noise_trajectory, seed_values, select_steps
    from .store import write_dataset

    sched = make_scheduler(noise["num_train_timesteps"], noise["beta_schedule"],
                           noise["beta_start"], noise["beta_end"])
    ks = select_steps(noise["num_train_timesteps"], noise.get("steps"), noise.get("timesteps"))
    seeds = seed_values(noise["seeds"], noise.get("base_seed", 0))
    for c, src, dst in zip(classes, png, stores):
        with Image.open(src) as im:
            img = np.asarray(im.convert("RGB"))
        ds = noise_trajectory(image_to_x0(img), sched, ks, seeds, noise.get("mode", "shared"))
        ds.attrs.update(_class_attrs(c), image_sha256=sha256_file(src), **_versions())
        S, K, C, H, W = ds["x"].shape
        write_dataset(ds, dst, encoding={"x": {"chunks": (1, min(K, 10), C, H, W)}})
        log.info("%s: %d seeds x %d steps (k=%d..%d) -> %s", c["slug"], S, K, ks[0], ks[-1], dst)


# -- classify ----------------------------------------------------------------------------------
def classify(noised, probs, classes, classifier, batch_size, device):
    from .classify import classify_trajectory, resolve_device
    from .models import load_classifier
    from .store import open_store, write_dataset

    device = resolve_device(device)
    model = load_classifier(classifier, device)
    for c, src, dst in zip(classes, noised, probs):
        nds = open_store(src)
        pds = classify_trajectory(model, nds, int(c["index"]), device, int(batch_size))
        pds.attrs.update(_class_attrs(c), classifier=classifier, device=device,
                         alphas_cumprod=nds.attrs["alphas_cumprod"], seeds=nds.attrs["seeds"],
                         schedule=nds.attrs["schedule"], image_sha256=nds.attrs["image_sha256"])
        write_dataset(pds, dst)
        p = pds["p_true"].values
        log.info("%s: p_true noisiest %.3f, cleanest %.3f (mean over %d seeds)", c["slug"],
                 p[:, 0].mean(), p[:, -1].mean(), p.shape[0])


# -- attribute ---------------------------------------------------------------------------------
class _RowChunkWriter:
    """Collect maps (arriving in any order) and write whole (1, step-chunk) Zarr chunks."""

    def __init__(self, store, n_steps, chunk):
        self.store, self.K, self.chunk = store, n_steps, chunk
        self.buf: dict[tuple[int, int], dict[int, np.ndarray]] = {}

    def add(self, flat_index: int, amap: np.ndarray) -> None:
        s, k = divmod(int(flat_index), self.K)
        block = k // self.chunk
        pending = self.buf.setdefault((s, block), {})
        pending[k] = amap
        k0, k1 = block * self.chunk, min(self.K, (block + 1) * self.chunk)
        if len(pending) == k1 - k0:
            self.store.write((s, slice(k0, k1)), np.stack([pending[i] for i in range(k0, k1)]))
            del self.buf[(s, block)]


def draw_key(seed: int, t: int) -> int:
    """Per-map key for the engine's random draws: depends on (seed, t) only, not on batching."""
    return int(seed) * 1_000_003 + int(t)


def attribute(noised, attributions, method, settings, classes, classifier, seeds, target, output,
              device, precision, batch_size, compile):
    import torch
    import xarray as xr

    from . import gpu
    from .attribution import EngineOptions, attribute as run_engine, method_spec
    from .classify import predict_targets
    from .models import load_classifier
    from .store import StreamingStore, json_attr, open_store

    claim = gpu.claim_for_job(device, log)
    model = load_classifier(classifier, claim.device)
    spec = method_spec(method, settings)
    options = EngineOptions.from_environ(device=claim.device, precision=precision, batch_size=batch_size,
                                         compile=compile, output=output)
    for c, src, dst in zip(classes, noised, attributions):
        nds = open_store(src)
        S = nds.sizes["seed"] if seeds is None else min(int(seeds), nds.sizes["seed"])
        nds = nds.isel(seed=slice(0, S))
        K = nds.sizes["step"]
        x = torch.from_numpy(nds["x"].values.reshape(S * K, *nds["x"].shape[2:]))
        if target == "predicted":
            targets = predict_targets(model, x, claim.device, PREDICT_BATCH)
        else:
            targets = torch.full((S * K,), int(c["index"]), dtype=torch.long)
        keys = [draw_key(s, t) for s in nds["seed"].values for t in nds["t"].values]
        H, W = x.shape[-2:]
        coords = {k: v for k, v in nds.coords.items() if set(v.dims) <= {"seed", "step"}}
        skeleton = xr.Dataset({"target": (("seed", "step"), targets.numpy().reshape(S, K).astype(np.int16))},
                              coords=coords)
        chunk = min(K, 10)
        t0 = time.perf_counter()
        last = [0.0]

        def progress(done, total, _slug=c["slug"]):
            now = time.perf_counter()
            if done == total or now - last[0] > 10:
                last[0] = now
                log.info("%s %s: %d/%d maps (%.0f s)", method, _slug, done, total, now - t0)

        with StreamingStore(dst, skeleton, "attribution", ("seed", "step", "y", "x"), (S, K, H, W),
                            (1, chunk, H, W)) as st:
            writer = _RowChunkWriter(st, K, chunk)

            def on_result(index, maps):
                idx = range(index.start, index.stop) if isinstance(index, slice) else np.atleast_1d(index)
                for i, m in zip(idx, maps):
                    writer.add(int(i), m)

            result, run = run_engine(model, x, targets, spec, options, draw_keys=keys, on_result=on_result,
                                     progress=progress)
            engine_info = {k: getattr(run, k) for k in ENGINE_PROVENANCE}
            attrs = dict(_class_attrs(c), method=method, settings=json_attr(settings), classifier=classifier,
                         target_mode=target, output=output, precision=precision, **claim.provenance(),
                         seeds=[int(s) for s in nds["seed"].values], seconds=round(time.perf_counter() - t0, 2),
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
        log.info("%s %s: %d maps in %.1f s -> %s", method, c["slug"], S * K, time.perf_counter() - t0, dst)


# -- onset -------------------------------------------------------------------------------------
def onset(probs, per_class, per_seed, classes, onset):
    from . import onset as onset_mod
    from .store import atomic_path

    slugs = [c["slug"] for c in classes]
    curves, info, ac = onset_mod.curves_from_datasets(dict(zip(slugs, _open_all(probs))))
    pc, ps = onset_mod.onset_tables(curves, info, ac, **onset)  # the schema's onset keys are its kwargs
    for df, dst in ((pc, per_class), (ps, per_seed)):
        with atomic_path(dst) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4g")
    for _, r in pc.iterrows():
        log.info("%s: onset %.1f [%.1f, %.1f], 0.5-crossing %.1f, flags %s", r["cls"], r["onset"],
                 r["onset_lo"], r["onset_hi"], r["threshold_cross"], r["flags"])


# -- figures -----------------------------------------------------------------------------------
def _open_all(paths):
    from .store import open_store

    return [open_store(p) for p in paths]


def figure_curves(probs, onset, png, pdf, classes):
    import pandas as pd

    from . import figures

    dss = dict(zip([c["slug"] for c in classes], _open_all(probs)))
    figures.softmax_curves(dss, pd.read_csv(onset), png,
                           study={k: v for k, v in STUDY_CROSSING.items() if k in dss})


def figure_grid(noised, attributions, png, pdf, method, classes, grid_steps):
    from . import figures

    slugs = [c["slug"] for c in classes]
    nds = dict(zip(slugs, _open_all(noised)))
    ads = dict(zip(slugs, _open_all(attributions)))
    steps = figures.pick_steps(next(iter(ads.values()))["step"].values, grid_steps)
    figures.method_grid(method, nds, ads, steps, png)


def figure_onset(noised, attributions, onset, png, pdf, classes, methods, offsets):
    import pandas as pd

    from . import figures
    from .store import open_store

    table = pd.read_csv(onset).set_index("cls")
    paths = iter(attributions)
    for c, src, out in zip(classes, noised, png):
        ads = {m: open_store(next(paths)) for m in methods}
        figures.onset_panels(c["slug"], open_store(src), ads, table.loc[c["slug"]], out, offsets=offsets)


# -- report ------------------------------------------------------------------------------------
def report_md(onset, figures, md, config_summary):
    import pandas as pd

    from .store import atomic_path

    df = pd.read_csv(onset)
    lines = ["# diffxai results", "",
             "Onsets along the study's axis (step k, 0 = noisiest). The study (ResNet-18) reports "
             "where p(true) crosses 0.5; `threshold_cross` is that quantity here.", "",
             "| class | onset (logistic, 21 %) | 95 % CI | midpoint | 0.5 crossing | 95 % CI | study's 0.5 crossing | p at clean end | flags |",
             "|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "–" if pd.isna(v) else f"{v:.1f}"
    for _, r in df.iterrows():
        lines.append(f"| {r['name']} ({r['synset']}) | {f(r['onset'])} | [{f(r['onset_lo'])}, {f(r['onset_hi'])}] | "
                     f"{f(r['midpoint'])} | {f(r['threshold_cross'])} | [{f(r['threshold_cross_lo'])}, "
                     f"{f(r['threshold_cross_hi'])}] | {STUDY_CROSSING.get(r['cls'], '–')} | {r['p_clean']:.2f} | {r['flags']} |")
    lines += ["", "Figures:", ""] + [f"- `{Path(p).name}`" for p in figures]
    lines += ["", "Settings:", "", "```json", json.dumps(config_summary, indent=1, sort_keys=True, default=str), "```", ""]
    with atomic_path(md) as tmp:
        Path(tmp).write_text("\n".join(lines))


def aggregate(onset, by_category, histogram, extremes):
    import pandas as pd

    from . import aggregate as agg

    agg.summarise(pd.read_csv(onset), None, Path(by_category).parent)  # None: the packaged class table
