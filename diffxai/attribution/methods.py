"""The three attribution methods as data: :class:`MethodSpec` (validated by :func:`method_spec`) and
Captum's Occlusion window arithmetic (:func:`shift_counts`).

The defaults are config/schema.yaml's (tests/test_attribution_methods.py compares them), so a
spec built from an empty settings dict is the workflow's default method.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..config import METHODS
from ..errors import DiffxaiError

__all__ = ["METHODS", "MethodSpec", "method_spec", "shift_counts"]


def shift_counts(shape, window, stride) -> tuple[int, ...]:
    """Captum's Occlusion window positions per dimension: ceil((dim - window) / stride) + 1 (the
    last window cropped at the border)."""
    return tuple(int(math.ceil((d - w) / s)) + 1 for d, w, s in zip(shape, window, stride))


#: the settings each method accepts (Captum's argument names are accepted as aliases)
SETTING_KEYS = {
    "integrated_gradients": frozenset({"n_steps", "method", "multiply_by_inputs"}),
    "gradient_shap": frozenset({"n_samples", "stdevs", "baselines", "baseline_distribution", "n_baselines",
                                "multiply_by_inputs"}),
    "occlusion": frozenset({"window", "sliding_window_shapes", "stride", "strides", "baseline", "baselines"}),
}
#: the fields of MethodSpec that belong to each method (what :meth:`MethodSpec.settings` returns)
SPEC_FIELDS = {
    "integrated_gradients": ("n_steps", "method", "multiply_by_inputs"),
    "gradient_shap": ("n_samples", "stdevs", "baselines", "n_baselines", "multiply_by_inputs"),
    "occlusion": ("window", "stride", "baseline"),
}


@dataclass(frozen=True)
class MethodSpec:
    """An attribution method and its settings; build it with :func:`method_spec`.

    Only the fields of ``name`` matter; :meth:`settings` returns them as a JSON-able dict.
    """

    name: str
    # Integrated Gradients
    n_steps: int = 20
    method: str = "gausslegendre"
    #: IG and GradientSHAP: True multiplies the path-averaged gradient by (input - baseline)
    #: (Captum's default); False returns the gradient alone (Captum's multiply_by_inputs=False)
    multiply_by_inputs: bool = True
    # GradientSHAP
    n_samples: int = 20
    stdevs: float = 0.0
    baselines: str = "zero"  # "zero": one all-zero baseline; "uniform": n_baselines U(-1,1) draws
    n_baselines: int = 1
    # Occlusion
    window: tuple[int, int, int] = (3, 15, 15)
    stride: tuple[int, int, int] = (3, 8, 8)
    baseline: float = 0.0

    def settings(self) -> dict:
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in SPEC_FIELDS[self.name]}

    def evals_per_map(self, shape: Sequence[int] = (3, 224, 224)) -> int:
        """Model evaluations one map costs (Occlusion: 1 + number of window positions)."""
        if self.name == "integrated_gradients":
            return self.n_steps
        if self.name == "gradient_shap":
            return self.n_samples
        return 1 + int(np.prod(shift_counts(shape, self.window, self.stride)))


_DEFAULT = MethodSpec("integrated_gradients")


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


class _Reader:
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


def _integrated_gradients(r: _Reader) -> MethodSpec:
    from captum.attr._utils.approximation_methods import SUPPORTED_METHODS

    method = r.s.get("method", _DEFAULT.method)
    if method not in SUPPORTED_METHODS:
        r.fail(f"method {method!r} is not one of {', '.join(SUPPORTED_METHODS)}")
    n_steps = r.pos_int("n_steps", _DEFAULT.n_steps)
    if method != "gausslegendre" and n_steps < 2:
        r.fail(f"{method} needs n_steps >= 2")
    return MethodSpec(r.name, n_steps=n_steps, method=method,
                      multiply_by_inputs=r.boolean("multiply_by_inputs", True))


def _gradient_shap(r: _Reader) -> MethodSpec:
    dist = r.s.get(r.alias("baselines", "baseline_distribution"), _DEFAULT.baselines)
    if dist not in ("zero", "uniform"):
        r.fail(f"baselines must be 'zero' or 'uniform', got {dist!r}")
    n_b = r.pos_int("n_baselines", 1 if dist == "zero" else 16)
    if dist == "zero" and n_b != 1:
        r.fail(f"baselines 'zero' is a single baseline; n_baselines must be 1, got {n_b}")
    stdevs = r.number("stdevs", _DEFAULT.stdevs, "a float >= 0", minimum=0)
    return MethodSpec(r.name, n_samples=r.pos_int("n_samples", _DEFAULT.n_samples), stdevs=stdevs,
                      baselines=dist, n_baselines=n_b, multiply_by_inputs=r.boolean("multiply_by_inputs", True))


def _occlusion(r: _Reader) -> MethodSpec:
    wkey = r.alias("window", "sliding_window_shapes")
    skey = r.alias("stride", "strides")
    window = _int3(r.name, wkey, r.s.get(wkey, _DEFAULT.window))
    stride = _int3(r.name, skey, r.s.get(skey, _DEFAULT.stride))
    base = r.number(r.alias("baseline", "baselines"), _DEFAULT.baseline)
    return MethodSpec(r.name, window=window, stride=stride, baseline=base)


_BUILD = {"integrated_gradients": _integrated_gradients, "gradient_shap": _gradient_shap, "occlusion": _occlusion}


def method_spec(name: str, settings: dict | None = None) -> MethodSpec:
    """Validate ``settings`` for method ``name`` and return a :class:`MethodSpec`.

    IG: ``n_steps``, ``method`` (any Captum approximation method, default ``gausslegendre``),
    ``multiply_by_inputs`` (False: gradient-only IG, the path-averaged gradient). GradientSHAP:
    ``n_samples``, ``stdevs``, ``baselines`` ("zero" | "uniform"), ``n_baselines`` (uniform
    only), ``multiply_by_inputs``. Occlusion: ``window`` [c,h,w], ``stride`` [c,h,w],
    ``baseline``. Defaults: :class:`MethodSpec`'s (= config/schema.yaml's).
    """
    settings = dict(settings or {})
    if name not in METHODS:
        raise DiffxaiError(f"unknown attribution method {name!r}; choose one of {', '.join(METHODS)}")
    allowed = SETTING_KEYS[name]
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise DiffxaiError(
            f"attribution method {name!r}: unknown setting {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return _BUILD[name](_Reader(name, settings))
