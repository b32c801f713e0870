"""Integrated Gradients (Captum ``IntegratedGradients``, baseline 0): the path-averaged input
gradient from 0 to x by Captum's own quadrature, times x (``multiply_by_inputs``; False: the
path-averaged gradient alone, the gradient-only control). Equal to Captum up to float32 rounding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from ...registry import method_info
from ..expansions import Expansion
from .base import MethodSpec, Reader

_D = method_info("integrated_gradients").settings


@dataclass(frozen=True)
class IntegratedGradientsSpec(MethodSpec):
    """``n_steps`` points of Captum approximation ``method``; ``multiply_by_inputs`` True
    multiplies the path-averaged gradient by (input - baseline) (Captum's default)."""

    name: ClassVar[str] = "integrated_gradients"
    setting_keys: ClassVar[frozenset[str]] = frozenset({"n_steps", "method", "multiply_by_inputs"})

    n_steps: int = _D["n_steps"]
    method: str = _D["method"]
    multiply_by_inputs: bool = True

    @classmethod
    def from_settings(cls, r: Reader) -> IntegratedGradientsSpec:
        from captum.attr._utils.approximation_methods import SUPPORTED_METHODS

        method = r.s.get("method", cls.method)
        if method not in SUPPORTED_METHODS:
            r.fail(f"method {method!r} is not one of {', '.join(SUPPORTED_METHODS)}")
        n_steps = r.pos_int("n_steps", cls.n_steps)
        if method != "gausslegendre" and n_steps < 2:
            r.fail(f"{method} needs n_steps >= 2")
        return cls(n_steps=n_steps, method=method, multiply_by_inputs=r.boolean("multiply_by_inputs", True))

    def evals_per_map(self, shape: Sequence[int] = (3, 224, 224)) -> int:
        return self.n_steps

    def expansion(self, shape, device) -> IntegratedGradientsExpansion:
        return IntegratedGradientsExpansion(self, device)

    def captum(self, model, x, target, perturbations_per_eval=1):
        from captum.attr import IntegratedGradients

        return IntegratedGradients(model, multiply_by_inputs=self.multiply_by_inputs).attribute(
            x, baselines=0.0, target=target, n_steps=self.n_steps, method=self.method), None


class IntegratedGradientsExpansion(Expansion):
    grad = True

    def __init__(self, spec: IntegratedGradientsSpec, device):
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
