"""Occlusion tail variants (maps/s and error vs float64), every method's error vs float64 Captum,
and the noise's device arithmetic (bitwise?), in one JSON. Called by bench/gpu_flow.sh; runs on
the CPU too (``--quick``: a tiny setting for the flow test).

    python bench/accuracy_speed.py --out acc.json                     # the GPU measurement
    python bench/accuracy_speed.py --out acc.json --quick --device cpu

Inputs: the study's classes' sample images (tiger, Persian cat) noised at a few steps; the study's
method settings (IG n_steps 20, GradientSHAP 20 samples, Occlusion 15/8); EfficientNet-Lite0.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffxai.attribution import EngineOptions, attribute, method_spec  # noqa: E402
from diffxai.attribution.accuracy import captum_float64, error_record, map_error  # noqa: E402
from diffxai.attribution.reference import sample_image  # noqa: E402
from diffxai.models import load_classifier  # noqa: E402
from diffxai.noise import make_scheduler, regenerate_x, select_steps  # noqa: E402

SETTINGS = {"integrated_gradients": {"n_steps": 20, "method": "gausslegendre"},
            "gradient_shap": {"n_samples": 20, "stdevs": 0.0, "baselines": "zero", "n_baselines": 1},
            "occlusion": {"window": [3, 15, 15], "stride": [3, 8, 8], "baseline": 0.0}}
#: (stem, class index) of the images the maps are made from
IMAGES = (("n02129604_tiger", 292), ("n02123394_Persian_cat", 283))
TAILS = {"eager": dict(occlusion_tail="model"), "folded": dict(occlusion_tail="folded"),
         "fused": dict(occlusion_tail="fused"), "compiled": dict(compile=True),
         "compiled_fused": dict(compile=True, occlusion_tail="fused")}


def inputs(n: int, size: int, folders) -> tuple[torch.Tensor, torch.Tensor]:
    """n noised maps' inputs: the images in turn, steps spread over the trajectory, seed 0."""
    sched = make_scheduler(100)
    xs, ts = [], []
    for i in range(n):
        stem, cls = IMAGES[i % len(IMAGES)]
        x0 = sample_image(stem, size, folders)
        if x0 is None:
            raise SystemExit(f"accuracy_speed: {stem}.jpg not found in {folders}")
        k = int(select_steps(100, max(n, 2))[i])
        xs.append(regenerate_x(x0, 0, sched, [k])[0])
        ts.append(cls)
    return torch.stack(xs), torch.tensor(ts)


def sync(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def time_variant(model, x, t, spec, opt) -> dict:
    """First call (compile included) on one map, then maps/s over all of x."""
    t0 = time.perf_counter()
    attribute(model, x[:1], t[:1], spec, opt)
    sync(opt.device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps, stats = attribute(model, x, t, spec, opt)
    sync(opt.device)
    wall = time.perf_counter() - t0
    return {"first_call_s": round(first, 2), "maps": len(x), "wall_s": round(wall, 3),
            "maps_per_s": round(len(x) / wall, 3), "cut": stats.occlusion_incremental_cut}, maps


def occlusion_tails(model, x, t, dev, variants, n_err, cache_dir) -> dict:
    spec = method_spec("occlusion", SETTINGS["occlusion"])
    if not variants:
        return {}
    ref = captum_float64(model, x[:n_err], t[:n_err], spec, dev)
    out = {}
    for name in variants:
        opt = EngineOptions(device=dev, compile_cache_dir=cache_dir, allow_cpu_compile=True, **TAILS[name])
        try:
            row, maps = time_variant(model, x, t, spec, opt)
            row["error_vs_float64"] = map_error(maps[:n_err], ref)
        except Exception as exc:  # one variant failing must not lose the others' numbers
            row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        out[name] = row
        print(f"occlusion {name}: {row}", flush=True)
    return out


def noise_device(dev) -> dict:
    """regenerate_x with the arithmetic on ``dev`` against the CPU: bitwise equal? seconds each."""
    x0 = torch.rand(3, 224, 224) * 2 - 1
    ks = select_steps(100, 100)
    res = {}
    for d in ("cpu", dev):
        t0 = time.perf_counter()
        res[d] = regenerate_x(x0, 3, make_scheduler(100), ks, "shared", device=d)
        res[f"{d}_s"] = round(time.perf_counter() - t0, 3)
    return {"bitwise_equal": bool(torch.equal(res["cpu"], res[dev])), "cpu_s": res["cpu_s"], "device_s": res[f"{dev}_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--maps", type=int, default=16, help="maps per Occlusion timing")
    ap.add_argument("--error-maps", type=int, default=2)
    ap.add_argument("--variants", default="eager,folded,fused,compiled,compiled_fused")
    ap.add_argument("--methods", default="integrated_gradients,gradient_shap,occlusion")
    ap.add_argument("--compile-cache", default=None)
    ap.add_argument("--quick", action="store_true", help="64 px, 2 maps, IG 4 steps, GS 4 samples")
    ap.add_argument("--images", action="append", default=[])
    a = ap.parse_args(argv)
    folders = [Path(p) for p in a.images] + [REPO / ".devdata" / "images", REPO.parent / "shared" / "data" / "imagenet-samples"]
    if a.quick:
        a.size, a.maps = 64, min(a.maps, 2)
        SETTINGS["integrated_gradients"]["n_steps"] = SETTINGS["gradient_shap"]["n_samples"] = 4
    dev = a.device
    t_all = time.perf_counter()
    model = load_classifier("efficientnet_lite0", dev)
    x, t = inputs(max(a.maps, a.error_maps), a.size, folders)
    result = {"device": dev, "gpu": torch.cuda.get_device_name() if dev.startswith("cuda") else None,
              "torch": torch.__version__, "size": a.size, "settings": SETTINGS, "errors": {}}
    def save():  # after every section: a run stopped by its time limit keeps what it measured
        result["seconds"] = round(time.perf_counter() - t_all, 1)
        a.out.write_text(json.dumps(result, indent=1))

    if dev.startswith("cuda"):
        result["noise_device"] = noise_device(dev)
    save()
    for m in a.methods.split(","):
        if m:
            rec = error_record(model, x, t, method_spec(m, SETTINGS[m]), EngineOptions(device=dev), n=a.error_maps)
            result["errors"][m] = rec
            print(f"{m}: captum fp32 {rec['captum_fp32']}, engine {rec['engine']}", flush=True)
            save()
    variants = [v for v in a.variants.split(",") if v]
    result["occlusion_tails"] = occlusion_tails(model, x[:a.maps], t[:a.maps], dev, variants, a.error_maps,
                                                a.compile_cache)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
