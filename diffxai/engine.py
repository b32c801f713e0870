"""One batched attribution engine for Integrated Gradients, GradientSHAP and Occlusion.

Each method is a small *expansion*: a map (one input x, one target class) expands into E model
evaluations (IG: ``n_steps`` interpolation points; GradientSHAP: ``n_samples`` noisy points on the
path from a baseline; Occlusion: one unoccluded forward + one forward per window position). The
engine enumerates the (map, expansion-index) pairs of ALL maps of a call in order, packs them into
device batches of one fixed size (the last one padded), runs forward (+ backward w.r.t. the input
for the gradient methods), turns every evaluation into its contribution and accumulates it per map
with ``index_add_``. A map is finished, checked for NaN/Inf, channel-summed and handed to
``on_result`` as soon as its last evaluation is done, so a caller can stream results to disk.

The numbers reproduce Captum 0.9 (``IntegratedGradients``, ``GradientShap``, ``Occlusion``) called
on one map at a time, up to float32 rounding: the interpolation points and weights come from
Captum's own ``approximation_parameters``, GradientSHAP's draws follow Captum's formulas
(``x_noisy = x + eps``, ``point = a*x_noisy + (1-a)*b``, attribution ``(x_noisy - b) * grad``, mean
over samples), and the Occlusion masks are built per window position exactly as Captum's
``Occlusion._occlusion_mask`` (shift counts ``ceil((dim - window)/stride) + 1``, the last window
cropped at the border), attribution ``sum_p (f(x) - f(x_p)) * mask_p / sum_p mask_p``.

Occlusion on EfficientNet-Lite0 does not run full forwards: :mod:`diffxai.incremental` caches the
clean activations of each image and recomputes only the box each window changes through the first
layers (the same sums; equal to the full forward up to float32 summation order).

On CUDA the host never waits for the GPU inside the loop except for the results of the batch
before the one running: inputs and GradientSHAP's small draws are copied once per call, and
finished maps travel through pinned memory one batch late.
"""
from __future__ import annotations

import copy
import math
import os
import time
import warnings
import weakref
from dataclasses import dataclass, asdict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import DiffxaiError

METHODS = ("integrated_gradients", "gradient_shap", "occlusion")

# --------------------------------------------------------------------------------------------
# test / benchmark hooks (module level so the public signature stays as documented)
# --------------------------------------------------------------------------------------------
#: called with the (padded) batch size right before each device batch; a test sets it to a
#: function that raises ``torch.cuda.OutOfMemoryError`` to exercise the back-off.
_oom_hook: Callable[[int], None] | None = None
#: statistics of the most recent ``attribute`` call (batch size used, batches, padding, OOM
#: halvings, compile seconds, ...); read by the benchmark and the tests.
last_run_stats: dict[str, Any] = {}
#: lets a test exercise the compile path on the CPU (compile=True is otherwise CUDA only)
_ALLOW_CPU_COMPILE = False
#: CPU default batch sizes (images per device batch). Measured on a 2-core x86 CPU with
#: EfficientNet-Lite0 at 224 px (bench/RESULTS.md): forward img/s peaks at batch 4 (73 img/s;
#: 52 at 1, 45 at 16, 35 at 32: bigger batches fall out of the caches), forward+backward at 4-8
#: (25.5 img/s; 17 at 32).
CPU_BATCH_GRAD = 8
CPU_BATCH_NOGRAD = 4
#: channels_last on CUDA, eager and compiled. Measured on an H200 (bench/RESULTS.md): eager
#: channels_last gains nothing for forward+backward (3159 vs 3393 img/s) and its other conv
#: algorithms move the gradients of this kinked (ReLU6) network by ~1e-3 vs Captum's NCHW calls,
#: so eager stays NCHW (error 1e-7). The compiled path was measured with channels_last inputs
#: (1.5x the eager ceiling, error <= 9.6e-4) and keeps them. Never channels_last on the CPU.
CUDA_CHANNELS_LAST = False
COMPILE_CHANNELS_LAST = True
#: TF32 for fp32 convs/matmuls on CUDA: off (measured error must be <= 1e-3 first; see bench)
ALLOW_TF32 = False
#: cudnn.benchmark during engine calls on CUDA: measured no faster on an H200 (3390 vs 3393
#: img/s), and it would re-tune every new batch shape; off.
CUDNN_BENCHMARK = False
#: fold eval-mode BatchNorm into the preceding conv. Exact up to rounding, but EfficientNet-Lite0's
#: input gradient is piecewise constant (ReLU6 kinks): rounding-level changes of the forward pass
#: flip kinks and move single gradients by 1e-3..1e-2 (measured on the CPU, real noised images),
#: so folding breaks the 1e-4 equivalence with Captum; off unless the benchmark shows it pays.
FOLD_BN = {"cpu": False, "cuda": False}
#: torch.compile mode used by ``compile=True`` (None = inductor's default mode, measured on an H200:
#: 20 s + 9 s to compile, 1.5x the eager fp32 ceiling, error vs Captum <= 9.6e-4). Other modes:
#: "reduce-overhead" (CUDA graphs over the fixed padded batch shapes) and
#: "max-autotune-no-cudagraphs"; bench/RESULTS.md has what each measured. The environment variable
#: DIFFXAI_COMPILE_MODE overrides the default ("default" = inductor's default mode).
_env_mode = os.environ.get("DIFFXAI_COMPILE_MODE")
#: Default: "reduce-overhead" with channels_last input, the fastest exact variant of the second H200
#: run (bench/gpu-2026-11-26b): IG 1.39x, GS 1.20x, Occlusion 1.38x the eager fp32 ceiling-implied
#: rate, error vs Captum <= 6.7e-4; default mode CL 1.23/1.20/1.34x, NCHW input 1.05/0.93/1.36x;
#: max-autotune-no-cudagraphs took over 90 s to compile and was not measured. On the CPU (tests
#: only) CUDA-graph modes fall back to the default mode.
COMPILE_MODE: str | None = ("reduce-overhead" if _env_mode is None else
                            None if _env_mode in ("", "default") else _env_mode)
