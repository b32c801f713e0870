"""Check every Zarr store under a results folder against its completion record (every file's
size and CRC-32C) and say which outputs to remove so that the next run rebuilds them.

    python -m diffxai.verify [results] [--quick]      (make verify)

Exit status 0 when every store is whole, 1 otherwise. ``--quick``: names and sizes only (and the
CRC of files changed after the record), the check every job makes on the stores it opens.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .integrity import IncompleteStore, check_store
from .store import TMP_MARK


def find_stores(root: Path) -> tuple[list[Path], list[Path]]:
    """(stores, leftover temporaries of killed writers) under ``root``, sorted; stores are not
    descended into."""
    stores, temporaries = [], []
    for folder, dirs, _ in os.walk(root):
        keep = []
        for d in sorted(dirs):
            path = Path(folder) / d
            if d.startswith(".") and TMP_MARK in d:
                temporaries.append(path)
            elif d.endswith(".zarr"):
                stores.append(path)
            else:
                keep.append(d)
        dirs[:] = keep
    return stores, temporaries


def verify(root: str | os.PathLike, full: bool = True) -> tuple[list[IncompleteStore], int, list[Path]]:
    """(problems, number of stores checked, leftover temporaries)."""
    stores, temporaries = find_stores(Path(root))
    problems = []
    for store in stores:
        try:
            check_store(store, full=full)
        except IncompleteStore as exc:
            problems.append(exc)
    return problems, len(stores), temporaries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="results")
    ap.add_argument("--quick", action="store_true", help="sizes only (and files changed after the record)")
    a = ap.parse_args(argv)
    root = Path(a.results)
    if not root.is_dir():
        print(f"diffxai verify: {root} is not a folder", file=sys.stderr)
        return 2
    problems, n, temporaries = verify(root, full=not a.quick)
    for exc in problems:
        print(f"damaged: {exc.store}: {exc.problem}")
    if temporaries:
        print(f"{len(temporaries)} temporary store(s) of killed writers (the next write removes them): "
              + " ".join(shlex.quote(str(t)) for t in temporaries))
    if not problems:
        print(f"diffxai verify: {n} store(s) under {root}, all whole")
        return 0
    paths = " ".join(shlex.quote(str(e.store)) for e in problems)
    print(f"diffxai verify: {len(problems)} of {n} store(s) damaged or incomplete. Remove them and rerun; "
          f"the run rebuilds exactly these (and reruns the jobs that read them):\n  rm -rf {paths}\n  make run")
    return 1


if __name__ == "__main__":
    sys.exit(main())
