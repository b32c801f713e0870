"""What the rules read through settings, as Snakemake should see it: by content, not by spelling.

* :func:`normalise_paths`: every path setting (:data:`PATH_SETTINGS`) becomes absolute and resolved
  (``~``, ``..`` and symlinks) before any rule's params see it, so another spelling of the same
  folder is the same value.
* :func:`image_sources`: what a class's fetch output depends on: the names (relative to
  ``image_dir``) and sha256 of the candidate images the fetch job reads, in its order (or the pinned
  download's sha256). The fetch rules carry it as a tracked param; the folder itself is passed as
  a *derived* param (a function of ``output``), which Snakemake leaves out of its params rerun
  trigger. The same images reached by another path or a symlink plan nothing; a changed image
  reruns its class and what follows.
* :func:`mask_sources`: the user mask PNGs (``analysis.masks.folder``) a class's analysis reads,
  by name and sha256: editing, adding or removing one reruns that class's analysis.

Params named ``tracked_*`` exist for Snakemake's rerun decisions only; ``diffxai.smk`` does not
pass them to the stage. Cost: only the files a job reads are hashed (``images_per_class`` per class,
twice that with ``skip_bad_images``), and only when their job is planned; hashes are kept in
``.snakemake/diffxai/sha256.json`` by resolved path, size and mtime, so a later plan only stats them.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
from pathlib import Path

from .errors import DiffxaiError

#: config keys (dotted) that name files or folders read by rules
PATH_SETTINGS = ("image_dir", "download_dir", "analysis.masks.folder")
TRACKED = "tracked_"


def _normal(value):
    if value is None or str(value) == "":
        return value
    return str(Path(str(value)).expanduser().resolve())


def normalise_paths(config: dict, keys=PATH_SETTINGS) -> dict:
    """Make every path setting in ``config`` absolute and resolved (in place; returns it)."""
    for dotted in keys:
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            node[last] = _normal(node[last])
    return config


CACHE = Path(".snakemake") / "diffxai" / "sha256.json"
_cache: dict | None = None
_cache_path: Path | None = None  # CACHE in the working directory of the first use
_cache_dirty = False


def _load_cache() -> dict:
    global _cache, _cache_path
    if _cache is None:
        _cache_path = CACHE.resolve()
        try:
            _cache = json.loads(_cache_path.read_text())
            assert isinstance(_cache, dict)
        except (OSError, ValueError, AssertionError):
            _cache = {}
        atexit.register(_save_cache)
    return _cache


def _save_cache() -> None:
    global _cache_dirty
    if not _cache_dirty:
        return
    try:
        _cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _cache_path.with_name(f".{_cache_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(_cache, separators=(",", ":")))
        os.replace(tmp, _cache_path)
        _cache_dirty = False
    except OSError:
        pass  # a cache only: the next plan hashes again


def file_sha256(path: Path) -> str:
    """sha256 of a file (cached by resolved path, size and mtime); an unreadable file gives a
    marker instead, so the job that reads it reports it."""
    global _cache_dirty
    from .images import sha256_file

    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        key = f"{real}\0{st.st_size}\0{st.st_mtime_ns}"
        cache = _load_cache()
        if key not in cache:
            cache[key] = sha256_file(real)
            _cache_dirty = True
        return cache[key]
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def image_sources(class_info, image_dir, images_per_class: int, image_seed=None,
                  skip_bad_images: bool = False) -> list:
    """See :func:`_image_sources` (computed once per planning process; a fresh copy)."""
    key = (class_info, None if image_dir in (None, "") else str(image_dir), int(images_per_class),
           image_seed, bool(skip_bad_images))
    return [list(pair) for pair in _image_sources(*key)]


@functools.lru_cache(maxsize=None)
def _image_sources(class_info, image_dir, images_per_class: int, image_seed=None,
                   skip_bad_images: bool = False) -> tuple:
    """``[[name, sha256], ...]``: the images the fetch job of ``class_info`` reads, in its order.

    With ``image_dir``: candidates in :func:`diffxai.fetch.select_order` until ``images_per_class``
    distinct contents (exact duplicates are skipped by the job, unread), and with
    ``skip_bad_images`` as many candidates again (those the job may take instead of unreadable
    ones). Without: the pinned download's URL and sha256. A folder that cannot be listed gives a
    marker; the fetch job then stops with the one-line reason."""
    if image_dir is None:
        return ((class_info.url, class_info.sha256),)
    from .fetch import select_order
    from .images import list_images

    try:
        candidates = select_order(list_images(image_dir, class_info.synset), image_seed, class_info.index)
    except DiffxaiError as exc:
        return (("unlisted", str(exc)),)
    root = Path(image_dir).expanduser()
    n = int(images_per_class)
    out, seen, extra = [], set(), 0
    for path in candidates:
        digest = file_sha256(path)
        out.append([_relative(path, root), digest])
        if len(seen) < n:
            seen.add(digest)
        elif skip_bad_images and digest not in seen:
            extra += 1
        if len(seen) == n and (not skip_bad_images or extra >= n):
            break
    return tuple(tuple(pair) for pair in out)


def mask_sources(masks_folder, class_info) -> list:
    """``[[name, sha256], ...]`` of the user mask PNGs the analysis of ``class_info`` reads (the
    folder :func:`diffxai.analysis.stage.user_mask_folder` picks: ``{folder}/{slug}``,
    ``{folder}/{synset}`` or ``{folder}``); ``[]`` without a masks folder."""
    if not masks_folder:
        return []
    folder = Path(masks_folder)
    for sub in (class_info.slug, class_info.synset):
        if (folder / sub).is_dir():
            folder = folder / sub
            break
    try:
        files = sorted(p for p in folder.glob("*.png") if p.is_file())
    except OSError as exc:
        return [["unlisted", str(exc)]]
    return [[p.name, file_sha256(p)] for p in files]


def untracked(kwargs: dict) -> dict:
    """``kwargs`` without the ``tracked_*`` entries (those are for Snakemake's rerun decisions)."""
    return {k: v for k, v in kwargs.items() if not k.startswith(TRACKED)}
