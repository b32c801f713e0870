"""The named regions of a clean image (no weights, never a noised image), plus PNG I/O.

Every mask is a boolean ``(H, W)`` array per image (``(N, H, W)`` for the N images of a class),
computed from the clean 8-bit RGB image only:

- **silhouette**: the object's foreground. The packaged hand-drawn silhouette when the image is one
  it was drawn on (:mod:`.hand_masks`, matched by sha256; ``hand: true``), else the automatic one
  (:mod:`.segmentation`: GrabCut with a "probably background" border init, largest component,
  holes filled). An empty silhouette gives empty outline and interior masks (their enrichment is
  NaN, so claims about them stay undecided), never a substitute region.
- **outline**: the band of ``outline.width`` px around the silhouette's boundary, half inside and
  half outside: pixels whose Euclidean distance to the nearest pixel across the boundary is at most
  ``width / 2``. The image frame is not a boundary: a silhouette that fills the frame has no
  outline.
- **interior**: silhouette minus outline. **background**: the rest (outline, interior and
  background partition the image).
- **detail**: the ``detail.fraction`` of the *interior's* pixels with the largest fine-scale energy
  ``G_e * (G_s1 * I - G_s2 * I)^2`` (difference of Gaussians of the grey image, squared, locally
  averaged): the object's fine texture (fur, stripes, eyes), not its contour.
- **edges**: the ``edges.fraction`` of the image's pixels with the largest Sobel magnitude of the
  grey image blurred by ``edges.edge_sigma`` px: high-contrast structure anywhere (the object's
  contour, but also stripes, eyes and background clutter). It is never called an outline.
- **face**, **stripes** (and any other hand mask): added from the packaged hand masks when every
  image of the class has one.

``grey`` is ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` in [0, 1]. ``names`` picks (and
orders) the computed masks kept. User masks: a folder of PNGs ``{image:03d}_{name}.png`` (or
``{name}.png`` for every image), non-zero = inside; they replace or add to all of the above.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import DiffxaiError
from .pixels import edge_magnitude, grey, read_mask  # noqa: F401 - part of this module's API
from . import hand_masks as HM
from . import segmentation as SEG

COMPUTED = ("silhouette", "outline", "interior", "background", "detail", "edges")


def fine_energy(g: np.ndarray, sigma_fine: float = 0.7, sigma_coarse: float = 2.0,
                energy_sigma: float = 2.0) -> np.ndarray:
    """Local fine-scale energy: Gaussian-averaged squared difference of Gaussians of ``g``."""
    if not 0 <= sigma_fine < sigma_coarse:
        raise DiffxaiError(f"detail mask needs 0 <= sigma_fine < sigma_coarse, got {sigma_fine}, {sigma_coarse}")
    fine = ndimage.gaussian_filter(g, sigma_fine) if sigma_fine > 0 else g
    dog = fine - ndimage.gaussian_filter(g, sigma_coarse)
    return ndimage.gaussian_filter(dog * dog, energy_sigma)


def top_fraction(score: np.ndarray, fraction: float, where: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the ``round(fraction * n)`` eligible pixels with the largest ``score``.

    ``n`` is the number of eligible pixels (``where`` True; all pixels by default). Ties are broken
    by position (stable sort), so the area is exact.
    """
    if not 0 < fraction <= 1:
        raise DiffxaiError(f"mask fraction must be in (0, 1], got {fraction}")
    flat = np.asarray(score, dtype=np.float64).ravel()
    ok = np.ones(flat.size, bool) if where is None else np.asarray(where, bool).ravel()
    n = int(round(fraction * int(ok.sum())))
    s = np.where(ok, flat, -np.inf)
    order = np.argsort(-s, kind="stable")[:n]
    out = np.zeros(flat.size, bool)
    out[order] = True
    return out.reshape(np.shape(score))


def outline_band(fg: np.ndarray, width: float = 8.0) -> np.ndarray:
    """Pixels within ``width / 2`` px of the boundary of ``fg`` on either side (the frame is no boundary)."""
    fg = np.asarray(fg, bool)
    if width <= 0:
        raise DiffxaiError(f"analysis.masks.outline.width must be > 0 px, got {width}")
    if fg.all() or not fg.any():
        return np.zeros(fg.shape, bool)
    half = width / 2.0
    inside = fg & (ndimage.distance_transform_edt(fg) <= half)       # distance to the nearest outside pixel
    outside = ~fg & (ndimage.distance_transform_edt(~fg) <= half)    # distance to the nearest inside pixel
    return inside | outside


def edges_mask(rgb: np.ndarray, *, fraction: float = 0.10, edge_sigma: float = 2.0) -> np.ndarray:
    """The ``fraction`` of pixels with the largest blurred-Sobel magnitude of one (H, W, 3) image."""
    return top_fraction(edge_magnitude(grey(rgb), edge_sigma), fraction)


def detail_mask(rgb: np.ndarray, interior: np.ndarray, *, fraction: float = 0.25, sigma_fine: float = 0.7,
                sigma_coarse: float = 2.0, energy_sigma: float = 2.0) -> np.ndarray:
    """The ``fraction`` of the ``interior`` pixels with the largest fine-scale energy."""
    return top_fraction(fine_energy(grey(rgb), sigma_fine, sigma_coarse, energy_sigma), fraction, interior)