if os.environ.get("DIFFXAI_COMPILE_CHANNELS_LAST") is not None:
    COMPILE_CHANNELS_LAST = os.environ["DIFFXAI_COMPILE_CHANNELS_LAST"] not in ("0", "false", "False", "")
#: compiled calls: a last, partial batch of at most this fraction of the batch size runs on the
#: eager NCHW model instead of being padded to the compiled shape (eager fwd+bwd is ~0.67x the
#: compiled rate, so below that fraction eager costs less than the padding; a new shape would
#: recompile). Eager NCHW matches Captum to 1e-7, so this never adds error. 0 disables it.
COMPILE_EAGER_TAIL = 0.6
#: Occlusion on EfficientNet-Lite0: recompute only the box each window changes through the first
#: layers (diffxai.incremental), exact up to float32 summation order. ``attribute(incremental=)``
#: overrides it per call; other models always run full forwards. H200, window 15 stride 8
#: (bench/gpu-2026-11-26e): 20.2 vs 10.5 maps/s eager, 35.4 vs 16.1 compiled.
OCCLUSION_INCREMENTAL = True
#: torch.compile mode for the incremental Occlusion module under ``compile=True`` (None = inductor's
#: default mode). "reduce-overhead" measured the same on an H200 (31.2 vs 31.1 maps/s, run c) and
#: would copy the cached clean maps into its graph inputs every call.
INCREMENTAL_COMPILE_MODE: str | None = None
#: deepest block the incremental Occlusion module may cut at (None: incremental.MAX_CUT_BLOCK; the
#: cut is the deepest block whose changed box covers at most half its map)
INCREMENTAL_MAX_CUT: int | None = None
#: channels_last for the incremental Occlusion module on CUDA: 4.7x slower on an H200 (6.6 vs 31.1
#: maps/s, run c), off
INCREMENTAL_CHANNELS_LAST = False
#: Hand finished maps to the host one batch late (on CUDA through pinned memory), so that the GPU
#: already runs the next batch while the host checks and stores them (no queue drain per batch).
#: H200, compiled: IG 98.2 vs 95.3, GradientSHAP 226.6 vs 220.6 maps/s (run e)
OVERLAP_HOST = True


def _uses_cudagraphs(mode: str | None) -> bool:
    return mode in ("reduce-overhead", "max-autotune")


# --------------------------------------------------------------------------------------------
# method specification
# --------------------------------------------------------------------------------------------
def shift_counts(shape, window, stride) -> tuple[int, ...]:
    """Captum's Occlusion window positions per dimension: ceil((dim - window) / stride) + 1 (the
    last window cropped at the border)."""
    return tuple(int(math.ceil((d - w) / s)) + 1 for d, w, s in zip(shape, window, stride))


_IG_KEYS = {"n_steps", "method", "multiply_by_inputs"}
_GS_KEYS = {"n_samples", "stdevs", "baselines", "baseline_distribution", "n_baselines",
            "multiply_by_inputs"}
_OCC_KEYS = {"window", "sliding_window_shapes", "stride", "strides", "baseline", "baselines"}


@dataclass(frozen=True)
class MethodSpec:
    """An attribution method and its settings; build it with :func:`method_spec`.

    Only the fields of ``name`` matter; :meth:`settings` returns them as a JSON-able dict.
    """

    name: str
    # Integrated Gradients
    n_steps: int = 50
    method: str = "gausslegendre"
    multiply_by_inputs: bool = True
    # GradientSHAP
    n_samples: int = 5
    stdevs: float = 0.0
    baselines: str = "zero"  # "zero": one all-zero baseline; "uniform": n_baselines U(-1,1) draws
    n_baselines: int = 1
    # Occlusion
    window: tuple[int, int, int] = (3, 15, 15)
    stride: tuple[int, int, int] = (3, 8, 8)
    baseline: float = 0.0

    def settings(self) -> dict:
        d = asdict(self)
        if self.name == "integrated_gradients":
            keys = ("n_steps", "method", "multiply_by_inputs")
        elif self.name == "gradient_shap":
            keys = ("n_samples", "stdevs", "baselines", "n_baselines", "multiply_by_inputs")
        else:
            keys = ("window", "stride", "baseline")
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keys}

    def evals_per_map(self, shape: Sequence[int] = (3, 224, 224)) -> int:
        """Model evaluations one map costs (Occlusion: 1 + number of window positions)."""
        if self.name == "integrated_gradients":
            return self.n_steps
        if self.name == "gradient_shap":
            return self.n_samples
        return 1 + int(np.prod(shift_counts(shape, self.window, self.stride)))


