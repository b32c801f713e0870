"""The attribution methods, registered once (torch-free: the Snakefile plans with :data:`METHODS`).

One line per method: its name (the config key ``attribution.<name>``, the store folder
``results/attributions/<name>/``, the module ``diffxai.attribution.methods.<name>`` that implements
it), its label in figures, and the defaults of the settings a config may give it (the defaults of
``attribution.<name>`` in config/schema.yaml; tests/test_attribution_methods.py compares them).

Everything else about a method (its validated settings, how one map expands into model
evaluations, its evaluations per map, its Captum reference) lives in its module. Adding a method:
one module in ``diffxai/attribution/methods/``, one line here, its entries in config/schema.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from .errors import DiffxaiError


@dataclass(frozen=True)
class Method:
    """One registered attribution method."""

    name: str
    label: str
    #: the config's settings of the method and their defaults (read-only)
    settings: Mapping[str, Any]
    #: its maps are x times a gradient, so it has a gradient-only control (the same method with
    #: ``multiply_by_inputs: false``; analysis.controls). Occlusion multiplies by nothing; saliency is
    #: the gradient itself.
    x_factor: bool = False

    def __post_init__(self):
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))


REGISTRY: tuple[Method, ...] = (
    Method("integrated_gradients", "Integrated Gradients", {"n_steps": 20, "method": "gausslegendre"},
           x_factor=True),
    Method("gradient_shap", "GradientSHAP", {"n_samples": 20, "stdevs": 0.0, "baselines": "zero", "n_baselines": 1},
           x_factor=True),
    Method("occlusion", "Occlusion", {"window": (3, 15, 15), "stride": (3, 8, 8), "baseline": 0.0}),
    Method("saliency", "Saliency", {"abs": False}),
)

#: the method names in registry order
METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY)
#: methods whose maps are x times a gradient (they have a gradient-only control)
X_FACTOR_METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.x_factor)
#: figure label per method
LABELS: Mapping[str, str] = MappingProxyType({m.name: m.label for m in REGISTRY})


def method_info(name: str) -> Method:
    """The registry entry of ``name``; an unknown name is one line listing the known ones."""
    for m in REGISTRY:
        if m.name == name:
            return m
    raise DiffxaiError(f"unknown attribution method {name!r}; choose one of {', '.join(METHODS)}")
