"""Outline and detail masks computed from the clean image only (no weights), plus PNG I/O.

Definitions (all on the clean 8-bit RGB image, never on a noised one):

- **grey**: ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` scaled to [0, 1].
- **edge magnitude**: Sobel gradient magnitude of the grey image smoothed with a Gaussian of
  ``edge_sigma`` px. Smoothing first keeps the coarse, object-scale contours (the "outline" of
  Wang & Vastola 2023: high-variance, low-frequency layout) and drops fur/texture.
- **outline band** (``outline.method: edges``): the ``outline.fraction`` of pixels with the largest
  edge magnitude (a fixed area fraction, so enrichment values are comparable across images). On a
  close-up face this band holds the eyes, nose and head contour: "coarse, high-contrast structure"
  rather than the object's silhouette alone; a user ``outline`` PNG replaces it.
- **outline band** (``outline.method: silhouette``): a foreground silhouette from an unsupervised
  2-means clustering of the blurred Lab-like colour (the cluster that touches the image border
  least is the object; largest connected component, holes filled); the band is the
  ``outline.fraction`` of pixels nearest to the silhouette's boundary. Experimental: on the
  study's close-up cat faces and the tiger in grass the 2-means split often follows lighting or
  grass instead of the animal (look at the written PNGs); ``edges`` is the default.
- **detail mask**: fine-scale energy ``G_e * (G_s1 * I - G_s2 * I)^2`` (difference of Gaussians
  ``s1 < s2``, squared, locally averaged over ``G_e``) ranked among the pixels inside the object
  region (the silhouette, or a centred box of ``centre_fraction`` of the area) and outside the
  outline band; the top ``detail.fraction`` of the image area is the mask. Outline and detail
  masks are therefore disjoint.

A mask is a boolean array ``(H, W)`` (or ``(N, H, W)`` for N images). User masks: a folder of
PNGs named ``{image:03d}_{name}.png`` (or ``{name}.png`` for every image); non-zero = inside.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import DiffxaiError

DEFAULTS = {
    "outline": {"method": "edges", "fraction": 0.10, "edge_sigma": 2.0},
    "detail": {"fraction": 0.10, "sigma_fine": 0.7, "sigma_coarse": 2.0, "energy_sigma": 2.0,
               "region": "centre", "centre_fraction": 0.5},
}


def grey(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 or float in [0, 255] -> (..., H, W) float64 luma in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) / 255.0


def edge_magnitude(g: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Sobel gradient magnitude of ``g`` (H, W) after a Gaussian blur of ``sigma`` px."""
    s = ndimage.gaussian_filter(g, sigma) if sigma > 0 else g
    return np.hypot(ndimage.sobel(s, axis=0), ndimage.sobel(s, axis=1))


def fine_energy(g: np.ndarray, sigma_fine: float = 0.7, sigma_coarse: float = 2.0,
                energy_sigma: float = 2.0) -> np.ndarray:
    """Local fine-scale energy: Gaussian-averaged squared difference of Gaussians of ``g``."""
    if not 0 <= sigma_fine < sigma_coarse:
        raise DiffxaiError(f"detail mask needs 0 <= sigma_fine < sigma_coarse, got {sigma_fine}, {sigma_coarse}")
    fine = ndimage.gaussian_filter(g, sigma_fine) if sigma_fine > 0 else g
    dog = fine - ndimage.gaussian_filter(g, sigma_coarse)
    return ndimage.gaussian_filter(dog * dog, energy_sigma)


