"""Captum as the engine's reference: one Captum call per map (what a user would write, the
benchmark's "naive loop"; each method's call is its spec's ``captum``), the real images the
comparisons run on, and (from :mod:`.methods.gradient_shap`) the recorder of what Captum's
GradientShap draws, so that the engine can replay the same draws (``attribute(..., draws=)``) and
be compared number for number."""
from __future__ import annotations

import numpy as np
import torch

from .methods import MethodSpec
from .methods.gradient_shap import record_gs_draws

__all__ = ["captum_maps", "record_gs_draws", "sample_image"]


def sample_image(stem: str, size: int, folders) -> torch.Tensor | None:
    """``<folder>/<stem>.jpg`` from the first folder that has it as a (3, size, size) tensor in
    [-1, 1] (bicubic resize of the short side, centre crop): the real inputs of the engine's
    comparisons with Captum (tests, bench/compare_refactor.py); None if no folder has it."""
    from PIL import Image

    f = next((d / f"{stem}.jpg" for d in folders if (d / f"{stem}.jpg").exists()), None)
    if f is None:
        return None
    im = Image.open(f).convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    l, t = (w - size) // 2, (h - size) // 2
    a = np.array(im.crop((l, t, l + size, t + size)), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1) / 127.5 - 1.0


def captum_maps(model, x, t, spec: MethodSpec, dev, dtype=torch.float32,
                perturbations_per_eval: int = 1) -> tuple[np.ndarray, list | None]:
    """One Captum call per map, as a user would write it (each spec's own Captum reference).
    Returns maps and the draws Captum made (GradientSHAP; None for methods that draw nothing).
    ``dtype``: of the inputs (the model must match; float64 maps stay float64);
    ``perturbations_per_eval``: Occlusion's windows per forward (Captum's default 1)."""
    maps, draws = [], []
    for i in range(len(x)):
        a, draw = spec.captum(model, x[i:i + 1].to(dev, dtype), int(t[i]),
                              perturbations_per_eval=perturbations_per_eval)
        a = a.detach().sum(1)[0]
        maps.append((a if dtype == torch.float64 else a.float()).cpu().numpy())
        draws.append(draw)
    return np.stack(maps), (None if all(d is None for d in draws) else draws)
