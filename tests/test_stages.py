"""Stage functions with an image axis, called directly (no Snakemake): layout, per-image RNG,
the rule <-> stage check (names and per-class files), the representative image, CPU jobs
without torch."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffxai import paths
from diffxai.stages import noise as noise_stage
from diffxai.errors import DiffxaiError
from diffxai.figures import representative_image
from diffxai.noise import make_scheduler, noise_trajectory, select_steps
from diffxai.smk import bind, check_names
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
    noise_stage.noise({"tiger": str(folder)}, {"tiger": str(tmp_path / "n.zarr")}, [TIGER], NOISE)
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


def _workflow_rules(config_files, workdir):
    """Every rule of the workflow planned with ``config_files``: (rule, stage name) for the script rules."""
    import re

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    from conftest import REPO, SHARED

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
                          config_settings=ConfigSettings(configfiles=list(config_files),
                                                         config={"image_dir": str(SHARED)}),
                          snakefile=REPO / "Snakefile", workdir=workdir)._workflow
        for rule in wf.rules:
            if rule.script:
                script = (REPO / "scripts" / rule.script.split("/")[-1]).read_text()
                yield rule, re.search(r'run\(snakemake, "([\w.]+)"\)', script).group(1)


@pytest.mark.parametrize("configs", [("tiny.yaml",), ("../../config/paper.yaml",)])
def test_every_rule_passes_what_its_stage_takes_and_reads(configs, tmp_path, monkeypatch):
    """Each rule's input, output and param names are exactly its stage's parameters, and each
    per-class file list it declares is exactly the named mapping paths.py builds for the stage
    from the job's classes and methods (what smk.run hands the stage)."""
    from conftest import TINY

    monkeypatch.setenv("DIFFXAI_GPU_COUNT", "0")
    monkeypatch.syspath_prepend(str(paths.__file__.rsplit("/", 2)[0]))
    found = set()
    for rule, stage in _workflow_rules([TINY.parent / c for c in configs], tmp_path):
        named = [{k: v for k, v in io.items()} for io in (rule.input, rule.output, rule.params)]
        fn, kwargs = bind(stage, *named)
        for name in getattr(fn, "files", {}):
            if name in kwargs:
                assert paths.flat(kwargs[name]) and isinstance(kwargs[name], dict), (rule.name, name)
        found.add(stage)
    assert len(found) == 14, sorted(found)


def test_a_rule_declaring_other_files_than_its_stage_reads_fails():
    classes = [TIGER, {**TIGER, "slug": "lion"}]
    attributions = paths.ATTRIBUTIONS.mapping(["tiger", "lion"], methods=["occlusion", "saliency"])
    fn, kw = bind("analyze.analyze_agreement", {"attributions": paths.flat(attributions)},
                  {"agreements": [paths.agreement_store("tiger"), paths.agreement_store("lion")]},
                  {"classes": classes, "methods": ["occlusion", "saliency"], "agreement": {}})
    assert kw["attributions"] == attributions and kw["attributions"]["saliency"]["lion"].endswith("saliency/lion.zarr")
    assert kw["agreements"] == {"tiger": "results/analysis/agreement/tiger.zarr",
                                "lion": "results/analysis/agreement/lion.zarr"}
    swapped = [paths.attribution_store(m, s) for s in ("tiger", "lion") for m in ("occlusion", "occlusion")]
    with pytest.raises(DiffxaiError, match=r"analyze.analyze_agreement: attributions .*lacks "
                                           r"results/attributions/saliency/lion.zarr"):
        bind("analyze.analyze_agreement", {"attributions": swapped}, {"agreements": []},
             {"classes": classes, "methods": ["occlusion", "saliency"], "agreement": {}})
    with pytest.raises(DiffxaiError, match=r"noise.noise: noised .*declares results/noised/x.zarr"):
        bind("noise.noise", {"images": [paths.image_folder("tiger")]}, {"noised": ["results/noised/x.zarr"]},
             {"classes": [TIGER], "noise": NOISE})
    with pytest.raises(DiffxaiError, match="no stage 'pipeline'"):
        bind("pipeline", {}, {}, {})


@pytest.mark.parametrize("module", ["fetch", "noise", "onset", "figures", "report", "analyze"])
def test_a_cpu_job_starts_without_torch(module):
    """Importing the glue and a stage module (what a job does before the stage's first line)
    imports neither torch nor diffusers nor captum."""
    import subprocess
    import sys

    code = (f"import sys; import diffxai.smk, diffxai.paths, diffxai.stages.{module}; "
            "print(sorted(m for m in ('torch', 'diffusers', 'captum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(paths.__file__.rsplit("/", 2)[0]))
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


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
