"""How one map expands into model evaluations and how their outputs combine: the protocol every
method's expansion follows (each method's own is in its module under :mod:`.methods`).

A map (one input x, one target class) expands into E model evaluations (Integrated Gradients:
``n_steps`` interpolation points; GradientSHAP: ``n_samples`` noisy points on the path from a
baseline; Occlusion: one unoccluded forward + one forward per window position; Saliency: x
itself). The batch runner (:mod:`.runner`) evaluates them in device batches and hands each
evaluation's output (and input gradient) back to :meth:`Expansion.contrib`, accumulates the
contributions per map and calls :meth:`Expansion.finish` when a map's last evaluation is done.
"""
from __future__ import annotations

from typing import Any

import torch


class _MapState:
    """Per-map tensors on the device while the map is in flight."""

    __slots__ = ("x", "target", "noise", "bidx", "alpha", "bases", "f0", "d")


class Expansion:
    """One method's evaluations of a map (built by ``MethodSpec.expansion``)."""

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


def cat_contribs(contribs):
    if contribs[0] is None:
        return None
    return torch.cat(contribs) if len(contribs) > 1 else contribs[0]
