"""GradientSHAP (Captum ``GradientShap``): the mean over ``n_samples`` points of
(x_noisy - b) * grad f(a * x_noisy + (1 - a) * b), with x_noisy = x + N(0, stdevs^2), baseline b
(all-zero, or one of ``n_baselines`` U(-1, 1) draws) and a ~ U(0, 1) (``multiply_by_inputs``
False: the mean gradient alone, the gradient-only control).

The engine draws from a generator seeded per map (draws never depend on batching); to compare
with Captum number for number, :func:`record_gs_draws` records what Captum draws and the engine
replays it (``attribute(..., draws=)``). Equal to Captum up to float32 rounding.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch

from ...errors import DiffxaiError
from ...registry import method_info
from ..expansions import Expansion
from .base import MethodSpec, Reader

_D = method_info("gradient_shap").settings


@dataclass(frozen=True)
class GradientShapSpec(MethodSpec):
    """``baselines``: "zero" (one all-zero baseline) or "uniform" (``n_baselines`` U(-1, 1) draws)."""

    name: ClassVar[str] = "gradient_shap"
    setting_keys: ClassVar[frozenset[str]] = frozenset(
        {"n_samples", "stdevs", "baselines", "baseline_distribution", "n_baselines", "multiply_by_inputs"})

    n_samples: int = _D["n_samples"]
    stdevs: float = _D["stdevs"]
    baselines: str = _D["baselines"]
    n_baselines: int = _D["n_baselines"]
    multiply_by_inputs: bool = True

    @classmethod
    def from_settings(cls, r: Reader) -> GradientShapSpec:
        dist = r.s.get(r.alias("baselines", "baseline_distribution"), cls.baselines)
        if dist not in ("zero", "uniform"):
            r.fail(f"baselines must be 'zero' or 'uniform', got {dist!r}")
        n_b = r.pos_int("n_baselines", 1 if dist == "zero" else 16)
        if dist == "zero" and n_b != 1:
            r.fail(f"baselines 'zero' is a single baseline; n_baselines must be 1, got {n_b}")
        stdevs = r.number("stdevs", cls.stdevs, "a float >= 0", minimum=0)
        return cls(n_samples=r.pos_int("n_samples", cls.n_samples), stdevs=stdevs, baselines=dist, n_baselines=n_b,
                   multiply_by_inputs=r.boolean("multiply_by_inputs", True))

    def evals_per_map(self, shape: Sequence[int] = (3, 224, 224)) -> int:
        return self.n_samples

    def expansion(self, shape, device) -> GradientShapExpansion:
        return GradientShapExpansion(self, shape, device)

    def captum(self, model, x, target, perturbations_per_eval=1):
        """Captum on zero baselines, and the draws it made (replayable with ``attribute(draws=)``)."""
        from captum.attr import GradientShap

        rec: dict = {}
        with record_gs_draws(rec):
            a = GradientShap(model, multiply_by_inputs=self.multiply_by_inputs).attribute(
                x, baselines=torch.zeros(1, *x.shape[1:], device=x.device), n_samples=self.n_samples,
                stdevs=self.stdevs, target=target)
        return a, {"noise": rec["noise"].detach().clone(), "baseline_index": rec["baseline_index"],
                   "alpha": rec["alpha"]}


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


class GradientShapExpansion(Expansion):
    grad = True

    def __init__(self, spec: GradientShapSpec, shape, device):
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
