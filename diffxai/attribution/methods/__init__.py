"""The attribution methods, one module per method (named as in :mod:`diffxai.registry`), each
with its own frozen :class:`MethodSpec` subclass (its settings and their validation, its
evaluations per map, its expansion, its Captum reference); :func:`method_spec` builds one.

| module | method |
|---|---|
| ``integrated_gradients`` | Captum ``IntegratedGradients`` (baseline 0) |
| ``gradient_shap`` | Captum ``GradientShap`` (zero or uniform baselines) |
| ``occlusion`` | Captum ``Occlusion`` (and Captum's window arithmetic, :func:`shift_counts`) |
| ``saliency`` | Captum ``Saliency`` (the signed input gradient by default) |
| ``base`` | what every method provides, and the typed reads of a settings dict |

The defaults of the config's settings are the registry's (= config/schema.yaml's, compared by
tests/test_attribution_methods.py), so a spec built from an empty settings dict is the
workflow's default method.
"""
from __future__ import annotations

import importlib

from ...errors import DiffxaiError
from ...registry import METHODS, method_info
from .base import MethodSpec, Reader
from .occlusion import shift_counts

__all__ = ["METHODS", "SPECS", "MethodSpec", "method_spec", "shift_counts"]

#: the spec class of every registered method (its module's MethodSpec subclass named after it)
SPECS: dict[str, type[MethodSpec]] = {}
for _name in METHODS:
    _module = importlib.import_module(f"{__name__}.{_name}")
    SPECS[_name] = next(c for c in vars(_module).values()
                        if isinstance(c, type) and issubclass(c, MethodSpec) and c.__dict__.get("name") == _name)


def method_spec(name: str, settings: dict | None = None) -> MethodSpec:
    """Validate ``settings`` for method ``name`` and return its spec.

    IG: ``n_steps``, ``method`` (any Captum approximation method, default ``gausslegendre``),
    ``multiply_by_inputs`` (False: gradient-only IG, the path-averaged gradient). GradientSHAP:
    ``n_samples``, ``stdevs``, ``baselines`` ("zero" | "uniform"), ``n_baselines`` (uniform
    only), ``multiply_by_inputs``. Occlusion: ``window`` [c,h,w], ``stride`` [c,h,w],
    ``baseline``. Saliency: ``abs``. Defaults: the registry's (= config/schema.yaml's).
    """
    settings = dict(settings or {})
    method_info(name)  # an unknown name: one line listing the registered ones
    cls = SPECS[name]
    unknown = sorted(set(settings) - cls.setting_keys)
    if unknown:
        raise DiffxaiError(f"attribution method {name!r}: unknown setting {unknown[0]!r}; "
                           f"allowed: {', '.join(sorted(cls.setting_keys))}")
    return cls.from_settings(Reader(name, settings))
