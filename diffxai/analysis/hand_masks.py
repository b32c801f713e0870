"""Hand-drawn masks shipped with the package, used only for exactly the images they were drawn on.

``diffxai/data/masks/<synset>/{silhouette,face[,stripes]}.png`` (224 x 224, non-zero = inside) were
drawn on the four study images as the pipeline sees them (Resize 256 + CenterCrop 224);
``diffxai/data/masks/index.json`` records, per entry, the sha256 of the source file and of the
crop's pixels (the (224, 224, 3) uint8 array's bytes, C order). A clean image gets an entry's masks
when the sha256 of its pixels is that entry's ``pixels_sha256`` (the pixels, not the PNG file,
so a re-encoded PNG still matches and any other image, however similar, never does), or when the
caller passes the image's source sha256 and it is the entry's ``source_sha256``.
``bench/masks/make_masks.py`` (the polygons) writes them; ``README.md`` beside the PNGs says how.
"""
from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from . import segmentation as SEG


def data_dir() -> Path:
    """The packaged folder of hand masks."""
    return Path(str(resources.files("diffxai") / "data" / "masks"))


@functools.lru_cache(maxsize=None)
def index() -> tuple[dict, ...]:
    """Entries of ``index.json`` (synset, file, source_sha256, pixels_sha256, masks); () if absent."""
    p = data_dir() / "index.json"
    return tuple(json.loads(p.read_text())) if p.is_file() else ()


def pixels_sha256(rgb: np.ndarray) -> str:
    """sha256 of one clean image's pixels: the (H, W, 3) uint8 array's bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(rgb, np.uint8)).tobytes()).hexdigest()


def find_entry(rgb: np.ndarray, source_sha256: str | None = None) -> dict | None:
    """The index entry drawn on this image (by pixel sha256, else by source sha256), or None."""
    digest = pixels_sha256(rgb)
    for e in index():
        if e["pixels_sha256"] == digest or (source_sha256 and e["source_sha256"] == str(source_sha256).lower()):
            return e
    return None


def hand_masks(rgb: np.ndarray, source_sha256: str | None = None) -> dict[str, np.ndarray]:
    """``{name: bool (H, W)}`` hand masks of one clean (H, W, 3) image; {} when none was drawn on it."""
    from .pixels import read_mask

    e = find_entry(rgb, source_sha256)
    if e is None:
        return {}
    shape = np.shape(rgb)[:2]
    return {name: read_mask(data_dir() / e["synset"] / f"{name}.png", shape) for name in e["masks"]}


def class_hand_masks(clean_rgb: np.ndarray, sources: Sequence[str | None] | None = None
                     ) -> list[dict[str, np.ndarray]]:
    """Per image of a class (N, H, W, 3): its hand masks ({} for an image nobody drew on)."""
    rgb = np.asarray(clean_rgb)
    rgb = rgb[None] if rgb.ndim == 3 else rgb
    srcs = list(sources) if sources is not None else [None] * len(rgb)
    return [hand_masks(img, src) for img, src in zip(rgb, srcs)]


def silhouette_agreement(images: Mapping[str, np.ndarray], settings: Mapping | None = None) -> dict[str, float]:
    """IoU of the automatic silhouette (``analysis.masks.silhouette`` settings) with the hand one, per
    image: ``{label: IoU}`` for each labelled clean image that has a hand silhouette (others left out)."""
    out = {}
    for label, rgb in images.items():
        hand = hand_masks(rgb).get("silhouette")
        if hand is not None:
            out[label] = SEG.iou(SEG.silhouette(rgb, dict(settings or {})), hand)
    return out
