"""How one map expands into model evaluations and how their outputs combine (one class per method).

Each method is a small *expansion*: a map (one input x, one target class) expands into E model
evaluations (IG: ``n_steps`` interpolation points; GradientSHAP: ``n_samples`` noisy points on the
path from a baseline; Occlusion: one unoccluded forward + one forward per window position). The
batch runner (:mod:`.runner`) evaluates them in device batches and hands each evaluation's output
(and input gradient) back to :meth:`_Expansion.contrib`, accumulates the contributions per map and
calls :meth:`_Expansion.finish` when a map's last evaluation is done.

The numbers reproduce Captum 0.9 (``IntegratedGradients``, ``GradientShap``, ``Occlusion``) called
on one map at a time, up to float32 rounding: the interpolation points and weights come from
Captum's own ``approximation_parameters``, GradientSHAP's draws follow Captum's formulas
(``x_noisy = x + eps``, ``point = a*x_noisy + (1-a)*b``, attribution ``(x_noisy - b) * grad``, mean
over samples), and the Occlusion masks are built per window position exactly as Captum's
``Occlusion._occlusion_mask`` (shift counts :func:`.methods.shift_counts`, the last window cropped
at the border), attribution ``sum_p (f(x) - f(x_p)) * mask_p / sum_p mask_p``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DiffxaiError
from .methods import METHODS, MethodSpec, shift_counts


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
        self.inc = None  # set by the runner when the incremental path applies
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


def cat_contribs(contribs):
    if contribs[0] is None:
        return None
    return torch.cat(contribs) if len(contribs) > 1 else contribs[0]


def make_expansion(spec: MethodSpec, shape, device) -> _Expansion:
    if spec.name == "integrated_gradients":
        return _IG(spec, device)
    if spec.name == "gradient_shap":
        return _GS(spec, shape, device)
    if spec.name == "occlusion":
        return _Occ(spec, shape, device)
    raise DiffxaiError(f"unknown attribution method {spec.name!r}; choose one of {', '.join(METHODS)}")
