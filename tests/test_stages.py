"""Stage functions with an image axis, called directly (no Snakemake): layout, per-image RNG,
the rule <-> function name check, the representative image."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffxai import pipeline
from diffxai.errors import DiffxaiError
from diffxai.figures import representative_image
from diffxai.noise import make_scheduler, noise_trajectory, select_steps
from diffxai.smk import check_names
from diffxai.store import open_store

TIGER = {"slug": "tiger", "index": 292, "synset": "n02129604", "name": "tiger"}
NOISE = {"num_train_timesteps": 100, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
         "steps": 3, "timesteps": None, "seeds": 2, "base_seed": 0, "mode": "shared"}


def _folder(tmp_path, n=2, size=16):
    folder = tmp_path / "tiger"
    folder.mkdir()
    rng = np.random.default_rng(1)
    entries = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
        entries.append({"image": i, "file": f"img_{i}.jpg", "sha256_png": f"{i:064d}"})
    (folder / "manifest.json").write_text(json.dumps({"images": entries}))
    return folder


def test_noise_writes_image_seed_step_and_image_zero_is_the_one_image_trajectory(tmp_path):
    folder = _folder(tmp_path)
    pipeline.noise([str(folder)], [str(tmp_path / "n.zarr")], [TIGER], NOISE)
    ds = open_store(tmp_path / "n.zarr")
    assert ds["x"].dims == ("image", "seed", "step", "channel", "y", "x")
    assert ds["x"].shape == (2, 2, 3, 3, 16, 16) and ds["x"].encoding["chunks"] == (1, 1, 3, 3, 16, 16)
    assert list(ds["image_file"].values) == ["img_0.jpg", "img_1.jpg"] and ds["x0"].dims[0] == "image"
    from diffxai.noise import image_to_x0

    sched = make_scheduler()
    one = noise_trajectory(image_to_x0(np.asarray(Image.open(folder / "000.png"))), sched,
                           select_steps(100, 3), [0, 1])
    assert ds["x"].values[0].tobytes() == one["x"].values.tobytes()
    two = noise_trajectory(image_to_x0(np.asarray(Image.open(folder / "001.png"))), sched,
                           select_steps(100, 3), [0, 1], image=1)
    assert ds["x"].values[1].tobytes() == two["x"].values.tobytes()


def test_check_names_names_the_mismatch():
    def stage(png, pdf, classes, threshold=0.5):
        pass

    check_names("s", stage, {"png", "pdf", "classes"})
    with pytest.raises(DiffxaiError, match=r"passes extra.*does not pass pdf"):
        check_names("s", stage, {"png", "classes", "extra"})


def test_every_stage_takes_what_its_rule_passes():
    """The rules' names (parsed from the .smk files) are exactly each stage's parameters."""
    import inspect
    import re
    from pathlib import Path

    rules = Path(__file__).resolve().parents[1] / "rules"
    found = 0
    for smk in rules.glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*rule\b)", text):
            m = re.search(r'"\.\./scripts/(\w+)\.py"', block)
            if not m:
                continue
            script = (rules.parent / "scripts" / f"{m.group(1)}.py").read_text()
            stage = re.search(r'run\(snakemake, "(\w+)"\)', script).group(1)
            names = set()
            for section in ("input", "output", "params"):
                sm = re.search(rf"\n(\s*){section}:\n((?:\1\s+.*\n|\s*\n)+)", block)
                if sm:
                    indent = len(sm.group(1)) + 4
                    names |= set(re.findall(rf"^\s{{{indent}}}(\w+)=", sm.group(2), re.M))
            # (tracked_* params are for Snakemake's rerun decisions; diffxai.smk does not pass them)
            check_names(stage, getattr(pipeline, stage), {n for n in names if not n.startswith("tracked_")})
            found += 1
    assert found >= 9


def test_representative_image_is_nearest_the_median_onset():
    rows = pd.DataFrame({"image": [0, 1, 2, 3], "onset": [10.0, 30.0, 22.0, np.nan]})
    assert representative_image(rows, [0, 1, 2, 3])[0] == 2  # median of 10, 22, 30 is 22
    assert representative_image(rows, [0, 1])[0] in (0, 1)
    i, why = representative_image(rows, [0, 1])
    assert "median onset 22.0" in why
    assert representative_image(rows, [0, 1, 2], image=1) == (1, "chosen by figures.image")
    with pytest.raises(DiffxaiError, match="figures.image"):
        representative_image(rows, [0], image=2)
    assert representative_image(rows, [3]) == (3, "the only attributed image")
    none = pd.DataFrame({"image": [0, 1], "onset": [np.nan, np.nan]})
    assert representative_image(none, [0, 1])[0] == 0
