"""Saliency (Captum ``Saliency``): the plain input gradient d f(x) / d x, one forward and one
backward per map. ``abs`` defaults to False (Captum's default is True): the signed gradient is the
gradient-only control the analysis compares the other methods with; like every method's map it
is summed over the channels afterwards (with ``abs`` True: the sum of the channels' |gradient|).
Equal to Captum's ``Saliency(model).attribute(x, target, abs=abs)`` up to float32 rounding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ...registry import method_info
from ..expansions import Expansion
from .base import MethodSpec, Reader

_D = method_info("saliency").settings


@dataclass(frozen=True)
class SaliencySpec(MethodSpec):
    """``abs``: the gradient's absolute value per channel (Captum's default) instead of its sign."""

    name: ClassVar[str] = "saliency"
    setting_keys: ClassVar[frozenset[str]] = frozenset({"abs"})

    abs: bool = _D["abs"]

    @classmethod
    def from_settings(cls, r: Reader) -> SaliencySpec:
        return cls(abs=r.boolean("abs", cls.abs))

    def evals_per_map(self, shape: Sequence[int] = (3, 224, 224)) -> int:
        return 1

    def expansion(self, shape, device) -> SaliencyExpansion:
        return SaliencyExpansion(self)

    def captum(self, model, x, target, perturbations_per_eval=1):
        from captum.attr import Saliency

        return Saliency(model).attribute(x, target=target, abs=self.abs), None


class SaliencyExpansion(Expansion):
    grad = True
    n = 1

    def __init__(self, spec: SaliencySpec):
        self.abs = spec.abs

    def points(self, st, idx):
        return st.x.unsqueeze(0), None

    def contrib(self, st, idx, j0, y, g, aux):
        return g.abs() if self.abs else g

    def finish(self, st, acc):
        return acc
