"""https-only, sha256-pinned, atomic downloads of class images; the images of a class.

``download`` streams into a temporary file beside ``dest`` (store.atomic_path), hashes while streaming, and renames
into place only when the hash matches; nothing partial is ever left at ``dest`` or beside it.
Redirects are followed only to https URLs.  Proxies from the usual environment variables are
honoured (urllib's default), and certificate checks use ``ssl.create_default_context()`` unless
a ``context`` is given (tests pass one that trusts a local self-signed CA).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from diffxai import __version__
from diffxai.errors import DiffxaiError
from diffxai.images import find_image, list_images, render_png, sha256_file

__all__ = ["download", "fetch_class_image", "fetch_class_images", "select_order"]

OFFLINE_HINT = "offline? set image_dir to a folder of ImageNet-named images (--config image_dir=PATH)"
_CHUNK = 1 << 20
_MAX_BYTES = 512 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _require_https(url: str, what: str = "download") -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() != "https" or not parts.hostname:
        raise DiffxaiError(f"refusing to {what} {url!r}: only https:// URLs are allowed")


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        _require_https(newurl, what=f"follow a redirect from {req.full_url} to")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {_one_line(exc.reason)}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return _one_line(reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}")
    return _one_line(f"{type(exc).__name__}: {exc}")


def download(url: str, sha256: str, dest, *, timeout: float = 60, context: ssl.SSLContext | None = None,
             max_bytes: int = _MAX_BYTES) -> Path:
    """Download ``url`` to ``dest`` if and only if its sha256 equals ``sha256``; returns ``dest``."""
    _require_https(url)
    expected = str(sha256).strip().lower()
    if not _SHA256_RE.fullmatch(expected):
        raise DiffxaiError(f"refusing to download {url}: pinned sha256 {sha256!r} is not 64 hex digits")
    dest = Path(dest)
    from diffxai.store import atomic_path  # (store needs xarray; imported only when downloading)

    context = context if context is not None else ssl.create_default_context()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _HttpsOnlyRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": f"diffxai/{__version__}"})
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:  # renamed into place only if the block (and the hash check) succeeds
        try:
            out = open(tmp, "wb")
        except OSError as exc:
            raise DiffxaiError(f"cannot write download of {url} to {dest.parent}: {_one_line(exc)}") from None
        with out:
            try:
                with opener.open(request, timeout=timeout) as response:
                    total = 0
                    while chunk := response.read(_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise DiffxaiError(f"download of {url} exceeds {max_bytes} bytes; aborted")
                        digest.update(chunk)
                        out.write(chunk)
                    # read(amt) returns b"" when the server hangs up early instead of raising
                    # IncompleteRead; what Content-Length still promised tells the two apart.
                    missing = getattr(response, "length", None)
                    if missing:
                        raise DiffxaiError(f"download of {url} failed: connection closed after {total} "
                                           f"bytes with {missing} more announced; {OFFLINE_HINT}")
            except DiffxaiError:
                raise
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # URLError/HTTPError, ssl errors, timeouts, resets and IncompleteRead all land here.
                raise DiffxaiError(f"download of {url} failed: {_reason(exc)}; {OFFLINE_HINT}") from None
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected:
            raise DiffxaiError(f"sha256 mismatch for {url}: expected {expected}, got {actual}; download discarded")
        os.chmod(tmp, 0o644)
    return dest


def _cache_name(class_info) -> str:
    suffix = PurePosixPath(urlsplit(class_info.url).path).suffix
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix):
        suffix = ".img"
    return f"{class_info.synset}{suffix}"


def fetch_class_image(class_info, image_dir, cache_dir, *, timeout: float = 60,
                      context: ssl.SSLContext | None = None) -> tuple[Path, str]:
    """The source image for a class and a description of where it came from.

    With ``image_dir`` set, the local image found by :func:`find_image` (source: its path).
    Otherwise ``class_info.url`` is downloaded, sha256-pinned, into ``cache_dir`` as
    ``<synset><ext>`` (source: the URL); a cached file whose hash still matches is reused.
    """
    if image_dir not in (None, ""):
        path = find_image(image_dir, class_info.synset)
        return path, str(path)
    label = f"{class_info.name} ({class_info.synset})"
    if not class_info.url or not class_info.sha256:
        raise DiffxaiError(f"no pinned download URL for {label}; set image_dir to a folder of "
                           "ImageNet-named images (--config image_dir=PATH)")
    if cache_dir in (None, ""):
        raise DiffxaiError(f"no cache_dir to download {label} into and no image_dir set; "
                           "set image_dir to a folder of ImageNet-named images (--config image_dir=PATH)")
    dest = Path(cache_dir) / _cache_name(class_info)
    if dest.is_file() and sha256_file(dest) == class_info.sha256.lower():
        return dest, class_info.url
    download(class_info.url, class_info.sha256, dest, timeout=timeout, context=context)
    return dest, class_info.url


# --------------------------------------------------------------------------- many images per class
def select_order(candidates: list[Path], image_seed: int | None, class_index: int) -> list[Path]:
    """The order in which candidates are tried: as listed (sorted by file name) when
    ``image_seed`` is None, else a permutation drawn from ``default_rng([image_seed, class_index])``
    (a seeded sample that does not change when other classes are added)."""
    if image_seed is None:
        return list(candidates)
    import numpy as np

    perm = np.random.default_rng([int(image_seed), int(class_index)]).permutation(len(candidates))
    return [candidates[i] for i in perm]


def _relative(path: Path, root) -> str:
    try:
        return Path(path).relative_to(Path(root).expanduser()).as_posix()
    except ValueError:
        return Path(path).name


def _sources(class_info, image_dir, cache_dir, image_seed, timeout, context):
    """Candidate images of a class, in the order they are tried, as (path, source, name), and the
    order's description for the manifest."""
    if image_dir not in (None, ""):
        candidates = select_order(list_images(image_dir, class_info.synset), image_seed, class_info.index)
        sources = [(p, str(p), _relative(p, image_dir)) for p in candidates]
        order = ("sorted by file name" if image_seed is None
                 else f"seeded permutation, numpy default_rng([{int(image_seed)}, {class_info.index}])")
    else:
        path, url = fetch_class_image(class_info, None, cache_dir, timeout=timeout, context=context)
        sources = [(path, url, PurePosixPath(urlsplit(url).path).name or path.name)]
        order = "the pinned download (one image per class; set image_dir for more)"
    return sources, order


