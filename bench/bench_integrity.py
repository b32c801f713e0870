"""Cost of the completion record on a 1600x3x224x224 float32 noise-like store (963 MB):
writing the store (zstd, as diffxai.store writes by default; and with zarr's crc32c codec added),
writing the record, the quick check every job makes, the full check of `verify`.

    python bench/bench_integrity.py /tmp/folder
"""
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

from diffxai.integrity import check_store, write_record

root = Path(sys.argv[1])
root.mkdir(parents=True, exist_ok=True)
x = np.random.default_rng(0).standard_normal((1600, 3, 224, 224), dtype=np.float32)
ds = xr.Dataset({"x": (("image", "channel", "y", "x"), x)})


def timed(label, fn):
    t = time.perf_counter()
    fn()
    print(f"{label}: {time.perf_counter() - t:.2f} s", flush=True)


enc = {"x": {"chunks": (1, 3, 224, 224)}}
timed("write store (zstd, 1600 chunks)", lambda: ds.to_zarr(root / "a.zarr", mode="w", zarr_format=3,
                                                             consolidated=False, encoding=enc))
timed("write record", lambda: write_record(root / "a.zarr"))
timed("quick check (list + sizes)", lambda: check_store(root / "a.zarr"))
timed("full check (CRC-32C of every file)", lambda: check_store(root / "a.zarr", full=True))
size = sum(p.stat().st_size for p in (root / "a.zarr").rglob("*") if p.is_file())
print(f"store size {size / 1e6:.0f} MB")
enc_crc = {"x": {"chunks": (1, 3, 224, 224), "serializer": BytesCodec(),
                 "compressors": (ZstdCodec(), Crc32cCodec())}}
timed("write store (zstd + crc32c codec)", lambda: ds.to_zarr(root / "b.zarr", mode="w", zarr_format=3,
                                                               consolidated=False, encoding=enc_crc))
timed("read all (zstd)", lambda: xr.open_zarr(root / "a.zarr", consolidated=False)["x"].values)
timed("read all (zstd + crc32c codec)", lambda: xr.open_zarr(root / "b.zarr", consolidated=False)["x"].values)
