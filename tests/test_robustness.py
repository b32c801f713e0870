"""Issue 5 at the workflow level: a broken input costs only its own class; security; determinism."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffxai import pipeline
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
    assert open_store(work / "results" / "noised" / "tiger.zarr")["x"].shape[0] == 2
    assert not (work / "results" / "noised" / "persian_cat.zarr").exists()
    assert not (work / "resources" / "images" / "persian_cat.png").exists()


def test_no_shell_sees_a_config_string():
    for smk in list((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]:
        text = smk.read_text()
        assert not re.search(r"^\s*(shell|run):", text, re.M), f"{smk.name} runs shell/inline code"


@needs_samples
def test_same_config_and_seeds_give_bitwise_identical_tensors_and_probabilities(tmp_path):
    from PIL import Image

    from conftest import load_sample

    png = tmp_path / "tiger.png"
    Image.fromarray(load_sample("n02129604")).save(png)
    for run in ("a", "b"):
        pipeline.noise([str(png)], [str(tmp_path / run / "n.zarr")], [TIGER], NOISE)
        pipeline.classify([str(tmp_path / run / "n.zarr")], [str(tmp_path / run / "p.zarr")], [TIGER],
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
            assert var.dtype.kind not in "OUS", f"{store}:{name} holds objects or strings"
    for f in (work / "results").rglob("*"):
        if f.is_file():
            head = f.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f
