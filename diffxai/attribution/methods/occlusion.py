"""Occlusion (Captum ``Occlusion``): attribution ``sum_p (f(x) - f(x_p)) * mask_p / sum_p mask_p``
over the window positions p, x_p = x with window p set to ``baseline``. The masks are built per
window position exactly as Captum's ``Occlusion._occlusion_mask`` (shift counts
:func:`shift_counts`, the last window cropped at the border). On EfficientNet-Lite0 the runner
takes the incremental route (:mod:`..incremental`: the same sums, only the changed box
recomputed). Equal to Captum up to float32 rounding."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch

from ...errors import DiffxaiError
from ...registry import method_info
from ..expansions import Expansion
from .base import MethodSpec, Reader, int3

_D = method_info("occlusion").settings


def shift_counts(shape, window, stride) -> tuple[int, ...]:
    """Captum's Occlusion window positions per dimension: ceil((dim - window) / stride) + 1 (the
    last window cropped at the border)."""
    return tuple(int(math.ceil((d - w) / s)) + 1 for d, w, s in zip(shape, window, stride))


@dataclass(frozen=True)
class OcclusionSpec(MethodSpec):
    """``window`` and ``stride`` [c, h, w] (a bare int v: (3, v, v)), ``baseline`` the fill value."""

    name: ClassVar[str] = "occlusion"
    setting_keys: ClassVar[frozenset[str]] = frozenset(
        {"window", "sliding_window_shapes", "stride", "strides", "baseline", "baselines"})
    gradient: ClassVar[bool] = False
    incremental: ClassVar[bool] = True

    window: tuple[int, int, int] = tuple(_D["window"])
    stride: tuple[int, int, int] = tuple(_D["stride"])
    baseline: float = _D["baseline"]

    @classmethod
    def from_settings(cls, r: Reader) -> OcclusionSpec:
        wkey = r.alias("window", "sliding_window_shapes")
        skey = r.alias("stride", "strides")
        window = int3(r.name, wkey, r.s.get(wkey, cls.window))
        stride = int3(r.name, skey, r.s.get(skey, cls.stride))
        base = r.number(r.alias("baseline", "baselines"), cls.baseline)
        return cls(window=window, stride=stride, baseline=base)

    def evals_per_map(self, shape: Sequence[int] = (3, 224, 224)) -> int:
        """1 (the unoccluded input) + the number of window positions."""
        return 1 + int(np.prod(shift_counts(shape, self.window, self.stride)))

    def expansion(self, shape, device) -> OcclusionExpansion:
        return OcclusionExpansion(self, shape, device)

    def captum(self, model, x, target, perturbations_per_eval=1):
        from captum.attr import Occlusion

        return Occlusion(model).attribute(x, sliding_window_shapes=tuple(self.window), strides=tuple(self.stride),
                                          baselines=self.baseline, target=target,
                                          perturbations_per_eval=perturbations_per_eval), None


class OcclusionExpansion(Expansion):
    grad = False

    def __init__(self, spec: OcclusionSpec, shape, device):
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
