"""Issue 5 at the workflow level: a broken input costs only its own class; security; determinism."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffxai.stages.classify import classify
from diffxai.stages.noise import noise
from diffxai.store import open_store

from conftest import REPO, SHARED, needs_samples, sample_path, snakemake

TIGER = {"slug": "tiger", "index": 292, "synset": "n02129604", "name": "tiger"}
NOISE = {"num_train_timesteps": 100, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
         "steps": 5, "timesteps": None, "seeds": 2, "base_seed": 0, "mode": "shared"}


@needs_samples
@pytest.mark.slow
def test_a_truncated_image_fails_its_class_only(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sample_path("n02129604"), images / "n02129604_tiger.JPG")   # upper-case extension
    raw = sample_path("n02123394").read_bytes()
    (images / "n02123394_Persian_cat.jpg").write_bytes(raw[: len(raw) // 2])  # truncated
    work = tmp_path / "work"
    res = snakemake(work, "--config", f"image_dir={images}", "--keep-going",
                    "--", "results/noised/tiger.zarr", "results/noised/persian_cat.zarr", check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    errors = [l for l in out.splitlines() if l.startswith("diffxai error:")]
    assert errors and "n02123394_Persian_cat.jpg" in errors[0], out[-3000:]
    assert "\n" not in errors[0] and "persian_cat" in errors[0]
    tiger = work / "results" / "noised" / "tiger.zarr"
    assert open_store(tiger)["x"].shape[:2] == (1, 2)
    assert not (work / "results" / "noised" / "persian_cat.zarr").exists()
    assert not (work / "resources" / "images" / "persian_cat").exists()
    # skip_bad_images: the broken file is left out and recorded, the next candidate is used, and
    # the finished tiger store is not lost (a changed fetch param reruns tiger too: same numbers)
    before = open_store(tiger)["x"].values.tobytes()
    shutil.copy(sample_path("n02123394"), images / "n02123394_z_good.jpeg")
    snakemake(work, "--config", f"image_dir={images}", "skip_bad_images=true",
              "--", "results/noised/tiger.zarr", "results/noised/persian_cat.zarr")
    manifest = json.loads((work / "resources" / "images" / "persian_cat" / "manifest.json").read_text())
    assert [m["file"] for m in manifest["skipped"]] == ["n02123394_Persian_cat.jpg"]
    assert [m["file"] for m in manifest["images"]] == ["n02123394_z_good.jpeg"]
    assert open_store(work / "results" / "noised" / "persian_cat.zarr")["image_file"].values.tolist() == \
        ["n02123394_z_good.jpeg"]
    assert open_store(tiger)["x"].values.tobytes() == before


def test_no_shell_sees_a_config_string():
    for smk in list((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]:
        text = smk.read_text()
        assert not re.search(r"^\s*(shell|run):", text, re.M), f"{smk.name} runs shell/inline code"


@needs_samples
def test_same_config_and_seeds_give_bitwise_identical_tensors_and_probabilities(tmp_path):
    from PIL import Image

    from conftest import load_sample

    folder = tmp_path / "tiger"
    folder.mkdir()
    Image.fromarray(load_sample("n02129604")).save(folder / "000.png")
    (folder / "manifest.json").write_text(json.dumps({"images": [
        {"image": 0, "file": "tiger.jpg", "sha256_png": "0" * 64}]}))
    for run in ("a", "b"):
        noise({"tiger": str(folder)}, {"tiger": str(tmp_path / run / "n.zarr")}, [TIGER], NOISE)
        classify({"tiger": str(tmp_path / run / "n.zarr")}, {"tiger": str(tmp_path / run / "p.zarr")}, [TIGER],
                 "efficientnet_lite0", 32, "cpu")
    a, b = open_store(tmp_path / "a" / "n.zarr"), open_store(tmp_path / "b" / "n.zarr")
    assert a["x"].values.tobytes() == b["x"].values.tobytes()
    assert a.attrs["seeds"] == [0, 1] == b.attrs["seeds"]
    pa, pb = open_store(tmp_path / "a" / "p.zarr"), open_store(tmp_path / "b" / "p.zarr")
    assert pa["p_true"].values.tobytes() == pb["p_true"].values.tobytes()
    assert pa.attrs["seeds"] == [0, 1]


def test_outputs_hold_no_pickle(tiny_run):
    work, _ = tiny_run
    for store in (work / "results").rglob("*.zarr"):
        ds = open_store(store)
        for name, var in {**ds.data_vars, **ds.coords}.items():
            # fixed-width unicode only for coordinate labels (image files and hashes, the analysis
            # stores' method / mask / order / depth names); data is never strings, nothing is an object
            allowed = "U" if name in ds.coords else ""
            assert var.dtype.kind not in set("OUS") - set(allowed), f"{store}:{name} holds objects or strings"
    for f in (work / "results").rglob("*"):
        if f.is_file():
            head = f.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f
