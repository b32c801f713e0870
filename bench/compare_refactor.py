"""Bitwise check that the attribution engine's redesign (diffxai.engine -> diffxai.attribution)
changed no number.

    # 1. with the ORIGINAL code (e.g. `git archive e667414 | tar -x -C /tmp/eng_orig`):
    cd /tmp/eng_orig && PYTHONPATH=$PWD python /path/to/bench/compare_refactor.py --record /tmp/eng_ref
    # 2. with the new code:
    PYTHONPATH=$PWD python bench/compare_refactor.py --check /tmp/eng_ref

Runs the engine on the CPU on real noised ImageNet images for each method at the default config's
settings (config/config.yaml) and at the study's (config/paper.yaml: IG n_steps 20, GradientSHAP 20
samples with the pipeline's draw keys, Occlusion (3,15,15)/(3,8,8) incremental and full), plus a few
side paths (gradient-only IG and GradientSHAP, uniform GradientSHAP baselines with noise, softmax
output, per-channel Occlusion windows, batches that straddle maps). ``--record`` saves one .npy per case; ``--check``
recomputes every case and compares with ``np.array_equal`` (bitwise), printing one line per case.
Works against both APIs (old ``diffxai.engine``, new ``diffxai.attribution``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

# (file stem, ImageNet class index)
TIGER, PERSIAN, SIAMESE = ("n02129604_tiger", 292), ("n02123394_Persian_cat", 283), ("n02123597_Siamese_cat", 284)

#: case -> (method, settings, image size, [(image, class, study step, noise seed)], call options)
CASES = {
    # config/config.yaml (the default workflow)
    "default_ig": ("integrated_gradients", {"n_steps": 4, "method": "gausslegendre"}, 224,
                   [(TIGER, 30, 0), (PERSIAN, 70, 0), (SIAMESE, 99, 0)], {}),
    "default_gs": ("gradient_shap", {"n_samples": 4, "stdevs": 0.0, "baselines": "zero", "n_baselines": 1}, 224,
                   [(TIGER, 30, 0), (PERSIAN, 70, 0), (SIAMESE, 99, 0)], {"keys": True}),
    "default_occ": ("occlusion", {"window": [3, 56, 56], "stride": [3, 56, 56], "baseline": 0.0}, 224,
                    [(TIGER, 30, 0), (PERSIAN, 70, 0)], {}),
    # config/paper.yaml (the study)
    "study_ig": ("integrated_gradients", {"n_steps": 20, "method": "gausslegendre"}, 224,
                 [(TIGER, 45, 0), (PERSIAN, 60, 1)], {}),
    "study_gs": ("gradient_shap", {"n_samples": 20, "stdevs": 0.0, "baselines": "zero", "n_baselines": 1}, 224,
                 [(TIGER, 45, 0), (PERSIAN, 60, 1)], {"keys": True}),
    "study_occ_incremental": ("occlusion", {"window": [3, 15, 15], "stride": [3, 8, 8], "baseline": 0.0}, 224,
                              [(TIGER, 45, 0), (PERSIAN, 60, 1)], {"incremental": True}),
    "study_occ_full": ("occlusion", {"window": [3, 15, 15], "stride": [3, 8, 8], "baseline": 0.0}, 224,
                       [(TIGER, 45, 0)], {"incremental": False}),
    # side paths, small images
    "ig_gradient_only": ("integrated_gradients", {"n_steps": 5, "multiply_by_inputs": False}, 64,
                         [(TIGER, 20, 0), (PERSIAN, 50, 2)], {"batch_size": 4}),
    "ig_riemann_softmax": ("integrated_gradients", {"n_steps": 6, "method": "riemann_trapezoid"}, 64,
                           [(TIGER, 20, 0), (PERSIAN, 50, 2), (SIAMESE, 80, 1)],
                           {"batch_size": 7, "output": "softmax"}),
    "gs_uniform_noise": ("gradient_shap", {"n_samples": 6, "stdevs": 0.2, "baselines": "uniform",
                                           "n_baselines": 3}, 64,
                         [(TIGER, 20, 0), (PERSIAN, 50, 2), (SIAMESE, 80, 1)], {"keys": True, "batch_size": 5}),
    "gs_gradient_only": ("gradient_shap", {"n_samples": 5, "stdevs": 0.1, "multiply_by_inputs": False}, 64,
                         [(TIGER, 20, 0), (PERSIAN, 50, 2)], {"keys": True, "batch_size": 4}),
    "occ_softmax": ("occlusion", {"window": [3, 9, 9], "stride": [3, 6, 6]}, 64,
                    [(TIGER, 20, 0), (PERSIAN, 50, 2)], {"batch_size": 32, "output": "softmax"}),
    "occ_per_channel_incremental": ("occlusion", {"window": [1, 9, 9], "stride": [1, 6, 6], "baseline": 0.3}, 96,
                                    [(TIGER, 55, 0)], {"batch_size": 100, "incremental": True}),
    "occ_per_channel_full": ("occlusion", {"window": [1, 9, 9], "stride": [1, 6, 6], "baseline": 0.3}, 96,
                             [(TIGER, 55, 0)], {"batch_size": 100, "incremental": False}),
}

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIRS = [ROOT.parent / "shared" / "data" / "imagenet-samples", Path("/work/shared/data/imagenet-samples"),
              ROOT / ".devdata"]


def _image(stem: str, size: int) -> torch.Tensor:
    # its own copy of diffxai.attribution.reference.sample_image: this script also records with
    # e667414's package, which has no such function
    from PIL import Image

    for d in IMAGE_DIRS:
        f = d / f"{stem}.jpg"
        if f.exists():
            break
    else:
        raise SystemExit(f"{stem}.jpg not found in {IMAGE_DIRS}")
    im = Image.open(f).convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    l, t = (w - size) // 2, (h - size) // 2
    a = np.array(im.crop((l, t, l + size, t + size)), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1) / 127.5 - 1.0


def _inputs(maps, size):
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps (T=100 linear betas, t = 99 - k), targets, draw keys."""
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)
    xs, ts, keys = [], [], []
    for (stem, cls), k, seed in maps:
        x0 = _image(stem, size)
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        xs.append((ab[99 - k].sqrt() * x0 + (1 - ab[99 - k]).sqrt() * eps).float())
        ts.append(cls)
        keys.append(int(seed) * 1_000_003 + (99 - k))  # the pipeline's draw_key(seed, t)
    return torch.stack(xs), torch.tensor(ts), keys


