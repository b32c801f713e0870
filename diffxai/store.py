"""Atomic Zarr stores.

A store is written under a hidden temporary name beside its final path and renamed into place
only when complete, so a killed job never leaves something that looks finished. Snakemake's
own incomplete-output tracking is the second line of defence (``--rerun-incomplete``).
The last file written into a store is its completion record (:mod:`diffxai.integrity`);
:func:`open_store` refuses a store that does not match its record, with one line naming the chunk.
A full disk (or quota) while writing is one line naming the store; the temporary is removed.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .errors import DiffxaiError
from .integrity import RECORD, check_store, write_record

TMP_MARK = ".tmp-"


def _tmp_sibling(final: Path) -> Path:
    return final.parent / f".{final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean_stale_temporaries(final: Path) -> None:
    """Remove temporaries that a killed writer of ``final`` left behind."""
    final = Path(final)
    if final.parent.is_dir():
        for p in final.parent.glob(f".{final.name}{TMP_MARK}*"):
            _remove(p)


def ensure_writable_dir(folder: Path) -> None:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffxaiError(f"cannot create output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DiffxaiError(f"output folder {folder} is not writable")


def _commit(tmp: Path, final: Path) -> None:
    if final.exists() or final.is_symlink():
        _remove(final)
    os.replace(tmp, final)


def _begin(final: Path) -> Path:
    ensure_writable_dir(final.parent)
    clean_stale_temporaries(final)
    return _tmp_sibling(final)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _abandon(tmp: Path, exc: BaseException, final: Path) -> None:
    """Remove the unfinished ``tmp`` of ``final``; a full disk becomes one line (raised here), any
    other error is the caller's to re-raise."""
    _remove(tmp)
    full = _no_space(exc, final)
    if full is not None:
        raise full from None


def _no_space(exc: BaseException, final: Path) -> DiffxaiError | None:
    """A one-line error for a full disk or quota while writing ``final`` (zarr may wrap the OSError)."""
    for _ in range(16):  # the chain of causes, bounded
        if exc is None:
            break
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return DiffxaiError(f"no space left writing {final} ({os.strerror(exc.errno)}); "
                                f"nothing was kept; free space in {final.parent} and rerun")
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds."""
    final = Path(final)
    tmp = _begin(final)
    try:
        yield tmp
    except BaseException as exc:
        _abandon(tmp, exc, final)
        raise
    _commit(tmp, final)


@contextlib.contextmanager
def _quiet_string_dtype():
    """Zarr warns that fixed-length UTF-32 (the image_file/image_sha256 coords) has no v3 spec yet;
    zarr-python reads it back as it wrote it (other Zarr libraries may not)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        yield


def write_dataset(ds: xr.Dataset, final: str | os.PathLike, encoding: dict | None = None) -> Path:
    """Write a whole Dataset as a Zarr v3 store, atomically."""
    with atomic_path(final) as tmp, _quiet_string_dtype():
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding or {})
        write_record(tmp)  # last: a store without it was never finished
    return Path(final)


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a finished store, after checking it against its completion record (names and sizes of
    its files; the CRC of any file changed since): one line naming the store and chunk otherwise."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise DiffxaiError(f"{path} is not a complete Zarr store (no zarr.json)")
    check_store(path)
    with warnings.catch_warnings():
        # Snakemake drops .snakemake_timestamp into directory outputs; zarr warns about it (and
        # about the completion record, which is not a Zarr node)
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        warnings.filterwarnings("ignore", message=f".*{RECORD}.*")
        ds = xr.open_zarr(path, consolidated=False)
    return ds


def json_attr(value) -> str:
    """Attributes that are nested structures are stored as JSON strings (portable, no pickle)."""
    return json.dumps(value, sort_keys=True)