def top_fraction(score: np.ndarray, fraction: float, where: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of exactly ``round(fraction * H * W)`` pixels with the largest ``score``.

    Only pixels with ``where`` True are eligible (all by default); if fewer are eligible, all of
    them are returned. Ties are broken by position (stable sort), so the area is exact.
    """
    if not 0 < fraction <= 1:
        raise DiffxaiError(f"mask fraction must be in (0, 1], got {fraction}")
    flat = np.asarray(score, dtype=np.float64).ravel()
    n = int(round(fraction * flat.size))
    s = flat.copy()
    if where is not None:
        s[~np.asarray(where, bool).ravel()] = -np.inf
        n = min(n, int(np.asarray(where, bool).sum()))
    order = np.argsort(-s, kind="stable")[:n]
    out = np.zeros(flat.size, bool)
    out[order] = True
    return out.reshape(np.shape(score))


def centre_box(shape: tuple[int, int], fraction: float = 0.5) -> np.ndarray:
    """A centred axis-aligned box covering ``fraction`` of the image area (side ratio kept)."""
    h, w = shape
    s = np.sqrt(fraction)
    bh, bw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    out = np.zeros((h, w), bool)
    y0, x0 = (h - bh) // 2, (w - bw) // 2
    out[y0:y0 + bh, x0:x0 + bw] = True
    return out


def silhouette(rgb: np.ndarray, blur_sigma: float = 4.0, iters: int = 20) -> np.ndarray:
    """Unsupervised foreground estimate of one (H, W, 3) image: 2-means on blurred colour.

    Features: the three channels blurred with ``blur_sigma``, plus the distance to the image centre
    (weak prior that the object is central). The object cluster is the one with the smaller share
    of the border pixels; its largest connected component with holes filled is returned.
    """
    img = np.asarray(rgb, np.float64) / 255.0
    h, w = img.shape[:2]
    feats = np.stack([ndimage.gaussian_filter(img[..., c], blur_sigma) for c in range(3)], -1)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - (h - 1) / 2) / h, (xx - (w - 1) / 2) / w)
    f = np.concatenate([feats, 0.5 * r[..., None]], -1).reshape(-1, 4)
    border = np.zeros((h, w), bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    c = np.stack([f[~border.ravel()].mean(0), f[border.ravel()].mean(0)])  # init: inside vs border
    for _ in range(iters):
        lab = ((f[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([f[lab == j].mean(0) if np.any(lab == j) else c[j] for j in range(2)])
        if np.allclose(new, c):
            break
        c = new
    lab = lab.reshape(h, w)
    obj = int(np.argmin([np.mean(lab[border] == j) for j in range(2)]))
    fg = lab == obj
    comp, n = ndimage.label(fg)
    if n == 0:
        return centre_box((h, w), 0.5)
    sizes = ndimage.sum(fg, comp, index=np.arange(1, n + 1))
    fg = comp == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(fg)


def boundary_band(fg: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of pixels nearest to the boundary of the boolean region ``fg``."""
    edge = fg ^ ndimage.binary_erosion(fg, border_value=0)
    if not edge.any():
        raise DiffxaiError("silhouette has no boundary; use outline.method: edges")
    dist = ndimage.distance_transform_edt(~edge)
    return top_fraction(-dist, fraction)


def outline_mask(rgb: np.ndarray, *, method: str = "edges", fraction: float = 0.10,
                 edge_sigma: float = 2.0, fg: np.ndarray | None = None) -> np.ndarray:
    """Outline band of one clean image (H, W, 3) -> bool (H, W); see the module docstring."""
    if method == "edges":
        return top_fraction(edge_magnitude(grey(rgb), edge_sigma), fraction)
    if method == "silhouette":
        return boundary_band(silhouette(rgb) if fg is None else fg, fraction)
    raise DiffxaiError(f"outline.method {method!r} is not 'edges' or 'silhouette'")


def detail_mask(rgb: np.ndarray, *, fraction: float = 0.10, sigma_fine: float = 0.7,
                sigma_coarse: float = 2.0, energy_sigma: float = 2.0, region: str = "centre",
                centre_fraction: float = 0.5, exclude: np.ndarray | None = None,
                fg: np.ndarray | None = None) -> np.ndarray:
    """Detail mask of one clean image (H, W, 3) -> bool (H, W); see the module docstring."""
    g = grey(rgb)
    if region == "centre":
        where = centre_box(g.shape, centre_fraction)
    elif region == "silhouette":
        where = silhouette(rgb) if fg is None else fg
    elif region == "image":
        where = np.ones(g.shape, bool)
    else:
        raise DiffxaiError(f"detail.region {region!r} is not 'centre', 'silhouette' or 'image'")
    if exclude is not None:
        where = where & ~exclude
    return top_fraction(fine_energy(g, sigma_fine, sigma_coarse, energy_sigma), fraction, where)


def _merged(settings: Mapping | None) -> dict:
    s = {k: dict(v) for k, v in DEFAULTS.items()}
    for k, v in (settings or {}).items():
        if k not in DEFAULTS:          # e.g. the stage's 'folder' key
            continue
        if k in s and isinstance(v, Mapping):
            s[k].update(v)
        else:
            s[k] = v
    return s


def compute_masks(clean_rgb: np.ndarray, settings: Mapping | None = None) -> dict[str, np.ndarray]:
    """``{"outline": (N, H, W) bool, "detail": (N, H, W) bool}`` for N clean images (N, H, W, 3).

    ``settings`` is the ``analysis.masks`` config block (``outline``/``detail`` sub-blocks as in
    :data:`DEFAULTS`). The silhouette is computed once per image when either mask needs it.
    """
    s = _merged(settings)
    rgb = np.asarray(clean_rgb)
    if rgb.ndim == 3:
        rgb = rgb[None]
    out = {"outline": [], "detail": []}
    for img in rgb:
        need_fg = s["outline"]["method"] == "silhouette" or s["detail"]["region"] == "silhouette"
        fg = silhouette(img) if need_fg else None
        o = outline_mask(img, fg=fg, **s["outline"])
        out["outline"].append(o)
        out["detail"].append(detail_mask(img, exclude=o, fg=fg, **s["detail"]))
    return {k: np.stack(v) for k, v in out.items()}


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


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A PNG as a bool mask (non-zero in any channel = inside), resized (nearest) to ``shape``."""
    im = Image.open(path)
    if shape is not None and im.size != (shape[1], shape[0]):
        im = im.resize((shape[1], shape[0]), Image.NEAREST)
    a = np.asarray(im)
    return (a.reshape(a.shape[0], a.shape[1], -1) != 0).any(-1)


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
                user_folder: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Computed outline/detail masks, overridden or extended by the user's PNGs (e.g. ``face``)."""
    rgb = np.asarray(clean_rgb)
    rgb = rgb[None] if rgb.ndim == 3 else rgb
    masks = compute_masks(rgb, settings)
    if user_folder is not None:
        masks.update(load_masks(user_folder, rgb.shape[0], rgb.shape[1:3]))
    return masks