def _int3(name: str, key: str, v) -> tuple[int, int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (3, v, v)  # a bare int: all channels, a v x v square (stride: v along y and x)
    try:
        t = tuple(int(a) for a in v)
        ok = len(t) == 3 and all(a >= 1 for a in t) and all(float(a) == float(b) for a, b in zip(t, v))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DiffxaiError(f"attribution method {name!r}: {key} must be 3 positive integers [c, h, w], got {v!r}")
    return t  # type: ignore[return-value]


def method_spec(name: str, settings: dict | None = None) -> MethodSpec:
    """Validate ``settings`` for method ``name`` and return a :class:`MethodSpec`.

    IG: ``n_steps``, ``method`` (any Captum approximation method, default ``gausslegendre``),
    ``multiply_by_inputs``. GradientSHAP: ``n_samples``, ``stdevs``, ``baselines`` ("zero" |
    "uniform"), ``n_baselines`` (uniform only), ``multiply_by_inputs``. Occlusion: ``window``
    [c,h,w] (default (3,15,15)), ``stride`` [c,h,w] (default (3,8,8)), ``baseline`` (0.0).
    """
    settings = dict(settings or {})
    if name not in METHODS:
        raise DiffxaiError(f"unknown attribution method {name!r}; choose one of {', '.join(METHODS)}")
    allowed = {"integrated_gradients": _IG_KEYS, "gradient_shap": _GS_KEYS, "occlusion": _OCC_KEYS}[name]
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise DiffxaiError(
            f"attribution method {name!r}: unknown setting {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")

    def _pos_int(key, default):
        v = settings.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DiffxaiError(f"attribution method {name!r}: {key} must be a positive integer, got {v!r}")
        return int(v)

    def _bool(key, default):
        v = settings.get(key, default)
        if not isinstance(v, (bool, np.bool_)):
            raise DiffxaiError(f"attribution method {name!r}: {key} must be true or false, got {v!r}")
        return bool(v)

    if name == "integrated_gradients":
        from captum.attr._utils.approximation_methods import SUPPORTED_METHODS

        method = settings.get("method", "gausslegendre")
        if method not in SUPPORTED_METHODS:
            raise DiffxaiError(f"attribution method {name!r}: method {method!r} is not one of "
                               f"{', '.join(SUPPORTED_METHODS)}")
        n_steps = _pos_int("n_steps", 50)
        if method != "gausslegendre" and n_steps < 2:
            raise DiffxaiError(f"attribution method {name!r}: {method} needs n_steps >= 2")
        return MethodSpec(name, n_steps=n_steps, method=method,
                          multiply_by_inputs=_bool("multiply_by_inputs", True))
    if name == "gradient_shap":
        if "baselines" in settings and "baseline_distribution" in settings:
            raise DiffxaiError(f"attribution method {name!r}: give baselines or baseline_distribution, not both")
        dist = settings.get("baselines", settings.get("baseline_distribution", "zero"))
        if dist not in ("zero", "uniform"):
            raise DiffxaiError(f"attribution method {name!r}: baselines must be 'zero' or 'uniform', got {dist!r}")
        n_b = _pos_int("n_baselines", 1 if dist == "zero" else 16)
        if dist == "zero" and n_b != 1:
            raise DiffxaiError(f"attribution method {name!r}: baselines 'zero' is a single baseline; "
                               f"n_baselines must be 1, got {n_b}")
        stdevs = settings.get("stdevs", 0.0)
        if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)) or not math.isfinite(stdevs) or stdevs < 0:
            raise DiffxaiError(f"attribution method {name!r}: stdevs must be a float >= 0, got {stdevs!r}")
        return MethodSpec(name, n_samples=_pos_int("n_samples", 5), stdevs=float(stdevs), baselines=dist,
                          n_baselines=n_b, multiply_by_inputs=_bool("multiply_by_inputs", True))
    # occlusion
    for a, b in (("window", "sliding_window_shapes"), ("stride", "strides"), ("baseline", "baselines")):
        if a in settings and b in settings:
            raise DiffxaiError(f"attribution method {name!r}: give {a} or {b}, not both")
    wkey = "window" if "window" in settings else "sliding_window_shapes"
    skey = "stride" if "stride" in settings else "strides"
    window = _int3(name, wkey, settings.get(wkey, (3, 15, 15)))
    stride = _int3(name, skey, settings.get(skey, (3, 8, 8)))
    base = settings.get("baseline", settings.get("baselines", 0.0))
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base):
        raise DiffxaiError(f"attribution method {name!r}: baseline must be a number, got {base!r}")
    return MethodSpec(name, window=window, stride=stride, baseline=float(base))


# --------------------------------------------------------------------------------------------
# expansions: how one map turns into E evaluations and how they combine
# --------------------------------------------------------------------------------------------
class _MapState:
    """Per-map tensors on the device while the map is in flight."""

    __slots__ = ("x", "target", "noise", "bidx", "alpha", "bases", "f0", "d")


