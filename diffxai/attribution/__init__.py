"""Batched attribution for the registered methods (:mod:`diffxai.registry`: Integrated Gradients,
GradientSHAP, Occlusion, Saliency), equal to per-map Captum calls up to float32 rounding.

    from diffxai.attribution import EngineOptions, attribute, method_spec

    spec = method_spec("integrated_gradients", {"n_steps": 20})
    maps, stats = attribute(model, inputs, targets, spec, EngineOptions(device="cuda"),
                            draw_keys=keys, on_result=write, progress=log)

| module | one job |
|---|---|
| ``methods`` | one module per method: its ``MethodSpec`` (settings, evaluations, expansion, Captum call) |
| ``options`` | ``EngineOptions`` (every tunable, frozen) and ``RunStats`` (what a call did) |
| ``expansions`` | the protocol: the evaluations one map expands into and how their outputs combine |
| ``runner`` | ``attribute``: batches, the one forward path, accumulation, OOM back-off, streaming |
| ``prepare`` | the module the engine runs (eval, BN folding, channels_last, torch.compile), cached |
| ``incremental`` | exact incremental Occlusion forwards for EfficientNet-Lite0 |
| ``fused_tail`` | its tail after the cut: BN folded, fused epilogues, target row (opt-in) |
| ``triton_pointwise`` | that tail's 1x1 convolutions as a Triton 3xTF32 GEMM (CUDA; CPU interpreter in tests) |
| ``compile_cache`` | a persistent torch.compile cache folder |
| ``accuracy`` | every variant's error vs float64 Captum, next to Captum-fp32's own |

Imports only go down this table's dependency order (methods, options -> expansions, prepare,
compile_cache, triton_pointwise -> fused_tail -> incremental -> runner); nothing imports the runner
back except ``accuracy`` (above it: it calls the engine to check it).
"""
from ..config import METHODS
from .methods import MethodSpec, method_spec, shift_counts
from .options import EngineOptions, RunStats
from .prepare import fold_batchnorm, prepare_model
from .runner import attribute

__all__ = ["METHODS", "EngineOptions", "MethodSpec", "RunStats", "attribute", "fold_batchnorm", "method_spec",
           "prepare_model", "shift_counts"]
