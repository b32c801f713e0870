"""rules/attribute.smk: the attribution maps of one method."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from .. import paths
from .common import class_attrs, job_torch, versions

log = logging.getLogger("diffxai.stages.attribute")

#: images per forward when the targets are the model's own predictions (target: predicted)
PREDICT_BATCH = 64
#: how the engine ran a call, recorded in the attribution store (provenance: no number depends on it)
ENGINE_PROVENANCE = ("batch_size", "compiled", "compile_mode", "channels_last", "oom_halvings",
                     "occlusion_incremental_cut")


def draw_key(seed: int, t: int, image: int = 0) -> int:
    """Per-map key for the engine's random draws: depends on (image, seed, t) only, not on batching.
    Image 0 keeps the one-image keys, so its draws are those of earlier runs."""
    return int(seed) * 1_000_003 + int(t) + int(image) * (1 << 40)


@paths.files(noised=paths.NOISED, attributions=paths.ATTRIBUTIONS)
def attribute(noised, attributions, method, settings, classes, classifier, seeds, images, target,
              output, device, precision, batch_size, compile, check_error=False, occlusion_tail="model"):
    """attribution (image, seed, step, y, x) per class ({cls: noised store} -> {cls: attribution
    store}) for the first ``images`` images (None: all) and the first ``seeds`` seeds (None: all);
    one engine call per class."""
    from .. import gpu
    from ..attribution import EngineOptions, method_spec

    claim = gpu.claim_for_job(device, log)
    job_torch()
    from ..models import load_classifier

    model = load_classifier(classifier, claim.device)
    spec = method_spec(method, settings)
    options = EngineOptions.from_environ(device=claim.device, precision=precision, batch_size=batch_size,
                                         compile=compile, output=output, occlusion_tail=occlusion_tail)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        ahead = pool.submit(_read_class, noised[classes[0]["slug"]], seeds, images) if classes else None
        for j, c in enumerate(classes):
            nds, x = ahead.result()
            if j + 1 < len(classes):  # the next class is read while this one computes
                ahead = pool.submit(_read_class, noised[classes[j + 1]["slug"]], seeds, images)
            _attribute_class(model, spec, options, claim, c, nds, x, attributions[c["slug"]], method=method,
                             settings=settings, classifier=classifier, target=target, output=output,
                             precision=precision, check_error=check_error)


def _read_class(src, seeds, images):
    """The attributed part of a class's noised store (first ``images`` images, first ``seeds``
    seeds; None: all) and its x as (image * seed * step, C, H, W) in memory, in C order: map i of
    the engine is row-major index i."""
    import torch

    from ..store import open_store

    nds = open_store(src)
    S = nds.sizes["seed"] if seeds is None else min(int(seeds), nds.sizes["seed"])
    I = nds.sizes["image"] if images is None else min(int(images), nds.sizes["image"])
    nds = nds.isel(image=slice(0, I), seed=slice(0, S))
    return nds, torch.from_numpy(nds["x"].values.reshape(I * S * nds.sizes["step"], *nds["x"].shape[3:]))


def _attribute_class(model, spec, options, claim, c, nds, x, dst, *, method, settings, classifier, target,
                     output, precision, check_error):
    import numpy as np
    import torch
    import xarray as xr

    from ..attribution import attribute as run_engine
    from ..classify import predict_targets
    from ..store import RowChunkWriter, StreamingStore, json_attr

    I, S, K = (nds.sizes[d] for d in ("image", "seed", "step"))
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
        writer, writes = RowChunkWriter(st, (I, S), K, chunk), []

        def add(idx, maps):
            for i, m in zip(idx, maps):
                writer.add(int(i), m)

        def on_result(index, maps):  # finished maps go to the store on another thread while the engine runs
            idx = range(index.start, index.stop) if isinstance(index, slice) else np.atleast_1d(index)
            writes.append(io.submit(add, list(idx), maps))

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as io:
            result, run = run_engine(model, x, targets, spec, options, draw_keys=keys, on_result=on_result,
                                     progress=progress)
            for w in writes:
                w.result()  # a failed write fails the job here
        engine_info = {k: getattr(run, k) for k in ENGINE_PROVENANCE}
        attrs = dict(class_attrs(c), method=method, settings=json_attr(settings), classifier=classifier,
                     target_mode=target, output=output, precision=precision, **claim.provenance(),
                     seeds=[int(s) for s in nds["seed"].values], images=[int(i) for i in nds["image"].values],
                     seconds=round(time.perf_counter() - t0, 2),
                     engine=json_attr(engine_info),
                     **versions())
        if precision == "bf16":
            n = min(4, len(x))
            # (as before the redesign: default batch size, eager)
            fp32 = options.replace(precision="fp32", batch_size=None, compile=False)
            ref, _ = run_engine(model, x[:n], targets[:n], spec, fp32, draw_keys=keys[:n])
            err = np.linalg.norm(result[:n] - ref) / max(np.linalg.norm(ref), 1e-30)
            attrs["bf16_rel_error_vs_fp32"] = float(err)
        if check_error:  # every variant against float64 Captum (diffxai.attribution.accuracy)
            from ..attribution.accuracy import error_record

            attrs["error_vs_float64"] = json_attr(error_record(model, x, targets, spec, options, result, n=2))
        st.set_attrs(**attrs)
    log.info("%s %s: %d maps in %.1f s -> %s", method, c["slug"], I * S * K, time.perf_counter() - t0, dst)
