"""Atomic stores: nothing half-written ever sits at the final path."""
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import xarray as xr

from diffxai.errors import DiffxaiError
from diffxai.store import StreamingStore, atomic_path, open_store, write_dataset


def _skeleton(S=2, K=3):
    return xr.Dataset(coords={"seed": np.arange(S), "step": np.arange(K)}, attrs={"seeds": list(range(S))})


def test_write_dataset_roundtrip(tmp_path):
    ds = _skeleton().assign(p=(("seed", "step"), np.ones((2, 3), np.float32)))
    write_dataset(ds, tmp_path / "a.zarr")
    back = open_store(tmp_path / "a.zarr")
    np.testing.assert_array_equal(back["p"].values, 1)
    assert back.attrs["seeds"] == [0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["a.zarr"]


def test_streaming_store_complete(tmp_path):
    final = tmp_path / "s.zarr"
    with StreamingStore(final, _skeleton(), "a", ("seed", "step", "y", "x"), (2, 3, 4, 4), (1, 3, 4, 4)) as st:
        assert not final.exists(), "the final path appears only once complete"
        for s in range(2):
            st.write((s, slice(0, 3)), np.full((3, 4, 4), s, np.float32))
        st.set_attrs(method="m")
    ds = open_store(final)
    assert ds["a"].dims == ("seed", "step", "y", "x")
    assert ds["a"].values[1].min() == 1 and ds.attrs["method"] == "m"


def test_streaming_store_incomplete_or_failing_leaves_nothing(tmp_path):
    final = tmp_path / "s.zarr"
    with pytest.raises(DiffxaiError, match="never written"):
        with StreamingStore(final, _skeleton(), "a", ("seed", "step", "y", "x"), (2, 3, 4, 4), (1, 3, 4, 4)) as st:
            st.write((0, slice(0, 3)), np.zeros((3, 4, 4), np.float32))
    with pytest.raises(RuntimeError):
        with StreamingStore(final, _skeleton(), "a", ("seed", "step", "y", "x"), (2, 3, 4, 4), (1, 3, 4, 4)):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_never_written(tmp_path, bad):
    final = tmp_path / "s.zarr"
    vals = np.zeros((3, 4, 4), np.float32)
    vals[1, 2, 3] = bad
    with pytest.raises(DiffxaiError, match="NaN or Inf"):
        with StreamingStore(final, _skeleton(), "a", ("seed", "step", "y", "x"), (2, 3, 4, 4), (1, 3, 4, 4)) as st:
            st.write((0, slice(0, 3)), vals)
    assert not final.exists()


def test_kill_9_mid_write_leaves_no_final_store_and_rerun_cleans_up(tmp_path):
    final = tmp_path / "s.zarr"
    code = textwrap.dedent(f"""
        import os, time, numpy as np, xarray as xr
        from diffxai.store import StreamingStore
        sk = xr.Dataset(coords={{"seed": [0], "step": [0, 1]}})
        with StreamingStore({str(final)!r}, sk, "a", ("seed", "step", "y", "x"), (1, 2, 4, 4), (1, 1, 4, 4)) as st:
            st.write((0, slice(0, 1)), np.zeros((1, 4, 4), np.float32))
            print("half", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".s.zarr.tmp-")
    with atomic_path(final) as tmp:
        os.makedirs(tmp)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"], "a rerun removes stale temporaries"


def test_open_store_refuses_incomplete(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(DiffxaiError, match="x.zarr"):
        open_store(tmp_path / "x.zarr")


def test_unwritable_results_folder(tmp_path):
    # root can write through chmod 500, so block the folder in ways that stop root too
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(DiffxaiError, match="results") as e:
        write_dataset(_skeleton(), blocker / "noised" / "a.zarr")
    assert "\n" not in str(e.value)
    with pytest.raises(DiffxaiError, match="/proc"):
        write_dataset(_skeleton(), "/proc/diffxai-results/a.zarr")


def test_unwritable_results_folder_by_permissions(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("root ignores permission bits; covered by test_unwritable_results_folder")
        with pytest.raises(DiffxaiError, match="not writable"):
            write_dataset(_skeleton(), ro / "a.zarr")
    finally:
        ro.chmod(0o700)


def test_row_chunk_writer_over_image_and_seed_rows(tmp_path):
    """Maps numbered flat over (image, seed, step) land at their (image, seed, step), in any order."""
    from diffxai.store import RowChunkWriter

    I, S, K, H = 2, 3, 5, 2
    sk = xr.Dataset(coords={"image": np.arange(I), "seed": np.arange(S), "step": np.arange(K)})
    order = np.random.default_rng(0).permutation(I * S * K)
    with StreamingStore(tmp_path / "a.zarr", sk, "a", ("image", "seed", "step", "y", "x"), (I, S, K, H, H),
                        (1, 1, 2, H, H)) as st:
        w = RowChunkWriter(st, (I, S), K, 2)
        for n in order:
            w.add(int(n), np.full((H, H), n, np.float32))
        assert not w.buf, "every chunk was written as soon as it was complete"
    a = open_store(tmp_path / "a.zarr")["a"].values
    np.testing.assert_array_equal(a[..., 0, 0], np.arange(I * S * K).reshape(I, S, K))


def test_string_coords_round_trip_without_objects(tmp_path):
    ds = xr.Dataset({"p": (("image",), np.ones(2, np.float32))},
                    coords={"image": np.arange(2), "image_file": ("image", np.array(["a.jpg", "n0/b.JPEG"]))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unstable-dtype warning is silenced by write_dataset
        write_dataset(ds, tmp_path / "s.zarr")
    back = open_store(tmp_path / "s.zarr")
    assert back["image_file"].dtype.kind == "U" and list(back["image_file"].values) == ["a.jpg", "n0/b.JPEG"]


# --------------------------------------------------------------------------- completion records
def _finished(tmp_path, name="s.zarr"):
    """A tiny finished store with four chunks of `a` (and the chunk file of one of them)."""
    final = tmp_path / "results" / name
    with StreamingStore(final, _skeleton(), "a", ("seed", "step", "y", "x"), (2, 3, 4, 4), (1, 3, 2, 4)) as st:
        for s in range(2):
            st.write((s, slice(0, 3)), np.arange(48, dtype=np.float32).reshape(3, 4, 4) + s)
    return final, final / "a" / "c" / "1" / "0" / "1" / "0"


def _damage(chunk, how):
    if how == "deleted":
        chunk.unlink()
    elif how == "garbage":  # same size, other bytes
        chunk.write_bytes(bytes(255 - b for b in chunk.read_bytes()))
    elif how == "truncated":
        chunk.write_bytes(chunk.read_bytes()[:-5])
    elif how == "no record":  # what a writer killed just before its record leaves (were it renamed)
        (chunk.parents[5] / "diffxai-complete.json").unlink()


@pytest.mark.parametrize("how, expect", [("deleted", "chunk a/c/1/0/1/0 is missing"),
                                         ("garbage", "chunk a/c/1/0/1/0 is damaged"),
                                         ("truncated", "chunk a/c/1/0/1/0 has"),
                                         ("no record", "no completion record")])
def test_a_damaged_store_is_refused_in_one_line_and_verify_names_it(tmp_path, how, expect, capsys):
    from diffxai.verify import main

    final, chunk = _finished(tmp_path)
    good, _ = _finished(tmp_path, "good.zarr")
    open_store(final)
    assert main([str(tmp_path / "results")]) == 0
    _damage(chunk, how)
    with pytest.raises(DiffxaiError, match=expect) as e:
        open_store(final)
    assert "\n" not in str(e.value) and str(final) in str(e.value)
    capsys.readouterr()
    assert main([str(tmp_path / "results")]) == 1
    out = capsys.readouterr().out
    assert f"rm -rf {final}\n" in out and "good.zarr" not in out.split("damaged:")[-1].split("rm -rf")[1]
    open_store(good)


def test_garbage_with_the_old_mtime_passes_the_quick_check_not_verify(tmp_path):
    from diffxai.verify import verify

    final, chunk = _finished(tmp_path)
    st = chunk.stat()
    _damage(chunk, "garbage")
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    open_store(final)  # the quick check (names, sizes, files changed since the record) cannot see it
    problems, n, _ = verify(tmp_path / "results")
    assert n == 1 and [p.store for p in problems] == [final] and "damaged" in problems[0].problem
    assert verify(tmp_path / "results", full=False)[0] == []


def test_write_dataset_records_every_file(tmp_path):
    import json

    ds = _skeleton().assign(p=(("seed", "step"), np.ones((2, 3), np.float32)))
    write_dataset(ds, tmp_path / "a.zarr")
    rec = json.loads((tmp_path / "a.zarr" / "diffxai-complete.json").read_text())
    files = {p.relative_to(tmp_path / "a.zarr").as_posix() for p in (tmp_path / "a.zarr").rglob("*") if p.is_file()}
    assert set(rec["files"]) == files - {"diffxai-complete.json"} and "p/c/0/0" in files
    (tmp_path / "a.zarr" / ".snakemake_timestamp").write_text("")  # what Snakemake adds is not damage
    open_store(tmp_path / "a.zarr")


# --------------------------------------------------------------------------- limits
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root with mount rights), else skipped; test_full_disk_at_the_record covers the rest."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_during_a_store_write_is_one_line_and_leaves_nothing(small_disk):
    big = np.random.default_rng(0).standard_normal((4, 3, 64, 64 * 8)).astype(np.float32)  # 1.5 MiB of noise
    ds = xr.Dataset({"x": (("image", "channel", "y", "x"), big)})
    with pytest.raises(DiffxaiError, match="no space left writing") as e:
        write_dataset(ds, small_disk / "a.zarr", encoding={"x": {"chunks": (1, 3, 64, 64 * 8)}})
    assert "\n" not in str(e.value) and "a.zarr" in str(e.value)
    with pytest.raises(DiffxaiError, match="no space left writing"):
        with StreamingStore(small_disk / "s.zarr", _skeleton(), "a", ("seed", "step", "y", "x"), (2, 3, 128, 512),
                            (1, 1, 128, 512)) as st:
            for s in range(2):
                st.write((s, slice(0, 3)), big.reshape(2, 3, 128, 512)[s])
    # nothing that looks finished; zarr's writes still in flight may recreate a hidden temporary
    # (no record), which the next write of that store removes
    left = list(small_disk.iterdir())
    assert all(p.name.startswith((".a.zarr.tmp-", ".s.zarr.tmp-")) for p in left), left
    write_dataset(_skeleton(), small_disk / "a.zarr")
    write_dataset(_skeleton(), small_disk / "s.zarr")
    assert sorted(p.name for p in small_disk.iterdir()) == ["a.zarr", "s.zarr"]


def test_full_disk_at_the_record_leaves_no_store(tmp_path, monkeypatch):
    import errno

    import diffxai.store as store

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "write_record", full)
    with pytest.raises(DiffxaiError, match="no space left writing .*s.zarr"):
        with StreamingStore(tmp_path / "s.zarr", _skeleton(), "a", ("seed", "step", "y", "x"), (1, 3, 2, 2),
                            (1, 3, 2, 2)) as st:
            st.write((0, slice(0, 3)), np.zeros((3, 2, 2), np.float32))
    with pytest.raises(DiffxaiError, match="no space left writing .*d.zarr"):
        write_dataset(_skeleton(), tmp_path / "d.zarr")
    assert list(tmp_path.iterdir()) == []


_WRITER = """
import time, numpy as np, xarray as xr
from diffxai.store import StreamingStore
sk = xr.Dataset(coords={"seed": [0], "step": [0, 1]})
with StreamingStore(ARGS[0], sk, "a", ("seed", "step", "y", "x"), (1, 2, 4, 4), (1, 1, 4, 4)) as st:
    st.write((0, slice(0, 1)), np.full((1, 4, 4), 1.5, np.float32))
    print("half", flush=True)
    if ARGS[1] == "wait":
        time.sleep(60)
    st.write((0, slice(1, 2)), np.full((1, 4, 4), 2.5, np.float32))
"""


def test_sigterm_mid_write_is_a_kill_and_the_resumed_write_is_identical(tmp_path):
    """SLURM's time limit sends SIGTERM: the writer dies like after kill -9, nothing at the final
    path; the rerun (here in this process) writes the same store as an uninterrupted one."""
    final = tmp_path / "s.zarr"
    code = "import sys; ARGS = sys.argv[1:]\n" + _WRITER
    proc = subprocess.Popen([sys.executable, "-c", code, str(final), "wait"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait() == -signal.SIGTERM
    assert not final.exists() and len(list(tmp_path.iterdir())) == 1
    for target in (final, tmp_path / "uninterrupted.zarr"):
        exec(_WRITER, {"ARGS": [str(target), "go"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "uninterrupted.zarr"]
    a, b = open_store(final), open_store(tmp_path / "uninterrupted.zarr")
    assert a["a"].values.tobytes() == b["a"].values.tobytes() and a.attrs == b.attrs
