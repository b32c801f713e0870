"""Captum as the engine's reference: one Captum call per map (what a user would write, the
benchmark's "naive loop") and a recorder of what Captum's GradientShap draws, so that the engine
can replay the same draws (``attribute(..., draws=)``) and be compared number for number."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .methods import MethodSpec


def sample_image(stem: str, size: int, folders) -> torch.Tensor | None:
    """``<folder>/<stem>.jpg`` from the first folder that has it as a (3, size, size) tensor in
    [-1, 1] (bicubic resize of the short side, centre crop): the real inputs of the engine's
    comparisons with Captum (tests, bench/compare_refactor.py); None if no folder has it."""
    from PIL import Image

    f = next((d / f"{stem}.jpg" for d in folders if (d / f"{stem}.jpg").exists()), None)
    if f is None:
        return None
    im = Image.open(f).convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    l, t = (w - size) // 2, (h - size) // 2
    a = np.array(im.crop((l, t, l + size, t + size)), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1) / 127.5 - 1.0


@contextlib.contextmanager
def record_gs_draws(rec: dict):
    """Record what Captum's GradientShap draws into ``rec``: torch.normal (NoiseTunnel noise),
    np.random.choice (baseline indices, _expand_and_update_baselines), np.random.uniform (path
    coefficients, InputBaselineXGradient). The engine replays them with ``attribute(draws=)``."""
    real = (torch.normal, np.random.choice, np.random.uniform)

    def normal(*a, **k):
        rec["noise"] = real[0](*a, **k)
        return rec["noise"]

    def choice(*a, **k):
        rec["baseline_index"] = np.asarray(real[1](*a, **k))
        return rec["baseline_index"]

    def uniform(*a, **k):
        rec["alpha"] = np.asarray(real[2](*a, **k))
        return rec["alpha"]

    torch.normal, np.random.choice, np.random.uniform = normal, choice, uniform
    try:
        yield
    finally:
        torch.normal, np.random.choice, np.random.uniform = real


def captum_maps(model, x, t, spec: MethodSpec, dev, dtype=torch.float32,
                perturbations_per_eval: int = 1) -> tuple[np.ndarray, list | None]:
    """One Captum call per map, as a user would write it. Returns maps and (GS) Captum's draws.
    ``dtype``: of the inputs (the model must match; float64 maps stay float64);
    ``perturbations_per_eval``: Occlusion's windows per forward (Captum's default 1)."""
    from captum.attr import GradientShap, IntegratedGradients, Occlusion

    maps, draws = [], []
    for i in range(len(x)):
        xi = x[i:i + 1].to(dev, dtype)
        ti = int(t[i])
        if spec.name == "integrated_gradients":
            a = IntegratedGradients(model, multiply_by_inputs=spec.multiply_by_inputs).attribute(
                xi, baselines=0.0, target=ti, n_steps=spec.n_steps, method=spec.method)
        elif spec.name == "gradient_shap":
            rec: dict = {}
            with record_gs_draws(rec):
                a = GradientShap(model, multiply_by_inputs=spec.multiply_by_inputs).attribute(
                    xi, baselines=torch.zeros(1, *xi.shape[1:], device=dev), n_samples=spec.n_samples,
                    stdevs=spec.stdevs, target=ti)
            draws.append({"noise": rec["noise"].detach().clone(), "baseline_index": rec["baseline_index"],
                          "alpha": rec["alpha"]})
        else:
            a = Occlusion(model).attribute(xi, sliding_window_shapes=tuple(spec.window), strides=tuple(spec.stride),
                                           baselines=spec.baseline, target=ti,
                                           perturbations_per_eval=perturbations_per_eval)
        a = a.detach().sum(1)[0]
        maps.append((a if dtype == torch.float64 else a.float()).cpu().numpy())
    return np.stack(maps), (draws if spec.name == "gradient_shap" else None)
