"""What every attribution method provides (:class:`MethodSpec`) and the typed reads of a settings
dict (:class:`Reader`) its modules validate with."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from ...errors import DiffxaiError

if TYPE_CHECKING:
    import torch

    from ..expansions import Expansion


@dataclass(frozen=True)
class MethodSpec:
    """An attribution method and its validated settings (frozen; build it with
    :func:`diffxai.attribution.method_spec`). Each method's module subclasses it with its own
    fields only; the class variables say what the engine needs to know about the method."""

    #: the registry name (``diffxai.registry``)
    name: ClassVar[str]
    #: the settings ``method_spec`` accepts (the config's, plus Captum's argument names as aliases)
    setting_keys: ClassVar[frozenset[str]]
    #: the runner differentiates the output w.r.t. the input
    gradient: ClassVar[bool] = True
    #: the runner may take the incremental Occlusion route (:mod:`..incremental`): the spec then
    #: has ``window``, ``stride`` and ``baseline``
    incremental: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, r: Reader) -> MethodSpec:
        """The spec from a settings dict whose keys are known to be ``setting_keys``."""
        raise NotImplementedError

    def settings(self) -> dict:
        """The spec's fields as a JSON-able dict (tuples as lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def evals_per_map(self, shape: Sequence[int] = (3, 224, 224)) -> int:
        """Model evaluations one map of ``shape`` (C, H, W) costs."""
        raise NotImplementedError

    def expansion(self, shape: Sequence[int], device) -> Expansion:
        """How one map of ``shape`` expands into model evaluations (:mod:`..expansions`)."""
        raise NotImplementedError

    def captum(self, model, x: torch.Tensor, target: int, perturbations_per_eval: int = 1) -> tuple[torch.Tensor, Any]:
        """The Captum reference on one map ``x`` (1, C, H, W): (attribution, the random draws
        Captum made as ``attribute(draws=)`` takes them, or None). ``perturbations_per_eval``:
        evaluations per forward where the method batches them (Occlusion)."""
        raise NotImplementedError


def int3(name: str, key: str, v) -> tuple[int, int, int]:
    """Three positive integers [c, h, w]; a bare int v means (3, v, v)."""
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


class Reader:
    """Typed reads of one method's settings dict, each failure one line naming method and key."""

    def __init__(self, name: str, settings: dict):
        self.name, self.s = name, settings

    def fail(self, msg: str):
        raise DiffxaiError(f"attribution method {self.name!r}: {msg}")

    def pos_int(self, key, default) -> int:
        v = self.s.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            self.fail(f"{key} must be a positive integer, got {v!r}")
        return int(v)

    def boolean(self, key, default) -> bool:
        v = self.s.get(key, default)
        if not isinstance(v, (bool, np.bool_)):
            self.fail(f"{key} must be true or false, got {v!r}")
        return bool(v)

    def number(self, key, default, what="a number", minimum=None) -> float:
        v = self.s.get(key, default)
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or (minimum is not None and v < minimum)):
            self.fail(f"{key} must be {what}, got {v!r}")
        return float(v)

    def alias(self, a: str, b: str) -> str:
        """The key used for a setting with two names (ours, Captum's); both at once is an error."""
        if a in self.s and b in self.s:
            self.fail(f"give {a} or {b}, not both")
        return b if b in self.s else a
