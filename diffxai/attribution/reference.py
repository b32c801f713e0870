"""Captum as the engine's reference: one Captum call per map (what a user would write, the
benchmark's "naive loop") and a recorder of what Captum's GradientShap draws, so that the engine
can replay the same draws (``attribute(..., draws=)``) and be compared number for number."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .methods import MethodSpec


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


def captum_maps(model, x, t, spec: MethodSpec, dev) -> tuple[np.ndarray, list | None]:
    """One Captum call per map, as a user would write it. Returns maps and (GS) Captum's draws."""
    from captum.attr import GradientShap, IntegratedGradients, Occlusion

    maps, draws = [], []
    for i in range(len(x)):
        xi = x[i:i + 1].to(dev)
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
                                           baselines=spec.baseline, target=ti)
        maps.append(a.detach().sum(1)[0].float().cpu().numpy())
    return np.stack(maps), (draws if spec.name == "gradient_shap" else None)
