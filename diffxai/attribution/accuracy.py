"""The correctness bar: every engine variant's error against a float64 Captum reference, next to
Captum-fp32's own error against the same reference.

EfficientNet-Lite0's input gradient is piecewise constant (ReLU6 kinks): any change of convolution
algorithm (batching, layout, BN folding, a GPU) moves a few kinks and gradients by ~1e-3, so
"equal to Captum-fp32" is not the bar; float64 is. :func:`error_record` measures, on a few maps
of a run, the relative L2 and max-abs error of (a) Captum in fp32, as a user would call it, and
(b) the engine's maps, against Captum on a float64 copy of the model and inputs. A variant is
within the bar when its error is at most Captum-fp32's own (times a small factor); the record is
stored in the attribution store's attributes (``error_vs_float64``) by the pipeline.

GradientSHAP draws at random: Captum-fp32 records its draws, the float64 reference replays them,
and the engine runs those same draws again on the checked maps (its stored maps use the engine's
own per-map keys; the arithmetic, not the draw, is what is checked).
"""
from __future__ import annotations

import contextlib
import copy
import time

import numpy as np
import torch

from .methods import MethodSpec
from .options import EngineOptions
from .reference import captum_maps


def map_error(got: np.ndarray, ref: np.ndarray) -> dict:
    """{"rel_l2", "max_abs", "max_abs_rel"} of ``got`` against ``ref`` (max_abs_rel: over max |ref|)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    d = got - ref
    scale = max(float(np.abs(ref).max()), 1e-300)
    return {"rel_l2": float(np.linalg.norm(d) / max(float(np.linalg.norm(ref)), 1e-300)),
            "max_abs": float(np.abs(d).max()), "max_abs_rel": float(np.abs(d).max() / scale)}


@contextlib.contextmanager
def replay_gs_draws(draw: dict, dtype=torch.float64):
    """Make Captum's GradientShap use ``draw`` (as :func:`.reference.record_gs_draws` recorded it)
    instead of drawing: torch.normal returns its noise (cast to ``dtype``), np.random.choice its
    baseline indices, np.random.uniform its path coefficients."""
    real = (torch.normal, np.random.choice, np.random.uniform)

    def normal(*a, **k):
        return draw["noise"].to(dtype)

    def choice(*a, **k):
        return np.asarray(draw["baseline_index"])

    def uniform(*a, **k):
        return np.asarray(draw["alpha"])

    torch.normal, np.random.choice, np.random.uniform = normal, choice, uniform
    try:
        yield
    finally:
        torch.normal, np.random.choice, np.random.uniform = real


def captum_float64(model, x: torch.Tensor, targets, spec: MethodSpec, device="cpu", draws=None) -> np.ndarray:
    """Captum on a float64 copy of ``model`` and ``x``: channel-summed maps (N, H, W) float64.
    ``draws`` (GradientSHAP): one recorded draw per map, replayed."""
    from captum.attr import GradientShap

    m64 = copy.deepcopy(model).double().eval().to(device)
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1].to(device, torch.float64)
        if spec.name == "gradient_shap":
            with replay_gs_draws(draws[i]):
                a = GradientShap(m64, multiply_by_inputs=spec.multiply_by_inputs).attribute(
                    xi, baselines=torch.zeros_like(xi), n_samples=spec.n_samples, stdevs=spec.stdevs,
                    target=int(targets[i]))
            out.append(a.detach().sum(1)[0].cpu().numpy())
        else:
            one, _ = captum_maps(m64, xi, [int(targets[i])], spec, device, dtype=torch.float64,
                                 perturbations_per_eval=16)
            out.append(one[0])
    return np.stack(out).astype(np.float64)


def error_record(model, x: torch.Tensor, targets, spec: MethodSpec, options: EngineOptions,
                 maps: np.ndarray | None = None, n: int = 2) -> dict:
    """The error of Captum-fp32 and of the engine (``options``: the variant a run used) against
    float64 Captum on the first ``n`` maps of ``x``. ``maps``: the engine's maps of those inputs
    (IG, Occlusion: the run's own; GradientSHAP is re-run with Captum's draws). Returns
    {"n_maps", "method", "variant", "captum_fp32", "engine", "seconds"}."""
    from .runner import attribute

    t0 = time.perf_counter()
    n = min(int(n), len(x))
    x, targets = x[:n], torch.as_tensor(targets)[:n]
    dev = options.torch_device
    c32, draws = captum_maps(model, x, targets, spec, dev)
    ref = captum_float64(model, x, targets, spec, dev, draws)
    if maps is None or spec.name == "gradient_shap":
        eng_draws = None if draws is None else [{k: (v.float() if torch.is_tensor(v) else v) for k, v in d.items()}
                                                for d in draws]
        maps, _ = attribute(model, x, targets, spec, options, draws=eng_draws)
    variant = {k: str(getattr(options, k)) for k in ("device", "precision", "compile", "compile_mode",
                                                     "occlusion_incremental", "occlusion_tail", "allow_tf32")}
    return {"n_maps": n, "method": spec.name, "variant": variant,
            "captum_fp32": map_error(c32, ref), "engine": map_error(np.asarray(maps)[:n], ref),
            "seconds": round(time.perf_counter() - t0, 2)}
