"""Compare two results/ folders of the default config: a refactor must change no number.

    python bench/compare_results.py OLD_RESULTS NEW_RESULTS

Every array of every noised, probs and attribution store must be bitwise equal (a new leading
``image`` dimension of size 1 is squeezed first, since the image axis adds it), and every column the
two onset tables share must hold the same text (the CSVs are written with %.4g). Prints one line
per file and exits 1 on any difference.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _arrays(store: Path) -> dict[str, np.ndarray]:
    import warnings

    import xarray as xr

    with warnings.catch_warnings():  # Snakemake's timestamp and the completion record are not Zarr nodes
        warnings.filterwarnings("ignore", message=".*(snakemake_timestamp|diffxai-complete).*")
        ds = xr.open_zarr(store, consolidated=False)
    if "image" in ds.dims and ds.sizes["image"] == 1:
        ds = ds.isel(image=0)
    return {name: np.asarray(ds[name].values) for name in ds.data_vars}


def compare_store(old: Path, new: Path) -> list[str]:
    a, b = _arrays(old), _arrays(new)
    problems = [f"{new}: variable {v} missing" for v in a if v not in b]
    for v in a.keys() & b.keys():
        if a[v].shape != b[v].shape:
            problems.append(f"{new}:{v} shape {a[v].shape} != {b[v].shape}")
        elif a[v].tobytes() != b[v].tobytes():
            diff = np.nanmax(np.abs(a[v].astype(float) - b[v].astype(float)))
            problems.append(f"{new}:{v} differs (max abs {diff:.3g})")
    return problems


def compare_csv(old: Path, new: Path) -> list[str]:
    a, b = pd.read_csv(old, dtype=str), pd.read_csv(new, dtype=str)
    shared = [c for c in a.columns if c in b.columns]
    missing = [c for c in a.columns if c not in b.columns]
    problems = [f"{new}: column {c} missing" for c in missing]
    if len(a) != len(b):
        return problems + [f"{new}: {len(a)} rows != {len(b)}"]
    for c in shared:
        if not a[c].fillna("").equals(b[c].fillna("")):
            problems.append(f"{new}:{c} differs: {list(a[c])} vs {list(b[c])}")
    return problems


def main(argv=None) -> int:
    old_root, new_root = map(Path, (argv or sys.argv[1:])[:2])
    problems, checked = [], 0
    for old in sorted(old_root.glob("**/*.zarr")):
        if old.parts[-3:-2] == ("analysis",) or "analysis" in old.relative_to(old_root).parts:
            continue
        new = new_root / old.relative_to(old_root)
        problems += [f"{new} missing"] if not new.exists() else compare_store(old, new)
        checked += 1
    for name in ("onset.csv", "onset_seeds.csv"):
        problems += compare_csv(old_root / name, new_root / name)
        checked += 1
    for p in problems:
        print(p)
    print(f"{checked} files compared, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