class StreamingStore:
    """Create a store whose big variable is filled region by region (results stream in).

    ``skeleton`` holds the coordinates and attrs (and any small variables); ``name`` is created
    with ``shape``/``chunks``/``dims``, filled with NaN until written. Use as a context manager: on
    success the store is renamed into place; on error the temporary is removed. ``compressors``:
    "auto" (Zarr's default, zstd) or None (raw chunks: for incompressible data such as noise).
    """

    def __init__(self, final, skeleton: xr.Dataset, name: str, dims, shape, chunks, dtype="float32",
                 compressors="auto"):
        self.final = Path(final)
        self.compressors = compressors
        self.skeleton, self.name = skeleton, name
        self.dims, self.shape, self.chunks, self.dtype = list(dims), tuple(shape), tuple(chunks), dtype
        self._ctx = None
        self.array = None
        self.group = None

    def __enter__(self):
        self.tmp = _begin(self.final)
        try:
            with _quiet_string_dtype():
                self.skeleton.to_zarr(self.tmp, mode="w", zarr_format=3, consolidated=False)
            self.group = zarr.open_group(self.tmp, mode="r+")
            self.array = self.group.create_array(
                self.name, shape=self.shape, chunks=self.chunks, dtype=self.dtype,
                fill_value=np.nan, dimension_names=self.dims, compressors=self.compressors)
        except BaseException as exc:
            _abandon(self.tmp, exc, self.final)
            raise
        self.written = np.zeros(self.shape[:-2], dtype=bool)
        return self

    def write(self, index: tuple, values) -> None:
        """Write ``values`` at ``index`` (a tuple of ints/slices over the leading dims)."""
        values = np.asarray(values, dtype=self.dtype)
        if not np.isfinite(values).all():
            raise DiffxaiError(
                f"{self.name} for {self.final.name} at {index} contains NaN or Inf; refusing to write it")
        self.array[index] = values
        self.written[index] = True

    def set_attrs(self, **attrs) -> None:
        self.group.attrs.update(attrs)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            _abandon(self.tmp, exc, self.final)
            return False
        if not self.written.all():
            _remove(self.tmp)
            raise DiffxaiError(f"{self.final}: {int((~self.written).sum())} entries were never written")
        try:
            write_record(self.tmp)  # last: a store without it was never finished
        except BaseException as exc:
            _abandon(self.tmp, exc, self.final)
            raise
        _commit(self.tmp, self.final)
        return False


class RowChunkWriter:
    """Collect per-step maps arriving in any order and write whole step-chunks to a StreamingStore.

    Maps are numbered flat over (row..., step) in C order, where ``rows`` is the shape of the
    leading dims (e.g. (image, seed)); a chunk of ``chunk`` consecutive steps of one row is written
    as soon as all its maps are there, so memory holds at most one partial chunk per row.
    """

    def __init__(self, store: StreamingStore, rows: tuple[int, ...], n_steps: int, chunk: int):
        self.store, self.rows, self.K, self.chunk = store, tuple(int(r) for r in rows), int(n_steps), int(chunk)
        self.buf: dict[tuple, dict[int, np.ndarray]] = {}

    def add(self, flat_index: int, amap: np.ndarray) -> None:
        r, k = divmod(int(flat_index), self.K)
        row = tuple(int(i) for i in np.unravel_index(r, self.rows))
        block = k // self.chunk
        pending = self.buf.setdefault((row, block), {})
        pending[k] = amap
        k0, k1 = block * self.chunk, min(self.K, (block + 1) * self.chunk)
        if len(pending) == k1 - k0:
            self.store.write(row + (slice(k0, k1),), np.stack([pending[i] for i in range(k0, k1)]))
            del self.buf[(row, block)]


def image_coords(manifest_images: list[dict], index=None) -> dict:
    """The ``image`` coordinate and the coords that name each image (file, sha256 of the PNG)."""
    rows = [manifest_images[i] for i in (range(len(manifest_images)) if index is None else index)]
    return {"image": ("image", np.asarray([r["image"] for r in rows], dtype=np.int64)),
            "image_file": ("image", np.asarray([str(r["file"]) for r in rows], dtype=str)),
            "image_sha256": ("image", np.asarray([str(r["sha256_png"]) for r in rows], dtype=str))}
