"""https-only, sha256-pinned, atomic downloads of class images.

``download`` streams into a temporary file beside ``dest``, hashes while streaming, and renames
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
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from diffxai import __version__
from diffxai.errors import DiffxaiError
from diffxai.images import find_image, sha256_file

__all__ = ["download", "fetch_class_image"]

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
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise DiffxaiError(f"cannot write download of {url} to {dest.parent}: {_one_line(exc)}") from None
    tmp = Path(tmp_name)
    context = context if context is not None else ssl.create_default_context()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _HttpsOnlyRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": f"diffxai/{__version__}"})
    digest = hashlib.sha256()
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
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
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)
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