def merged_settings(settings: Mapping | None) -> dict:
    """config/schema.yaml's ``analysis.masks`` defaults updated with the ``analysis.masks`` block (unknown
    keys kept)."""
    from ..config import schema_defaults

    s = schema_defaults("analysis")["masks"]
    for k, v in (settings or {}).items():
        if isinstance(s.get(k), dict) and isinstance(v, Mapping):
            s[k].update(v)
        else:
            s[k] = v
    unknown = sorted(set(s["names"]) - set(COMPUTED))
    if unknown:
        raise DiffxaiError(f"analysis.masks.names: {unknown} not among the computed masks {list(COMPUTED)}")
    return s


def image_masks(rgb: np.ndarray, settings: Mapping | None = None,
                fg: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every computed mask of one clean (H, W, 3) image, from ``fg`` (default: the automatic silhouette)."""
    s = merged_settings(settings)
    fg = SEG.silhouette(rgb, s["silhouette"]) if fg is None else np.asarray(fg, bool)
    band = outline_band(fg, float(s["outline"]["width"]))
    interior = fg & ~band
    out = {"silhouette": fg, "outline": band, "interior": interior, "background": ~fg & ~band}
    if "detail" in s["names"]:
        out["detail"] = detail_mask(rgb, interior, **s["detail"])
    if "edges" in s["names"]:
        out["edges"] = edges_mask(rgb, **s["edges"])
    return {k: out[k] for k in s["names"]}


def compute_masks(clean_rgb: np.ndarray, settings: Mapping | None = None,
                  hand: Sequence[Mapping[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """``{name: (N, H, W) bool}`` for the ``names`` of N clean images (N, H, W, 3) (or one (H, W, 3)).

    ``hand``: per image, its hand masks (``{}`` for none); a hand ``silhouette`` replaces the
    automatic one (and so moves outline, interior, background and detail with it).
    """
    s = merged_settings(settings)
    rgb = np.asarray(clean_rgb)
    rgb = rgb[None] if rgb.ndim == 3 else rgb
    hand = list(hand) if hand is not None else [{}] * len(rgb)
    per = [image_masks(img, s, h.get("silhouette")) for img, h in zip(rgb, hand)]
    return {k: np.stack([p[k] for p in per]) for k in s["names"]}


def mask_file(folder: str | os.PathLike, name: str, image: int | None = None) -> Path:
    """Path of a mask PNG: ``{image:03d}_{name}.png`` (per image) or ``{name}.png`` (all images)."""
    return Path(folder) / (f"{name}.png" if image is None else f"{int(image):03d}_{name}.png")


def write_masks(masks: Mapping[str, np.ndarray], folder: str | os.PathLike) -> list[Path]:
    """Write each (N, H, W) bool mask as 8-bit PNGs ``{image:03d}_{name}.png`` (0 / 255)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, m in masks.items():
        m = np.asarray(m, bool)
        for i, mi in enumerate(m if m.ndim == 3 else m[None]):
            p = mask_file(folder, name, i)
            Image.fromarray((mi * 255).astype(np.uint8), mode="L").save(p)
            paths.append(p)
    return paths


def load_masks(folder: str | os.PathLike, n_images: int, shape: tuple[int, int],
               names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Masks from a user folder: ``{name: (n_images, H, W) bool}`` for every name found.

    A name is kept only when every image has a mask (its own ``{image:03d}_{name}.png`` or the
    shared ``{name}.png``); ``names`` restricts the lookup. Missing folder -> empty dict.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {p.stem.split("_", 1)[1] if p.stem[:3].isdigit() and "_" in p.stem else p.stem
             for p in folder.glob("*.png")}
    out = {}
    for name in sorted(found if names is None else set(names) & found):
        per = []
        for i in range(n_images):
            p = mask_file(folder, name, i)
            if not p.exists():
                p = mask_file(folder, name)
            if not p.exists():
                break
            per.append(read_mask(p, shape))
        if len(per) == n_images:
            out[name] = np.stack(per)
    return out


def class_masks(clean_rgb: np.ndarray, settings: Mapping | None = None,
                user_folder: str | os.PathLike | None = None,
                sources: Sequence[str | None] | None = None) -> dict[str, np.ndarray]:
    """The masks of a class's N clean images (N, H, W, 3): computed (:func:`compute_masks`), with the
    packaged hand masks when ``hand`` is on (a hand silhouette replaces the automatic one per image;
    ``face``/``stripes`` are added when every image has one), then the user's PNGs on top.

    ``sources``: optional sha256 of each image's source file, a second key for the hand masks.
    """
    s = merged_settings(settings)
    rgb = np.asarray(clean_rgb)
    rgb = rgb[None] if rgb.ndim == 3 else rgb
    hand = HM.class_hand_masks(rgb, sources) if s["hand"] else [{}] * len(rgb)
    masks = compute_masks(rgb, s, hand)
    extra = set.intersection(*(set(h) for h in hand)) - {"silhouette"} if hand else set()
    for name in sorted(extra):
        masks[name] = np.stack([h[name] for h in hand])
    if user_folder is not None:
        masks.update(load_masks(user_folder, rgb.shape[0], rgb.shape[1:3]))
    return masks

