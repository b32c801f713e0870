"""Find a class image in a local folder, load any image robustly as 8-bit RGB, Resize+CenterCrop.

Decisions (kept here so the JSON warnings and the pixels can be explained):

* Colour: modes are converted with Pillow's own ``convert("RGB")`` (CMYK, YCbCr, L, 1, P), which
  is what torchvision's ``ImageFolder`` loader did when the ImageNet classifiers were trained.
  Embedded ICC profiles are ignored, for the same reason.
* 16-bit grayscale (``I;16*``, and ``I`` holding 0-65535) is rescaled ``round(v * 255 / 65535)``
  (Pillow's ``convert`` would clip everything above 255 to white).  16-bit RGB(A) PNGs are reduced
  to 8 bits by Pillow's decoder itself (high byte), which is at most one level from rounding.
* Transparency (RGBA, LA, PA, RGBa, La, a palette or grayscale with ``transparency``) is
  composited over **white**, the background a viewer shows the image on.  Dropping alpha instead
  would expose whatever colour the encoder stored under transparent pixels (often black, often
  garbage).  A fully opaque alpha channel gives exactly the RGB values, and no warning.
* EXIF orientation is applied (``ImageOps.exif_transpose``), with a warning.
* A decompression bomb never reaches memory: an image over :data:`MAX_PIXELS` pixels (Pillow's
  own bomb-warning size, about 9459 x 9459) is refused from its header, before decoding, with one
  line naming the file, whatever ``Image.MAX_IMAGE_PIXELS`` is set to.
* A broken file never loads as a partly gray image: the decode is forced with ``load()`` while
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False, and every failure is a one-line DiffxaiError
  naming the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings as _warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from diffxai.errors import DiffxaiError

__all__ = ["IMAGE_SUFFIXES", "find_image", "list_images", "load_rgb", "preprocess", "prepare_image",
           "render_png", "sha256_file"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: the largest image decoded (width x height): Pillow's DecompressionBombWarning size
MAX_PIXELS = 89_478_485
_HOW_TO_SET = "set image_dir to a folder of ImageNet-named images (--config image_dir=PATH)"
_TRUNCATED_LOCK = threading.Lock()
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_MODE_NAMES = {"L": "grayscale (L)", "1": "1-bit (1)", "P": "palette (P)", "LA": "grayscale+alpha (LA)",
               "PA": "palette+alpha (PA)", "CMYK": "CMYK", "YCbCr": "YCbCr"}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- find
def _is_image_file(path: Path) -> bool:
    # hidden files (macOS "._x.jpg" resource forks, editors' temporaries) are never images
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _names_synset(name: str, synset: str) -> bool:
    """``n01440764_tench.jpg``, ``n01440764.JPEG`` yes; ``n014407640.jpg`` no."""
    if not name.startswith(synset):
        return False
    rest = name[len(synset):]
    return rest.startswith(".") or not rest[:1].isalnum()


def _check_image_dir(image_dir, synset: str) -> Path:
    if image_dir is None or str(image_dir) == "":
        raise DiffxaiError(f"no image_dir given to look for {synset}; {_HOW_TO_SET}")
    folder = Path(image_dir).expanduser()
    if not folder.exists():
        raise DiffxaiError(f"image_dir {folder} does not exist; {_HOW_TO_SET}")
    if not folder.is_dir():
        raise DiffxaiError(f"image_dir {folder} is not a folder; {_HOW_TO_SET}")
    return folder


def list_images(image_dir, synset: str) -> list[Path]:
    """Every candidate image of ``synset`` in ``image_dir``, in the documented order.

    Candidates: ``<synset>_*`` / ``<synset>.*`` files directly in the folder (flat layout) and
    every file in a ``<synset>/`` subfolder (ImageNet train/val tree), with a ``.jpg``, ``.jpeg``
    or ``.png`` extension in any case; hidden (dot) files are left out. Order: sorted by file name
    (Python string order, i.e. by code point: ``B.JPEG`` before ``a.jpg``), a flat file before a
    subfolder file of the same name. Only names are listed here; nothing is opened or hashed (that
    happens in the fetch job).
    """
    folder = _check_image_dir(image_dir, synset)
    try:
        flat = [p for p in folder.iterdir() if _names_synset(p.name, synset) and _is_image_file(p)]
        sub = folder / synset
        nested = [p for p in sub.iterdir() if _is_image_file(p)] if sub.is_dir() else []
    except OSError as exc:
        raise DiffxaiError(f"cannot list image_dir {folder}: {_one_line(exc)}") from None
    return [p for _, _, p in sorted([(p.name, 0, p) for p in flat] + [(p.name, 1, p) for p in nested])]


def find_image(image_dir, synset: str) -> Path:
    """The first image for ``synset`` in ``image_dir`` in the order of :func:`list_images`."""
    found = list_images(image_dir, synset)
    if not found:
        folder = Path(image_dir).expanduser()
        raise DiffxaiError(f"no image for {synset} in {folder} (looked for {synset}*.jpg/.jpeg/.png and "
                           f"{synset}/*); {_HOW_TO_SET}")
    return found[0]


# --------------------------------------------------------------------------- load
def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255  # alpha 255 → rgb exactly
    return out.astype(np.uint8)


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb(im: Image.Image, name: str, warn: list[str]) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            warn.append(f"32-bit integer image with values {values.min()}..{values.max()} "
                        "clipped to 0..65535 before scaling to 8 bits")
        gray = _sixteen_to_eight(values)
        if "transparency" in im.info:
            warn.append("transparency of a 16-bit grayscale image ignored")
        warn.append(f"16-bit grayscale ({mode}) scaled to 8 bits and replicated to RGB")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise DiffxaiError(f"cannot use {name}: 32-bit float images (mode F) have no defined "
                           "0-255 range; save it as 8- or 16-bit")

    if mode in _ALPHA_MODES or "transparency" in im.info:
        try:
            rgba = np.asarray(im.convert("RGBA"))
        except (ValueError, OSError) as exc:
            raise DiffxaiError(f"cannot convert {name} (mode {mode}) to RGB: {_one_line(exc)}") from None
        if (rgba[..., 3] < 255).any():
            warn.append(f"{_MODE_NAMES.get(mode, mode)} image has transparent pixels; composited over white")
        elif mode not in ("RGBA", "RGBa"):
            warn.append(f"{_MODE_NAMES.get(mode, mode)} image converted to RGB")
        return _composite_over_white(rgba)

    if mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise DiffxaiError(f"cannot convert {name} (mode {mode}) to RGB: {_one_line(exc)}") from None
        extra = " without colour management, as torchvision's ImageNet loader does" if mode == "CMYK" else ""
        warn.append(f"{_MODE_NAMES.get(mode, mode)} image converted to RGB{extra}")
    return np.asarray(im, dtype=np.uint8).copy()


def _check_size(im: Image.Image, name: str) -> None:
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise DiffxaiError(f"cannot read image {name}: {w}x{h} pixels is more than the {MAX_PIXELS} "
                           "decoded at most (a decompression bomb, or a far larger image than a classifier needs)")


def load_rgb(path) -> tuple[np.ndarray, list[str]]:
    """Load an image file as uint8 (H, W, 3) RGB plus warnings; any broken input → DiffxaiError."""
    path = Path(path)
    name = str(path)
    if path.is_dir():
        raise DiffxaiError(f"cannot read image {name}: it is a folder, not a file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DiffxaiError(f"cannot read image {name}: {_one_line(exc.strerror or exc)}") from None
    if size == 0:
        raise DiffxaiError(f"cannot read image {name}: the file is empty")

    warn: list[str] = []
    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            with Image.open(path) as im:
                _check_size(im, name)
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    warn.append(f"has {frames} frames; using the first")
                # Full decode with truncation detection on: a cut-off JPEG must fail here
                # rather than come back partly gray.  The flag is process-global, so it is
                # forced (and restored) under a lock in case other code set it.
                with _TRUNCATED_LOCK:
                    previous = ImageFile.LOAD_TRUNCATED_IMAGES
                    ImageFile.LOAD_TRUNCATED_IMAGES = False
                    try:
                        im.load()
                    finally:
                        ImageFile.LOAD_TRUNCATED_IMAGES = previous
                orientation = im.getexif().get(0x0112, 1)
                oriented = ImageOps.exif_transpose(im)
                if orientation not in (1, None):
                    warn.append(f"EXIF orientation {orientation} applied")
                rgb = _to_rgb(oriented, name, warn)
        warn.extend(_one_line(w.message) for w in caught)  # Pillow's own remarks on this file
    except DiffxaiError:
        raise
    except UnidentifiedImageError:
        raise DiffxaiError(f"cannot read image {name}: not a recognised image file "
                           f"(.jpg/.jpeg/.png expected, {size} bytes)") from None
    except Image.DecompressionBombError as exc:  # (Pillow's own check, at twice MAX_PIXELS)
        raise DiffxaiError(f"cannot read image {name}: {_one_line(exc)}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise DiffxaiError(f"cannot read image {name}: {type(exc).__name__}: {_one_line(exc)}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise DiffxaiError(f"cannot read image {name}: decoded to an unusable array {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(rgb), warn


# --------------------------------------------------------------------------- preprocess
def preprocess(rgb: np.ndarray, resize: int = 256, crop: int = 224) -> tuple[np.ndarray, list[str]]:
    """torchvision ``Resize(resize)`` (short side, PIL bicubic) then ``CenterCrop(crop)``."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise DiffxaiError(f"preprocess needs a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    for key, value in (("resize", resize), ("crop", crop)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DiffxaiError(f"{key} must be a positive integer, got {value!r}")
    if resize < crop:
        raise DiffxaiError(f"resize ({resize}) must be at least crop ({crop})")
    warn: list[str] = []
    h, w = rgb.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    if short < crop:
        warn.append(f"image is only {w}x{h} (short side {short} < crop {crop}); "
                    f"upscaled x{resize / short:.2f} to short side {resize}")
    # torchvision _compute_resized_output_size: long side truncated, not rounded.
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    im = Image.fromarray(rgb, "RGB")
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    out = np.asarray(im, dtype=np.uint8)[top:top + crop, left:left + crop]
    return np.ascontiguousarray(out), warn


# --------------------------------------------------------------------------- prepare
def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_bytes(dest: Path, data: bytes) -> None:
    from .store import atomic_path  # (store needs xarray; this module is also used without it)

    with atomic_path(dest) as tmp:
        Path(tmp).write_bytes(data)


def render_png(src_path, class_info, resize: int = 256, crop: int = 224,
               source: str | None = None) -> tuple[bytes, dict]:
    """Load ``src_path`` and Resize+CenterCrop it: (PNG bytes, provenance record)."""
    src_path = Path(src_path)
    rgb, load_warnings = load_rgb(src_path)
    crop_rgb, prep_warnings = preprocess(rgb, resize=resize, crop=crop)
    buf = io.BytesIO()
    Image.fromarray(crop_rgb, "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    png = buf.getvalue()
    record = {
        "source": source if source is not None else str(src_path),
        "source_sha256": sha256_file(src_path),
        "png_sha256": hashlib.sha256(png).hexdigest(),
        "class_index": class_info.index,
        "synset": class_info.synset,
        "class_name": class_info.name,
        "slug": class_info.slug,
        "category": class_info.category,
        "original_size": [int(rgb.shape[1]), int(rgb.shape[0])],  # width, height after EXIF orientation
        "resize": int(resize),
        "crop": int(crop),
        "warnings": load_warnings + prep_warnings,
    }
    return png, record


def prepare_image(src_path, out_png, out_json, class_info, resize: int = 256, crop: int = 224,
                  source: str | None = None) -> list[str]:
    """Load ``src_path``, Resize+CenterCrop, write the PNG and its JSON sidecar atomically.

    ``source`` (e.g. the download URL) is recorded instead of the local path when given.
    Returns the warnings (also in the JSON, key ``warnings``) for the caller to log.  The PNG is
    written before the JSON, so a JSON implies its PNG.
    """
    png, record = render_png(src_path, class_info, resize, crop, source)
    _atomic_write_bytes(Path(out_png), png)
    _atomic_write_bytes(Path(out_json), (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return list(record["warnings"])
