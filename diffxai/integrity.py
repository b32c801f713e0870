"""Completion records: a finished Zarr store proves it is whole.

The last file written into a store (before it is renamed into place) is ``diffxai-complete.json``:
every other file of the store (its chunk and metadata keys) with its size in bytes and its CRC-32C
(Castagnoli; ``google_crc32c``, a dependency of zarr). Any codec is fine: the record covers the
bytes on disk, whatever produced them.

Two checks read it:

* :func:`check_store` ``(full=False)``: what every job does when it opens an input store. It lists
  the store's files and compares names and sizes with the record; a file modified after the record
  was written (mtime later than the record's) also has its CRC compared. A deleted, truncated or
  rewritten chunk, or a store without record (a writer killed before its end), is one line.
* :func:`check_store` ``(full=True)``: every file's CRC as well (``python -m diffxai.verify``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import google_crc32c

from .errors import DiffxaiError

RECORD = "diffxai-complete.json"
FORMAT = 1
#: files in a store that are not part of it (Snakemake marks directory outputs with this one)
IGNORED = frozenset({RECORD, ".snakemake_timestamp"})
_BLOCK = 8 << 20


class IncompleteStore(DiffxaiError):
    """A store without a valid completion record, or whose files differ from it."""

    def __init__(self, store: Path, problem: str):
        self.store, self.problem = Path(store), problem
        super().__init__(f"store {store} is incomplete or damaged: {problem}; remove it and rerun "
                         "to rebuild it (python -m diffxai.verify results lists every such store)")


def crc32c_file(path: Path) -> str:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            crc = google_crc32c.extend(crc, block)
    return f"{crc:08x}"


def _files(root: Path):
    """(relative posix key, stat) for every file in the store except the ignored ones."""
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            key = path.relative_to(root).as_posix()
            if key not in IGNORED:
                yield key, path.stat()


def write_record(root: str | os.PathLike) -> Path:
    """Write the completion record of the finished store at ``root`` (call it last)."""
    root = Path(root)
    files = {key: [st.st_size, crc32c_file(root / key)] for key, st in _files(root)}
    record = {"format": FORMAT, "checksum": "crc32c", "files": files}
    path = root / RECORD
    tmp = path.with_name(f".{RECORD}.tmp")
    with open(tmp, "w") as fh:
        json.dump(record, fh, separators=(",", ":"), sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _read_record(root: Path) -> tuple[dict, int]:
    path = root / RECORD
    try:
        mtime = path.stat().st_mtime_ns
        record = json.loads(path.read_text())
        files = record["files"]
        if record.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except FileNotFoundError:
        raise IncompleteStore(root, f"no completion record {RECORD} (its writer stopped before the end, "
                                    "or an older diffxai wrote it)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IncompleteStore(root, f"unreadable completion record {RECORD} ({type(exc).__name__})") from None
    return files, mtime


def check_store(root: str | os.PathLike, full: bool = False) -> None:
    """Raise :class:`IncompleteStore` (one line naming the store and the file) unless the store at
    ``root`` matches its completion record: same files, same sizes, and the same CRC for every
    file (``full``) or for the files modified after the record was written."""
    root = Path(root)
    if not root.is_dir():
        raise IncompleteStore(root, "it does not exist or is not a folder")
    files, record_mtime = _read_record(root)
    present = dict(_files(root))
    for key, (size, crc) in files.items():
        st = present.get(key)
        if st is None:
            raise IncompleteStore(root, f"chunk {key} is missing")
        if st.st_size != size:
            raise IncompleteStore(root, f"chunk {key} has {st.st_size} bytes, the record says {size}")
        if (full or st.st_mtime_ns > record_mtime) and crc32c_file(root / key) != crc:
            raise IncompleteStore(root, f"chunk {key} is damaged (CRC-32C differs from the record)")
    extra = sorted(set(present) - set(files))
    if extra:
        raise IncompleteStore(root, f"{extra[0]} is not in the completion record"
                                    + (f" ({len(extra) - 1} more)" if len(extra) > 1 else ""))
