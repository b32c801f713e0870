"""How the engine runs a call: :class:`EngineOptions` (frozen; every tunable the engine has, each
with the measurement that chose its default) and :class:`RunStats`, what a call reports back.

Nothing here changes a result beyond float rounding (precision, TF32 and the compiled paths are
measured against Captum in bench/RESULTS.md); two calls in one process may use different options.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping

import torch

from ..errors import DiffxaiError


def uses_cudagraphs(mode: str | None) -> bool:
    """Whether a torch.compile mode records CUDA graphs (needs ``cudagraph_mark_step_begin``)."""
    return mode in ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class EngineOptions:
    """Device, numerics and batching of one :func:`diffxai.attribution.attribute` call."""

    #: torch device the model runs on ("cpu", "cuda", "cuda:1", ...)
    device: str | torch.device = "cpu"
    #: "fp32" (TF32 off) or "bf16" (autocast; gradients and sums stay fp32)
    precision: str = "fp32"
    #: model evaluations per device batch; None: :meth:`default_batch_size`
    batch_size: int | None = None
    #: torch.compile on fixed-shape padded batches (CUDA only unless ``allow_cpu_compile``)
    compile: bool = False
    #: attribute the target's "logit" or its "softmax" probability
    output: str = "logit"
    #: CPU batch sizes (images per device batch). Measured on a 2-core x86 CPU with
    #: EfficientNet-Lite0 at 224 px (bench/RESULTS.md): forward img/s peaks at batch 4 (73 img/s;
    #: 52 at 1, 45 at 16, 35 at 32: bigger batches fall out of the caches), forward+backward at 4-8
    #: (25.5 img/s; 17 at 32).
    cpu_batch_grad: int = 8
    cpu_batch_nograd: int = 4
    #: channels_last on CUDA, eager and compiled. Measured on an H200 (bench/RESULTS.md): eager
    #: channels_last gains nothing for forward+backward (3159 vs 3393 img/s) and its other conv
    #: algorithms move the gradients of this kinked (ReLU6) network by ~1e-3 vs Captum's NCHW
    #: calls, so eager stays NCHW (error 1e-7). The compiled path was measured with channels_last
    #: inputs (1.5x the eager ceiling, error <= 9.6e-4) and keeps them. Never channels_last on the CPU.
    cuda_channels_last: bool = False
    compile_channels_last: bool = True
    #: TF32 for fp32 convs/matmuls on CUDA: off (measured error must be <= 1e-3 first; see bench)
    allow_tf32: bool = False
    #: cudnn.benchmark during engine calls on CUDA: measured no faster on an H200 (3390 vs 3393
    #: img/s), and it would re-tune every new batch shape; off.
    cudnn_benchmark: bool = False
    #: fold eval-mode BatchNorm into the preceding conv. Exact up to rounding, but
    #: EfficientNet-Lite0's input gradient is piecewise constant (ReLU6 kinks): rounding-level
    #: changes of the forward pass flip kinks and move single gradients by 1e-3..1e-2 (measured on
    #: the CPU, real noised images), so folding breaks the 1e-4 equivalence with Captum; off.
    fold_bn: bool = False
    #: torch.compile mode (None = inductor's default mode). Default: "reduce-overhead" with
    #: channels_last input, the fastest exact variant of the second H200 run (bench/gpu-2026-11-26b):
    #: IG 1.39x, GS 1.20x, Occlusion 1.38x the eager fp32 ceiling-implied rate, error vs Captum
    #: <= 6.7e-4; default mode CL 1.23/1.20/1.34x, NCHW input 1.05/0.93/1.36x;
    #: max-autotune-no-cudagraphs took over 90 s to compile and was not measured. On the CPU (tests
    #: only) CUDA-graph modes fall back to the default mode.
    compile_mode: str | None = "reduce-overhead"
    #: compiled calls: a last, partial batch of at most this fraction of the batch size runs on the
    #: eager NCHW model instead of being padded to the compiled shape (eager fwd+bwd is ~0.67x the
    #: compiled rate, so below that fraction eager costs less than the padding; a new shape would
    #: recompile). Eager NCHW matches Captum to 1e-7, so this never adds error. 0 disables it.
    compile_eager_tail: float = 0.6
    #: Occlusion on EfficientNet-Lite0: recompute only the box each window changes through the
    #: first layers (diffxai.attribution.incremental), exact up to float32 summation order; other
    #: models always run full forwards. H200, window 15 stride 8 (bench/gpu-2026-11-26e): 20.2 vs
    #: 10.5 maps/s eager, 35.4 vs 16.1 compiled.
    occlusion_incremental: bool = True
    #: torch.compile mode of the incremental Occlusion module under ``compile`` (None = inductor's
    #: default mode). "reduce-overhead" measured the same on an H200 (31.2 vs 31.1 maps/s, run c)
    #: and would copy the cached clean maps into its graph inputs every call.
    incremental_compile_mode: str | None = None
    #: deepest block the incremental Occlusion module may cut at (None: incremental.MAX_CUT_BLOCK;
    #: the cut is the deepest block whose changed box covers at most half its map)
    incremental_max_cut: int | None = None
    #: channels_last for the incremental Occlusion module on CUDA: 4.7x slower on an H200 (6.6 vs
    #: 31.1 maps/s, run c), off
    incremental_channels_last: bool = False
    #: the incremental Occlusion module's tail (blocks after the cut and the head): "model" (the
    #: model's own modules), "folded" (BN folded, ReLU6/residual fused into each pointwise step:
    #: diffxai.attribution.fused_tail's PyTorch reference) or "fused" (the same with the Triton
    #: 3xTF32 GEMM on CUDA; the reference elsewhere). Opt-in until timed on a GPU; its error vs
    #: float64 is recorded like every variant's (diffxai.attribution.accuracy).
    occlusion_tail: str = "model"
    #: a persistent torch.compile cache (inductor's FX graph and kernel caches) in this folder, so
    #: that a second job compiles from the cache; None: inductor's default (a per-user temporary
    #: folder, FX graph cache as configured). Applies to every compiled module of the call.
    compile_cache_dir: str | None = None
    #: hand finished maps to the host one batch late (on CUDA through pinned memory), so that the
    #: GPU already runs the next batch while the host checks and stores them (no queue drain per
    #: batch). H200, compiled: IG 98.2 vs 95.3, GradientSHAP 226.6 vs 220.6 maps/s (run e). On the
    #: CPU the same deferral runs (so the CPU tests exercise it) without pinned copies.
    overlap_host: bool = True
    #: lets a test exercise the compile path on the CPU (compile is otherwise CUDA only)
    allow_cpu_compile: bool = False
    #: called with the (padded) batch size right before each device batch; a test passes a function
    #: that raises ``torch.cuda.OutOfMemoryError`` to exercise the back-off, or counts batches
    before_batch: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16"):
            raise DiffxaiError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.output not in ("logit", "softmax"):
            raise DiffxaiError(f"output must be 'logit' or 'softmax', got {self.output!r}")
        if self.occlusion_tail not in ("model", "folded", "fused"):
            raise DiffxaiError(f"occlusion_tail must be 'model', 'folded' or 'fused', got {self.occlusion_tail!r}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise DiffxaiError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def replace(self, **changes) -> "EngineOptions":
        """A copy with some fields changed (dataclasses.replace)."""
        return replace(self, **changes)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **values) -> "EngineOptions":
        """Options with ``values``, where the environment may override the compiled path:
        ``DIFFXAI_COMPILE_MODE`` ("default" or "" = inductor's default mode),
        ``DIFFXAI_COMPILE_CHANNELS_LAST`` ("0"/"false"/"" = NCHW), ``DIFFXAI_COMPILE_CACHE_DIR`` (a
        persistent compile cache folder). Read when called, never at import."""
        env = os.environ if environ is None else environ
        mode = env.get("DIFFXAI_COMPILE_MODE")
        if mode is not None and "compile_mode" not in values:
            values["compile_mode"] = None if mode in ("", "default") else mode
        cache = env.get("DIFFXAI_COMPILE_CACHE_DIR")
        if cache and "compile_cache_dir" not in values:
            values["compile_cache_dir"] = cache
        cl = env.get("DIFFXAI_COMPILE_CHANNELS_LAST")
        if cl is not None and "compile_channels_last" not in values:
            values["compile_channels_last"] = cl not in ("0", "false", "False", "")
        return cls(**values)

    def default_batch_size(self, grad: bool) -> int:
        """Images per device batch: a measured constant on the CPU, sized from free memory on CUDA."""
        dev = self.torch_device
        if dev.type != "cuda":
            return self.cpu_batch_grad if grad else self.cpu_batch_nograd
        free, _ = torch.cuda.mem_get_info(dev)
        # blocks PyTorch has cached but not handed out are free for this process too: without them
        # the size depended on what ran before (an H200 run sized IG at 128 after an Occlusion call,
        # 256 in a fresh process), and every new size under compile=True is a recompile
        free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        # EfficientNet-Lite0 at 224 px keeps ~73 MB of fp32 activations per image; forward+backward
        # needs about 3x that at peak, inference about 1x; bf16 halves it.
        per = 73e6 * (3.0 if grad else 1.0) * (0.5 if self.precision == "bf16" else 1.0)
        b = int(0.5 * free / per)
        cap = 256 if grad else 512
        return max(1, min(cap, 1 << max(0, b.bit_length() - 1)))  # a power of two


@dataclass(frozen=True)
class RunStats:
    """What one :func:`~diffxai.attribution.attribute` call did (provenance: the numbers of the maps
    do not depend on it)."""

    method: str
    n_maps: int
    device: str
    precision: str
    batch_size: int | None = None  # final evaluations per device batch (after OOM halvings)
    batches: int = 0
    padded_evals: int = 0
    oom_halvings: int = 0
    eager_tail_evals: int = 0
    fold_bn: bool = False
    channels_last: bool = False
    compiled: bool = False
    compile_mode: str | None = None
    occlusion_incremental_cut: int | None = None
    first_batch_s: float | None = None  # compiled calls: includes tracing + compilation
    wall_s: float | None = None

    def get(self, key: str, default=None):
        """Dict-style read (the old ``last_run_stats`` was a dict)."""
        return getattr(self, key, default)

    def asdict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
