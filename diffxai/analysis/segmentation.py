"""Automatic foreground (the object's silhouette) of one clean image, and mask overlap (IoU).

Method: OpenCV's GrabCut (Rother et al. 2004: a colour GMM per side, refined by graph cuts) on the
8-bit RGB image, initialised by a *mask*, not a rectangle: a border strip of ``border`` x the short
side is "probably background", everything else "probably foreground". A rectangle init would make
the border *surely* background, which cannot describe the study's close-ups (the Persian and
Egyptian cats touch three or four sides of the frame); with "probably" labels GrabCut may give the
border to the object when its colours say so. The largest connected foreground component is kept
and its holes are filled. OpenCV's RNG (the GMM's k-means init) is seeded with ``seed``, so the
result is deterministic.

Measured against the hand-drawn silhouettes of the four study images (IoU, see
:func:`diffxai.analysis.hand_masks.silhouette_agreement`, pinned by a test): GrabCut with this init
and the restarts below 0.97 / 0.57 / 0.99 / 0.87 (Persian / Siamese / Egyptian / tiger); with a
rectangle init 0.01 / 0.00 / 0.03 / 0.87 (the close-ups become background); scikit-image's
Chan-Vese on grey 0.44 / 0.23 / 0.52 / 0.33 and SLIC superpixels far in colour from the border's
0.28 / 0.08 / 0.17 / 0.63. So GrabCut, and it misses the 0.8 target on the Siamese image, where it
also takes the grey gravel strip behind the cat (it touches the cat's colours).

A single GrabCut run depends on its random GMM init: over seeds 0-6 (3 iterations) the Persian
image gives 0.97 for 3 seeds and 0.30 for 4, the tiger 0.87-0.88 for 6 and 0.24 (the whole frame)
for 1; the mirrored tiger gives 0.24 with seed 0 and the mirrored Persian the blue background with
seed 1. So :func:`silhouette` runs ``restarts`` seeds (``seed``, ``seed + 1``, ...) and keeps the
run whose silhouette holds the image centre (ImageNet crops are object-centred) and whose contour
(the frame excluded) lies on the strongest edges (mean blurred-Sobel magnitude, as the ``edges``
mask); ties go to the lower seed. With 3 restarts this picks the best run on all 8 cases (the four
images and their mirror images; the same cases the rule was chosen on, so an in-sample check). A
silhouette that fills the frame has no outline (its enrichment is NaN: outline claims stay
undecided). The packaged hand masks replace the automatic silhouette on the study images, and a
user folder can replace it anywhere.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import DiffxaiError


def _cv2():
    try:
        import cv2
    except ImportError as exc:   # one line naming the package to install
        raise DiffxaiError("analysis.masks.silhouette.method grabcut needs OpenCV's cv2 "
                           f"(pip install opencv-python-headless, or opencv-python; one of them): {exc}") from None
    return cv2


def largest_component(fg: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask, holes filled (all False if empty)."""
    fg = np.asarray(fg, bool)
    comp, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum(fg, comp, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(comp == 1 + int(np.argmax(sizes)))


def grabcut_silhouette(rgb: np.ndarray, *, border: float = 0.10, iterations: int = 5,
                       seed: int = 0) -> np.ndarray:
    """Foreground of one (H, W, 3) uint8 RGB image as bool (H, W); see the module docstring."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DiffxaiError(f"silhouette needs one (H, W, 3) RGB image, got shape {rgb.shape}")
    if not 0 < border < 0.5:
        raise DiffxaiError(f"analysis.masks.silhouette.border must be in (0, 0.5), got {border}")
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    b = max(1, int(round(border * min(h, w))))
    mask = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = (cv2.GC_PR_BGD,) * 4
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(seed))
    bgr = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1])
    cv2.grabCut(bgr, mask, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
    return largest_component((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))


def contour_score(rgb: np.ndarray, fg: np.ndarray) -> tuple[bool, float]:
    """(holds the image centre, mean blurred-Sobel magnitude on the contour; 0 without one)."""
    from .pixels import edge_magnitude, grey

    fg = np.asarray(fg, bool)
    h, w = fg.shape
    contour = fg ^ ndimage.binary_erosion(fg, border_value=1)   # the frame is no contour
    strength = float(edge_magnitude(grey(rgb), 2.0)[contour].mean()) if contour.any() else 0.0
    return bool(fg[h // 2, w // 2]), strength


def silhouette(rgb: np.ndarray, settings: dict | None = None) -> np.ndarray:
    """The automatic silhouette with the ``analysis.masks.silhouette`` settings: the best of
    ``restarts`` GrabCut runs by :func:`contour_score` (see the module docstring)."""
    from ..config import schema_defaults

    s = {**schema_defaults("analysis")["masks"]["silhouette"], **(settings or {})}
    if s["method"] != "grabcut":
        raise DiffxaiError(f"analysis.masks.silhouette.method {s['method']!r} is not 'grabcut'")
    if int(s["restarts"]) < 1:
        raise DiffxaiError(f"analysis.masks.silhouette.restarts must be >= 1, got {s['restarts']}")
    best, best_score = None, None
    for k in range(int(s["restarts"])):
        fg = grabcut_silhouette(rgb, border=float(s["border"]), iterations=int(s["iterations"]),
                                seed=int(s["seed"]) + k)
        score = contour_score(rgb, fg)
        if best_score is None or score > best_score:
            best, best_score = fg, score
    return best


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (NaN when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else float("nan")