def _runner():
    """attribute(model, x, t, method, settings, **opts) -> maps, with whichever API is installed."""
    try:
        from diffxai.attribution import EngineOptions, attribute, method_spec
    except ImportError:
        from diffxai.engine import attribute as old_attribute, method_spec

        def run(model, x, t, method, settings, keys=None, **kw):
            return old_attribute(model, x, t, method_spec(method, settings), device="cpu", draw_keys=keys, **kw)

        return run, "diffxai.engine (old)"

    def run(model, x, t, method, settings, keys=None, incremental=None, **kw):
        if incremental is not None:
            kw["occlusion_incremental"] = incremental
        maps, _ = attribute(model, x, t, method_spec(method, settings), EngineOptions(device="cpu", **kw),
                            draw_keys=keys)
        return maps

    return run, "diffxai.attribution (new)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", metavar="DIR", help="save the maps of every case here")
    g.add_argument("--check", metavar="DIR", help="compare every case with the maps saved here")
    ap.add_argument("--cases", nargs="*", default=list(CASES), help="subset of: " + ", ".join(CASES))
    ap.add_argument("--threads", type=int, default=2, help="torch threads (use the same for both runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffxai.models import load_classifier

    model = load_classifier("efficientnet_lite0", "cpu")
    run, api = _runner()
    print(f"engine: {api}; torch {torch.__version__}, {args.threads} threads", flush=True)
    folder = Path(args.record or args.check)
    folder.mkdir(parents=True, exist_ok=True)
    bad = 0
    for name in args.cases:
        method, settings, size, maps, opts = CASES[name]
        opts = dict(opts)
        x, t, keys = _inputs(maps, size)
        t0 = time.perf_counter()
        got = run(model, x, t, method, settings, keys=keys if opts.pop("keys", False) else None, **opts)
        dt = time.perf_counter() - t0
        path = folder / f"{name}.npy"
        if args.record:
            np.save(path, got)
            print(f"{name:30s} recorded {got.shape} ({dt:.1f} s)", flush=True)
            continue
        ref = np.load(path)
        same = ref.shape == got.shape and ref.dtype == got.dtype and np.array_equal(ref, got)
        diff = float(np.abs(ref.astype(np.float64) - got).max()) if ref.shape == got.shape else float("nan")
        bad += not same
        print(f"{name:30s} {'IDENTICAL' if same else 'DIFFERENT'} {got.shape} max|diff| {diff:.3g} ({dt:.1f} s)",
              flush=True)
    if args.check:
        print(f"{len(args.cases) - bad}/{len(args.cases)} cases bitwise identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