class _Expansion:
    n: int  # evaluations per map
    grad: bool  # needs d output / d input

    def begin(self, st: _MapState, i: int, key: int | None, draw: dict | None) -> None:
        """Fill per-map state (draws) for map i."""

    def points(self, st: _MapState, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Model inputs for expansion indices ``idx`` of one map, plus auxiliary data."""
        raise NotImplementedError

    def contrib(self, st: _MapState, idx: torch.Tensor, j0: int, y: torch.Tensor, g: torch.Tensor | None,
                aux: Any) -> torch.Tensor:
        """Per-evaluation contributions (len(idx), C, H, W) to the map's accumulator; ``idx`` are
        the consecutive expansion indices j0, j0+1, ... of this map in the batch."""
        raise NotImplementedError

    def finish(self, st: _MapState, acc: torch.Tensor) -> torch.Tensor:
        """The (C, H, W) attribution from the accumulated contributions."""
        raise NotImplementedError


class _IG(_Expansion):
    grad = True

    def __init__(self, spec: MethodSpec, device):
        # Captum's own quadrature: import, don't re-derive
        from captum.attr._utils.approximation_methods import approximation_parameters

        step_sizes_func, alphas_func = approximation_parameters(spec.method)
        self.n = spec.n_steps
        # Captum: baseline + alpha * (input - baseline) with python-float alphas; step sizes as
        # torch.tensor(step_sizes).float()
        self.alphas = torch.tensor(alphas_func(spec.n_steps), dtype=torch.float64).to(device)
        self.weights = torch.tensor(step_sizes_func(spec.n_steps)).float().to(device)
        self.mul = spec.multiply_by_inputs

    def points(self, st, idx):
        a = self.alphas[idx].to(st.x.dtype).view(-1, 1, 1, 1)
        return a * st.x.unsqueeze(0), None  # baseline 0: 0 + a * (x - 0)

    def contrib(self, st, idx, j0, y, g, aux):
        return g * self.weights[idx].view(-1, 1, 1, 1)

    def finish(self, st, acc):
        return acc * st.x if self.mul else acc  # total_grad * (input - 0)


class _GS(_Expansion):
    grad = True

    def __init__(self, spec: MethodSpec, shape, device):
        self.n = spec.n_samples
        self.stdev = spec.stdevs
        self.dist = spec.baselines
        self.nb = spec.n_baselines
        self.mul = spec.multiply_by_inputs
        self.shape = shape
        self.device = torch.device(device)

    def predraw(self, keys: Sequence[int], draws) -> None:
        """Draw alpha and the baseline indices of every map of the call on the CPU up front and
        copy them to the device in one go: a per-map copy would drain the GPU queue once per map.
        Only for the default draws with zero baselines; other cases draw per map in begin()."""
        self._pre = None
        if draws is not None or self.dist != "zero" or (self.device.type != "cuda" and self.stdev > 0):
            return  # (CPU noise continues the per-map generator after alpha: drawn in begin())
        alphas = torch.stack([torch.rand(self.n, generator=torch.Generator(device="cpu").manual_seed(int(k)),
                                         dtype=torch.float64) for k in keys])
        self._pre = {"alpha": alphas.to(self.device), "zeros": torch.zeros(1, *self.shape, device=self.device),
                     "bidx": torch.zeros(self.n, dtype=torch.long, device=self.device)}

    def begin(self, st, i, key, draw):
        C, H, W = self.shape
        dev = self.device
        pre = getattr(self, "_pre", None)
        if pre is not None and draw is None:  # the same draws as below, made in predraw()
            st.bases, st.bidx, st.alpha = pre["zeros"], pre["bidx"], pre["alpha"][i]
            if self.stdev > 0:
                gd = torch.Generator(device=dev).manual_seed(int(key) ^ 0x5DEECE66D)
                st.noise = torch.randn(self.n, C, H, W, generator=gd, device=dev) * self.stdev
            else:
                st.noise = None
            return
        if draw is not None:  # explicit draws (e.g. Captum's own, recorded)
            noise = draw.get("noise")
            st.noise = None if noise is None else torch.as_tensor(noise, dtype=torch.float32).to(dev).reshape(self.n, C, H, W)
            st.bidx = torch.as_tensor(draw.get("baseline_index", np.zeros(self.n, np.int64))).long().to(dev).reshape(self.n)
            st.alpha = torch.as_tensor(draw["alpha"]).to(dev).reshape(self.n)
            if "baselines" in draw:
                st.bases = torch.as_tensor(draw["baselines"], dtype=torch.float32).to(dev)
            elif self.dist == "zero":
                st.bases = torch.zeros(1, C, H, W, device=dev)
            else:
                raise DiffxaiError("gradient_shap: explicit draws with baselines 'uniform' must include 'baselines'")
            return
        # one generator per map, seeded from the caller's key: draws never depend on batching or
        # on which other maps share the call. Small draws on the CPU (device independent), the
        # big Gaussian noise on the compute device (CPU and CUDA Philox streams differ).
        g = torch.Generator(device="cpu").manual_seed(int(key))
        if self.dist == "uniform":
            st.bases = (torch.rand(self.nb, C, H, W, generator=g) * 2 - 1).to(dev)
            st.bidx = torch.randint(0, self.nb, (self.n,), generator=g).to(dev)
        else:
            st.bases = torch.zeros(1, C, H, W, device=dev)
            st.bidx = torch.zeros(self.n, dtype=torch.long, device=dev)
        st.alpha = torch.rand(self.n, generator=g, dtype=torch.float64).to(dev)
        if self.stdev > 0:
            gd = g if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(int(key) ^ 0x5DEECE66D)
            st.noise = torch.randn(self.n, C, H, W, generator=gd, device=dev) * self.stdev
        else:
            st.noise = None  # Captum adds N(0, 0) = exact zeros

    def points(self, st, idx):
        xn = st.x.unsqueeze(0) if st.noise is None else st.x.unsqueeze(0) + st.noise[idx]
        b = st.bases[st.bidx[idx]]
        a = st.alpha[idx].to(st.x.dtype).view(-1, 1, 1, 1)
        return a * xn + (1.0 - a) * b, (xn, b)

    def contrib(self, st, idx, j0, y, g, aux):
        if not self.mul:
            return g
        xn, b = aux
        return (xn - b) * g

    def finish(self, st, acc):
        return acc * (1 / self.n)


class _Occ(_Expansion):
    grad = False

    def __init__(self, spec: MethodSpec, shape, device):
        self.shape = tuple(shape)
        self.window = spec.window
        self.stride = spec.stride
        self.base = spec.baseline
        dev = torch.device(device)
        for d, w, s in zip(self.shape, self.window, self.stride):
            if w > d:
                raise DiffxaiError(f"occlusion: window {list(self.window)} exceeds the input shape {list(self.shape)}")
            if d - w > 0 and s > w:
                raise DiffxaiError(f"occlusion: stride {list(self.stride)} larger than window {list(self.window)}")
        # Captum: feature number p -> index (p % sc0)*s0, ((p // sc0) % sc1)*s1, ... (first
        # dimension fastest)
        self.shift_counts = shift_counts(self.shape, self.window, self.stride)
        self.P = int(np.prod(self.shift_counts))
        self.n = 1 + self.P  # index 0: the unoccluded input
        self.ar = [torch.arange(d, device=dev) for d in self.shape]
        self.device = dev
        self.inc = None  # set by attribute() when the incremental path applies
        # every window spans all channels (one channel position): the windows form a 2-D grid and
        # sum_p d_p * mask_p is a transposed convolution of the grid of differences d with a
        # window of ones; no (evaluations, C, H, W) mask tensors per batch
        self.grid = self.shift_counts[0] == 1
        if self.grid:
            self.ones = torch.ones(1, 1, self.window[1], self.window[2], device=dev)
        # sum of all masks (Captum's weights), the same for every map
        self.weight = torch.zeros(self.shape, device=dev)
        for k in range(1, self.n, 64):
            self.weight += self._masks(torch.arange(k, min(k + 64, self.n), device=dev)).sum(0)

    def _starts(self, p):  # p: feature numbers (0-based)
        out, rem = [], p
        for sc, s in zip(self.shift_counts, self.stride):
            out.append((rem % sc) * s)
            rem = rem // sc
        return out

    def _masks(self, idx):
        """(len(idx), C, H, W) float masks for expansion indices idx (0 -> all zeros)."""
        p = (idx - 1).clamp(min=0)
        st = self._starts(p)
        ms = []
        for d, (ar, s0, w) in enumerate(zip(self.ar, st, self.window)):
            ms.append((ar.view(1, -1) >= s0.view(-1, 1)) & (ar.view(1, -1) < (s0 + w).view(-1, 1)))
        m = ms[0][:, :, None, None] & ms[1][:, None, :, None] & ms[2][:, None, None, :]
        m = m & (idx > 0).view(-1, 1, 1, 1)
        return m.float()

    def begin(self, st, i, key, draw):
        if self.grid:
            st.d = torch.zeros(self.n, device=self.device)  # f(x) - f(x_p) per evaluation

    def points(self, st, idx):
        if self.inc is not None:  # the incremental module builds its own inputs from the cache
            return None, (None if self.grid else self._masks(idx))
        m = self._masks(idx)
        x = st.x.unsqueeze(0)
        # Captum: input * (1 - mask) + baseline * mask
        return x * (1 - m) + self.base * m, m

    def contrib(self, st, idx, j0, y, g, aux):
        if j0 == 0:  # the unoccluded forward comes first, in this batch or an earlier one
            st.f0 = y[0]
        diff = st.f0 - y  # f(x) - f(x_occluded); index 0 has an all-zero mask
        if self.grid:
            st.d[idx] = diff
            return None
        return diff.view(-1, 1, 1, 1) * aux

    def finish(self, st, acc):
        if self.grid:  # feature p = qy + sc1 * qx (the channel count is 1)
            _, sc1, sc2 = self.shift_counts
            d = st.d[1:].view(sc2, sc1).t().reshape(1, 1, sc1, sc2)
            s = torch.nn.functional.conv_transpose2d(d, self.ones, stride=self.stride[1:])
            H, W = self.shape[1:]
            return (s[0, :, :H, :W] / self.weight[:1]).expand(self.shape)
        return acc / self.weight


def _cat_contribs(contribs):
    if contribs[0] is None:
        return None
    return torch.cat(contribs) if len(contribs) > 1 else contribs[0]


def _make_expansion(spec: MethodSpec, shape, device) -> _Expansion:
    if spec.name == "integrated_gradients":
        return _IG(spec, device)
    if spec.name == "gradient_shap":
        return _GS(spec, shape, device)
    if spec.name == "occlusion":
        return _Occ(spec, shape, device)
    raise DiffxaiError(f"unknown attribution method {spec.name!r}; choose one of {', '.join(METHODS)}")


# --------------------------------------------------------------------------------------------
# model preparation: eval mode, BatchNorm folding, channels_last (CUDA), torch.compile (CUDA)
# --------------------------------------------------------------------------------------------
def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    b0 = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    new.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype), requires_grad=False)
    new.bias = nn.Parameter(((b0 - bn.running_mean.double()) * scale + bn.bias.detach().double()).to(conv.weight.dtype),
                            requires_grad=False)
    return new.to(conv.weight.device)


def fold_batchnorm(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` with every eval-mode BatchNorm folded into its conv, or None if the
    architecture is not one we know how to fold (EfficientNet-Lite0; anything torch.fx can trace)."""
    from .models import EfficientNetLite0

    if isinstance(model, EfficientNetLite0):
        m = copy.deepcopy(model).eval()

        def conv_of(mod):
            return mod[1] if isinstance(mod, nn.Sequential) else mod

        def put(parent, name, conv):
            cur = getattr(parent, name)
            if isinstance(cur, nn.Sequential):
                cur[1] = conv
            else:
                setattr(parent, name, conv)

        put(m, "_conv_stem", _fold_conv_bn(conv_of(m._conv_stem), m._bn0))
        m._bn0 = nn.Identity()
        for blk in m._blocks:
            if blk.expand:
                put(blk, "_expand_conv", _fold_conv_bn(blk._expand_conv, blk._bn0))
                blk._bn0 = nn.Identity()
            put(blk, "_depthwise_conv", _fold_conv_bn(conv_of(blk._depthwise_conv), blk._bn1))
            blk._bn1 = nn.Identity()
            put(blk, "_project_conv", _fold_conv_bn(blk._project_conv, blk._bn2))
            blk._bn2 = nn.Identity()
        m._conv_head = _fold_conv_bn(m._conv_head, m._bn1)
        m._bn1 = nn.Identity()
        return m
    try:  # generic: torch.fx conv+bn fusion for traceable models (e.g. torchvision ResNets)
        from torch.fx.experimental.optimization import fuse

        return fuse(copy.deepcopy(model).eval(), inplace=True)
    except Exception:
        return None


_prepared: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


#: incremental Occlusion plans per prepared model. A plan holds its model, so (as with _prepared,
#: whose entry may be the model itself) an entry lives as long as the process: one model per job.
_incremental_plans: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _param_versions(model):
    return tuple(p._version for p in model.parameters()) + tuple(b._version for b in model.buffers())


def prepare_model(model: nn.Module, device: str | torch.device = "cpu", *, compile: bool = False,
                  fold_bn: bool | None = None, channels_last: bool | None = None):
    """The module the engine runs: eval mode, optionally BN-folded, channels_last and compiled on
    CUDA. Cached per (model, settings) until the model's parameters change. Returns
    (module, info dict)."""
    dev = torch.device(device)
    if fold_bn is None:
        fold_bn = FOLD_BN.get(dev.type, False)
    if channels_last is None:
        channels_last = dev.type == "cuda" and (COMPILE_CHANNELS_LAST if compile else CUDA_CHANNELS_LAST)
    mode = COMPILE_MODE if dev.type == "cuda" or not _uses_cudagraphs(COMPILE_MODE) else None
    key = (str(dev), bool(compile), bool(fold_bn), bool(channels_last), mode)
    versions = _param_versions(model)
    cache = _prepared.setdefault(model, {})
    hit = cache.get(key)
    if hit is not None and hit[0] == versions:
        return hit[1], hit[2]
    info = {"fold_bn": False, "channels_last": bool(channels_last), "compiled": False, "compile_mode": None}
    m = None
    if fold_bn:
        m = fold_batchnorm(model)
        info["fold_bn"] = m is not None
    if m is None:
        ps = list(model.parameters())
        on_dev = all(p.device == dev or (dev.index is None and p.device.type == dev.type) for p in ps)
        # never move or re-layout the caller's module in place: work on a copy then (19 MB)
        m = model if (on_dev and not channels_last) else copy.deepcopy(model)
    m = m.to(dev)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    if compile:
        m = torch.compile(m, mode=mode, dynamic=False)
        info["compiled"] = True
        info["compile_mode"] = mode
    cache[key] = (versions, m, info)
    return m, info


def default_batch_size(device: str | torch.device, grad: bool, precision: str = "fp32") -> int:
    """Images per device batch: a measured constant on the CPU, sized from free memory on CUDA."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return CPU_BATCH_GRAD if grad else CPU_BATCH_NOGRAD
    free, _ = torch.cuda.mem_get_info(dev)
    # blocks PyTorch has cached but not handed out are free for this process too: without them the
    # size depended on what ran before (an H200 run sized IG at 128 after an Occlusion call, 256
    # in a fresh process), and every new size under compile=True is a recompile
    free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    # EfficientNet-Lite0 at 224 px keeps ~73 MB of fp32 activations per image; forward+backward
    # needs about 3x that at peak, inference about 1x; bf16 halves it.
    per = 73e6 * (3.0 if grad else 1.0) * (0.5 if precision == "bf16" else 1.0)
    b = int(0.5 * free / per)
    cap = 256 if grad else 512
    return max(1, min(cap, 1 << max(0, b.bit_length() - 1)))  # a power of two


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------
def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def attribute(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, spec: MethodSpec, *,
              device: str | torch.device = "cpu", precision: str = "fp32", batch_size: int | None = None,
              output: str = "logit", draw_keys: Sequence[int] | None = None, draws: Sequence[dict] | None = None,
              on_result: Callable[[slice, np.ndarray], None] | None = None,
              progress: Callable[[int, int], None] | None = None, compile: bool = False,
              incremental: bool | None = None) -> np.ndarray:
    """Attribute ``targets[i]`` of ``model`` to ``inputs[i]`` for every i with method ``spec``.

    inputs: (N, C, H, W) float32; targets: (N,) long class indices; baseline 0 (Occlusion: the
    spec's). Returns channel-summed maps (N, H, W) float32. ``batch_size`` = model evaluations per
    device batch (default: :func:`default_batch_size`); on CUDA out-of-memory the batch size is
    halved and the same batch retried, down to 1. ``output``: attribute the target's "logit" or
    its "softmax" probability. GradientSHAP draws come from a generator seeded per map with
    ``draw_keys[i]`` (default: i), or from explicit ``draws[i]`` = {"noise": (n,C,H,W) or absent,
    "baseline_index": (n,), "alpha": (n,), "baselines": (nb,C,H,W) optional}. ``on_result(sl,
    maps)`` receives finished maps in order as soon as each is complete; ``progress(done, total)``
    counts finished maps. ``precision`` "bf16" runs the model under autocast (gradients and sums
    stay fp32); "fp32" disables TF32. ``compile`` (CUDA only) uses torch.compile on fixed-shape
    padded batches. ``incremental`` (default :data:`OCCLUSION_INCREMENTAL`): Occlusion on
    EfficientNet-Lite0 recomputes only what each window changes (:mod:`diffxai.incremental`).
    Raises DiffxaiError on NaN/Inf in any map.
    """
    global last_run_stats
    if not isinstance(spec, MethodSpec):
        raise DiffxaiError(f"attribute needs a MethodSpec (use method_spec(name, settings)), got {type(spec).__name__}")
    if precision not in ("fp32", "bf16"):
        raise DiffxaiError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if output not in ("logit", "softmax"):
        raise DiffxaiError(f"output must be 'logit' or 'softmax', got {output!r}")
    inputs = torch.as_tensor(inputs)
    if inputs.ndim != 4:
        raise DiffxaiError(f"{spec.name}: inputs must be (N, C, H, W), got shape {tuple(inputs.shape)}")
    N = inputs.shape[0]
    shape = tuple(inputs.shape[1:])
    targets = torch.as_tensor(targets).long().reshape(-1)
    if targets.numel() != N:
        raise DiffxaiError(f"{spec.name}: {N} inputs but {targets.numel()} targets")
    if draw_keys is not None and len(draw_keys) != N:
        raise DiffxaiError(f"{spec.name}: {N} inputs but {len(draw_keys)} draw_keys")
    if draws is not None and len(draws) != N:
        raise DiffxaiError(f"{spec.name}: {N} inputs but {len(draws)} draws")
    dev = torch.device(device)
    if compile and dev.type != "cuda" and not _ALLOW_CPU_COMPILE:
        warnings.warn("compile=True is for CUDA only; running eager on the CPU", stacklevel=2)
        compile = False
    out_maps = np.empty((N,) + shape[1:], dtype=np.float32)
    stats = {"method": spec.name, "n_maps": N, "device": str(dev), "precision": precision, "batches": 0,
             "padded_evals": 0, "oom_halvings": 0}
    last_run_stats = stats
    if N == 0:
        return out_maps

    t_prep = time.perf_counter()
    exp = _make_expansion(spec, shape, dev)
    E = exp.n
    total = N * E
    B = int(batch_size) if batch_size is not None else default_batch_size(dev, exp.grad, precision)
    if B < 1:
        raise DiffxaiError(f"{spec.name}: batch_size must be >= 1, got {batch_size}")
    if compile:
        pass  # one fixed shape: every batch padded to B (a new shape would recompile)
    else:  # eager: balanced batches (CUDA: rounded up to a multiple of 8), little padding
        B0 = B
        B = -(-total // -(-total // B0))  # ceil(total / number of batches)
        if dev.type == "cuda":
            B = min(-(-B // 8) * 8, B0)
    stats["batch_size"] = B
    net, info = prepare_model(model, dev, compile=compile)
    stats.update(info)
    memfmt = torch.channels_last if info["channels_last"] else torch.contiguous_format
    acc_dtype = torch.float32
    # eval mode for the call (BatchNorm must never see the statistics of a mixed batch); the
    # caller's own flags are restored afterwards
    modes = [(mod, mod.training) for mod in net.modules()]
    net.eval()

    def eval_for_call(m: nn.Module) -> None:
        """Eval mode for another module this call runs (flags restored afterwards, as net's)."""
        seen = {id(mod) for mod, _ in modes}
        modes.extend((mod, mod.training) for mod in m.modules() if id(mod) not in seen)
        m.eval()

    prev_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                  torch.backends.cudnn.benchmark)
    if dev.type == "cuda":  # fp32 means fp32: no TF32 (bf16 runs under autocast anyway)
        torch.backends.cuda.matmul.allow_tf32 = ALLOW_TF32
        torch.backends.cudnn.allow_tf32 = ALLOW_TF32
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK

    states: dict[int, _MapState] = {}
    # per-map accumulators live in slots of one tensor: the maps in flight are exactly those the
    # current batch touches (items are enumerated map by map), at most B // E + 2 of them
    S = B // E + 2
    acc = torch.zeros((S,) + shape, dtype=acc_dtype, device=dev)
    done_count = [0] * N
    inc = inc_run = None
    stats["occlusion_incremental_cut"] = None
    if spec.name == "occlusion" and (OCCLUSION_INCREMENTAL if incremental is None else incremental):
        from .incremental import plan_for

        icl = INCREMENTAL_CHANNELS_LAST and dev.type == "cuda"
        base, _ = prepare_model(model, dev, compile=False, fold_bn=False, channels_last=icl)
        ikey = (shape, spec.window, spec.stride, spec.baseline, S, bool(compile), INCREMENTAL_COMPILE_MODE, icl,
                INCREMENTAL_MAX_CUT)
        icache = _incremental_plans.setdefault(base, {})
        if ikey not in icache:  # one plan (and one compiled module) per setting: no recompiles
            plan = plan_for(base, shape, spec.window, spec.stride, spec.baseline, n_slots=S, channels_last=icl,
                            max_cut=INCREMENTAL_MAX_CUT)
            icache[ikey] = (plan, None if plan is None else
                            torch.compile(plan, mode=INCREMENTAL_COMPILE_MODE, dynamic=False) if compile else plan)
        inc, inc_run = icache[ikey]
        if inc is not None:
            eval_for_call(base)
            exp.inc = inc
            stats["occlusion_incremental_cut"] = inc.cut
    first_batch_s = None
    # CUDA: all inputs to the device in one copy (a per-map copy drains the GPU queue every time)
    inputs_dev = inputs
    if dev.type == "cuda" and inputs.numel() * 4 <= (1 << 31):
        inputs_dev = inputs.to(dev, torch.float32)
    if hasattr(exp, "predraw"):
        exp.predraw([int(draw_keys[i]) if draw_keys is not None else i for i in range(N)], draws)

    def get_state(i: int) -> _MapState:
        st = states.get(i)
        if st is None:
            st = _MapState()
            st.x = inputs_dev[i].to(dev, torch.float32)
            st.target = int(targets[i])
            st.f0 = None
            st.noise = st.bidx = st.alpha = st.bases = None
            key = int(draw_keys[i]) if draw_keys is not None else i
            exp.begin(st, i, key, None if draws is None else draws[i])
            if inc is not None:
                inc.load(i % S, st.x)
            states[i] = st
        return st

    tail_net = None

    def eager_tail(n: int, Bp: int) -> bool:
        """Compiled calls: a short last batch runs eager and unpadded (see COMPILE_EAGER_TAIL)."""
        return compile and n < Bp and n <= COMPILE_EAGER_TAIL * Bp

    cudagraphs = compile and _uses_cudagraphs(info.get("compile_mode"))
    stats["eager_tail_evals"] = 0

    def run_batch(pos: int, n: int, Bp: int):
        """Evaluate items pos..pos+n-1 (item = map * E + expansion index) in one device batch
        padded to Bp. Returns the runs [(map, first index, count)] and their contributions."""
        runs = []
        for i in range(pos // E, (pos + n - 1) // E + 1):
            j0 = max(pos, i * E) - i * E
            j1 = min(pos + n, (i + 1) * E) - i * E
            runs.append((i, j0, j1 - j0))
        pts, auxs, idxs = [], [], []
        for i, j0, cnt in runs:
            idx = torch.arange(j0, j0 + cnt, device=dev)
            p, aux = exp.points(get_state(i), idx)
            pts.append(p)
            auxs.append(aux)
            idxs.append(idx)
        if inc is not None:
            return _run_incremental(runs, idxs, auxs, n, Bp)
        batch = torch.cat(pts) if len(pts) > 1 else pts[0]
        tg = torch.tensor([states[i].target for i, _, cnt in runs for _ in range(cnt)]
                          + [states[runs[0][0]].target] * (Bp - n)).to(dev, non_blocking=True)
        use_net, fmt = net, memfmt
        if eager_tail(n, Bp):
            nonlocal tail_net
            if tail_net is None:
                tail_net, _ = prepare_model(model, dev, compile=False, fold_bn=False, channels_last=False)
                eval_for_call(tail_net)
            use_net, fmt, Bp = tail_net, torch.contiguous_format, n
            tg = tg[:n]
            stats["eager_tail_evals"] += n
        elif cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        if Bp > n:  # pad with copies of the first point; their outputs are dropped below
            batch = torch.cat([batch, batch[:1].expand(Bp - n, *batch.shape[1:])])
        batch = batch.contiguous(memory_format=fmt)
        if _oom_hook is not None:
            _oom_hook(Bp)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if exp.grad:
                batch.requires_grad_(True)
                with torch.enable_grad():
                    out = use_net(batch).float()
                    if output == "softmax":
                        out = torch.softmax(out, dim=1)
                    y = out.gather(1, tg.view(-1, 1)).squeeze(1)
                    (g,) = torch.autograd.grad(y.sum(), batch)
                g = g.float()[:n]
            else:
                with torch.no_grad():
                    out = use_net(batch).float()
                    if output == "softmax":
                        out = torch.softmax(out, dim=1)
                    y = out.gather(1, tg.view(-1, 1)).squeeze(1)
                g = None
        y = y.detach()[:n]
        contribs, start = [], 0
        for (i, j0, cnt), idx, aux in zip(runs, idxs, auxs):
            sl = slice(start, start + cnt)
            contribs.append(exp.contrib(states[i], idx, j0, y[sl], None if g is None else g[sl], aux))
            start += cnt
        return runs, _cat_contribs(contribs), Bp

    def _run_incremental(runs, idxs, auxs, n, Bp):
        """Occlusion through the incremental module: (cache slot, expansion index) per item."""
        slots = torch.tensor([i % S for i, _, cnt in runs for _ in range(cnt)])
        tgl = [states[i].target for i, _, cnt in runs for _ in range(cnt)]
        idx = torch.cat(idxs) if len(idxs) > 1 else idxs[0]
        use = inc_run
        if eager_tail(n, Bp):
            use, Bp = inc, n
            stats["eager_tail_evals"] += n
        if Bp > n:  # pad with copies of the first item; their outputs are dropped below
            slots = torch.cat([slots, slots[:1].expand(Bp - n)])
            idx = torch.cat([idx, idx[:1].expand(Bp - n)])
            tgl += tgl[:1] * (Bp - n)
        slots = slots.to(dev, non_blocking=True)
        tg = torch.tensor(tgl).to(dev, non_blocking=True)
        if _oom_hook is not None:
            _oom_hook(Bp)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = use(slots, idx).float()
            if output == "softmax":
                out = torch.softmax(out, dim=1)
            y = out.gather(1, tg.view(-1, 1)).squeeze(1)[:n]
        contribs, start = [], 0
        for (i, j0, cnt), ix, aux in zip(runs, idxs, auxs):
            contribs.append(exp.contrib(states[i], ix, j0, y[start:start + cnt], None, aux))
            start += cnt
        return runs, _cat_contribs(contribs), Bp

    overlap = OVERLAP_HOST  # one batch late on every device (so the CPU tests run the same logic);
    pinned = overlap and dev.type == "cuda"  # only CUDA gains from it: pinned copies + events
    pending: list = []  # finished maps not yet handed to the host: (maps, values, finite flags, event)

    def emit(finished, a, ok, ev):
        if ev is not None:
            ev.synchronize()  # waits for this batch's copy only; the next batch keeps the GPU busy
        ok = ok.cpu()
        if not bool(ok.all()):
            bad = finished[int((~ok).nonzero()[0])]
            raise DiffxaiError(
                f"{spec.name}: non-finite attribution (NaN/Inf) for map {bad} (target {int(targets[bad])})")
        lo, hi = finished[0], finished[-1] + 1
        out_maps[lo:hi] = a.cpu().numpy()
        if on_result is not None:
            on_result(slice(lo, hi), out_maps[lo:hi])
        if progress is not None:
            progress(hi, N)

    try:
        pos = 0
        while pos < total:
            n = min(B, total - pos)
            Bp = B  # the last batch is padded to the fixed batch shape
            try:
                t0 = time.perf_counter()
                runs, contrib, Bp = run_batch(pos, n, Bp)
                if first_batch_s is None and compile:
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    first_batch_s = time.perf_counter() - t0
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                if B == 1:
                    raise DiffxaiError(f"{spec.name}: out of memory on {dev} even at batch size 1") from exc
                B //= 2
                stats["oom_halvings"] += 1
                stats["batch_size"] = B
                del exc
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            stats["batches"] += 1
            stats["padded_evals"] += Bp - n
            # accumulate per map: one index_add of the batch's contributions into the map slots
            if contrib is not None:  # (Occlusion on a window grid keeps its own per-map sums)
                slot = torch.tensor([i % S for i, _, cnt in runs for _ in range(cnt)]).to(dev, non_blocking=True)
                acc.index_add_(0, slot, contrib)
            for i, _, cnt in runs:
                done_count[i] += cnt
            pos += n
            # emit every finished map, in order, one batch late (see OVERLAP_HOST)
            finished = [i for i, _, _ in runs if done_count[i] == E]
            if finished:
                a = torch.stack([exp.finish(states[i], acc[i % S]).sum(0) for i in finished]).float()
                ok = torch.isfinite(a).flatten(1).all(1)
                if pinned:
                    a_h = torch.empty(a.shape, dtype=a.dtype, pin_memory=True).copy_(a, non_blocking=True)
                    ok_h = torch.empty(ok.shape, dtype=ok.dtype, pin_memory=True).copy_(ok, non_blocking=True)
                    ev = torch.cuda.Event()
                    ev.record()
                    pending.append((finished, a_h, ok_h, ev))
                else:
                    pending.append((finished, a, ok, None))
                for i in finished:  # the slots are free again (the stack above is a copy)
                    acc[i % S].zero_()
                    del states[i]
                while len(pending) > (1 if overlap else 0):
                    emit(*pending.pop(0))
        while pending:
            emit(*pending.pop(0))
    finally:
        for mod, was in modes:
            mod.training = was
        if dev.type == "cuda":
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = prev_flags
    if compile and first_batch_s is not None:
        stats["first_batch_s"] = first_batch_s  # includes tracing + compilation on a first call
    stats["wall_s"] = time.perf_counter() - t_prep
    return out_maps
