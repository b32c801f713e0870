"""Time the analysis stage's cheap metrics (enrichment + null, spectra of maps and inputs,
agreement) at paper settings: 4 classes x 100 steps x 4 seeds x 3 methods, 224 x 224 maps.

Maps and inputs are synthetic (smoothed noise; the metrics' cost does not depend on the values);
the masks come from the shared ImageNet samples of the paper's classes. Reading the stores is not
timed. Usage: PYTHONPATH=. python bench/bench_analysis.py [--classes 4] [--steps 100] [--seeds 4]
"""
from __future__ import annotations

import argparse
import glob
import time

import numpy as np
import torch
import xarray as xr
from PIL import Image

from diffxai.analysis import masks as MK
from diffxai.analysis import stage as ST

PAPER = ["n02123394", "n02123597", "n02124075", "n02129604"]


def clean_image(synset: str, size: int = 224) -> np.ndarray:
    files = glob.glob(f"../shared/data/imagenet-samples/{synset}_*.jpg") + \
        glob.glob(f"/work/shared/data/imagenet-samples/{synset}_*.jpg")
    if not files:
        return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    im = Image.open(files[0]).convert("RGB")
    s = 256 / min(im.size)
    im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
    l, t = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((l, t, l + size, t + size)))


def fake_class(n_seeds, n_steps, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = {"step": np.arange(n_steps), "seed": np.arange(n_seeds), "image": [0]}
    x = torch.randn(1, n_seeds, n_steps, 3, size, size, generator=g).numpy()
    noised = xr.Dataset({"x": (("image", "seed", "step", "channel", "y", "x"), x)},
                        coords=coords | {"alpha_bar": ("step", np.linspace(0.01, 0.99, n_steps))})
    attrs = {}
    for m in ("integrated_gradients", "gradient_shap", "occlusion"):
        a = torch.nn.functional.avg_pool2d(torch.randn(n_seeds * n_steps, 1, size, size, generator=g), 5, 1, 2)
        attrs[m] = xr.Dataset({"attribution": (("image", "seed", "step", "y", "x"),
                                               a.numpy().reshape(1, n_seeds, n_steps, size, size))},
                              coords=coords, attrs={"class_index": 0, "method": m})
    return noised, attrs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}")
    tot = {"masks": 0.0, "per_method": 0.0, "agreement": 0.0}
    cpu = {k: 0.0 for k in tot}
    settings = {"faithfulness": {"enabled": False}, "randomization": {"enabled": False}}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for c in range(args.classes):
        rgb = clean_image(PAPER[c % 4])[None]
        noised, attrs = fake_class(args.seeds, args.steps, seed=c)
        t0, c0 = time.perf_counter(), time.process_time()
        masks = MK.class_masks(rgb)
        t1, c1 = time.perf_counter(), time.process_time()
        for i, (m, ds) in enumerate(attrs.items()):
            ST.analyze_method(noised, ds, rgb, None, settings, masks=masks, shared=i == 0)
        t2, c2 = time.perf_counter(), time.process_time()
        ST.analyze_agreement(attrs, settings)
        t3, c3 = time.perf_counter(), time.process_time()
        for k, a, b in (("masks", c0, c1), ("per_method", c1, c2), ("agreement", c2, c3)):
            cpu[k] += b - a
        tot["masks"] += t1 - t0
        tot["per_method"] += t2 - t1
        tot["agreement"] += t3 - t2
        print(f"class {c}: masks {t1 - t0:.2f} s, enrichment+spectra x3 methods {t2 - t1:.2f} s, "
              f"agreement {t3 - t2:.2f} s", flush=True)
    n_maps = args.classes * args.steps * args.seeds * 3
    wall, cpu_all = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"total {sum(tot.values()):.1f} s wall in the metrics for {n_maps} maps "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in tot.items())}); CPU time in the metrics "
          f"{sum(cpu.values()):.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in cpu.items())}); whole loop incl. synthetic data: "
          f"{wall:.1f} s wall, {cpu_all:.1f} s CPU (process time, both threads)")


if __name__ == "__main__":
    main()