def fetch_class_images(class_info, out_dir, *, image_dir, cache_dir, n: int = 1,
                       image_seed: int | None = None, min_images: int | None = None,
                       skip_bad: bool = False, resize: int = 256, crop: int = 224,
                       timeout: float = 60, context: ssl.SSLContext | None = None) -> dict:
    """Write ``n`` images of a class to ``out_dir`` as ``000.png``, ``001.png``, ... plus
    ``manifest.json``; returns the manifest.

    Images are tried in :func:`select_order`; an exact duplicate (same sha256 as an image already
    taken) is not counted and is listed under ``duplicates`` with a warning; an unreadable image
    stops the class with one line naming it, or with ``skip_bad`` is listed under ``skipped`` and
    the next candidate is tried. Fewer than ``min_images`` (default ``n``) usable images: one
    DiffxaiError naming the class and the count found. The folder appears complete or not at all.
    """
    from diffxai.store import atomic_path

    label = f"class {class_info.slug} ({class_info.synset})"
    n = int(n)
    need = n if min_images is None else min(int(min_images), n)
    sources, order = _sources(class_info, image_dir, cache_dir, image_seed, timeout, context)
    images, skipped, duplicates, warnings = [], [], [], []
    pngs: list[bytes] = []
    seen: dict[str, int] = {}
    for path, source, name in sources:
        if len(images) == n:
            break
        try:
            digest = sha256_file(path)
        except OSError as exc:
            digest, reason = None, f"cannot read image {path}: {_one_line(exc.strerror or exc)}"
        if digest is not None and digest in seen:
            first = images[seen[digest]]
            duplicates.append({"file": name, "source": source, "sha256_source": digest,
                               "duplicate_of": first["image"], "duplicate_of_file": first["file"]})
            warnings.append(f"{name} is an exact duplicate (sha256) of image {first['image']} "
                            f"({first['file']}); counted once")
            continue
        try:
            if digest is None:
                raise DiffxaiError(reason)
            png, record = render_png(path, class_info, resize, crop, source=source)
        except DiffxaiError as exc:
            if not skip_bad:
                raise DiffxaiError(f"{label}: {exc} (skip_bad_images: true leaves it out)") from None
            skipped.append({"file": name, "source": source, "reason": str(exc)})
            warnings.append(f"{name} left out (skip_bad_images): {exc}")
            continue
        seen[digest] = len(images)
        images.append({"image": len(images), "file": name, "source": source,
                       "sha256_source": record["source_sha256"], "sha256_png": record["png_sha256"],
                       "original_size": record["original_size"], "warnings": record["warnings"]})
        pngs.append(png)
    found = len(images)
    if found < need or found == 0:
        extra = f", {len(skipped)} unreadable left out" if skipped else ""
        extra += f", {len(duplicates)} duplicate(s) counted once" if duplicates else ""
        raise DiffxaiError(
            f"{label}: found {found} usable image(s) ({len(sources)} candidate file(s){extra}), "
            f"images_per_class asks for {n}" + (f" and min_images_per_class for {need}" if need < n else "")
            + ("; set image_dir to a folder with more images of this class, or lower "
               "images_per_class / set min_images_per_class"))
    if found < n:
        warnings.append(f"only {found} of {n} images (min_images_per_class {need} allows it)")
    manifest = {
        "class": {"index": class_info.index, "synset": class_info.synset, "name": class_info.name,
                  "slug": class_info.slug, "category": class_info.category},
        "images_per_class": n, "min_images_per_class": need, "image_seed": image_seed,
        "order": order, "resize": int(resize), "crop": int(crop),
        "images": images, "skipped": skipped, "duplicates": duplicates, "warnings": warnings,
    }
    import json

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for i, png in enumerate(pngs):
            (tmp / image_name(i)).write_bytes(png)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def image_name(i: int) -> str:
    """File name of image ``i`` in a fetched class folder."""
    return f"{int(i):03d}.png"
