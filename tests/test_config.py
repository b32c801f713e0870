"""Config validation: defaults, and a one-line error naming the key for every bad value."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffxai.config import plan_shards, validate_config
from diffxai.errors import DiffxaiError

from conftest import REPO, SHARED, SNAKEMAKE

SCHEMA = REPO / "config" / "schema.yaml"
BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _cfg(**patch):
    cfg = copy.deepcopy(BASE)
    for dotted, value in patch.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def test_defaults_fill_a_minimal_config():
    cfg = validate_config({"classes": ["tiger"]}, SCHEMA)
    assert cfg["noise"]["num_train_timesteps"] == 100 and cfg["noise"]["beta_schedule"] == "linear"
    assert cfg["attribution"]["occlusion"]["window"] == [3, 15, 15]
    assert cfg["onset"]["threshold"] == 0.5
    assert cfg["classifier"] == "efficientnet_lite0"
    assert (cfg["images_per_class"], cfg["image_seed"], cfg["min_images_per_class"], cfg["skip_bad_images"]) == \
        (1, None, None, False)
    assert cfg["attribution"]["images"] == 1 and cfg["figures"]["image"] is None
    assert cfg["download_dir"] == "resources/downloads"


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "paper.yaml", "imagenet1k.yaml"):
        path = REPO / "config" / name
        if path.exists():
            merged = copy.deepcopy(BASE)
            merged.update(yaml.safe_load(path.read_text()))
            validate_config(merged, SCHEMA)


def test_the_study_configs_are_not_lightened_by_the_preview():
    """paper.yaml (and paper_cpu.yaml on top) are layered on config.yaml, as Snakemake merges them:
    the preview's lighter checks must not leak into the study's run."""
    from diffxai.config import merged
    load = lambda n: yaml.safe_load((REPO / "config" / n).read_text())   # noqa: E731
    for layers in (("paper.yaml",), ("paper.yaml", "paper_cpu.yaml")):
        cfg = load("config.yaml")
        for n in layers:
            cfg = merged(cfg, load(n))
        cfg = validate_config(cfg, SCHEMA)
        a = cfg["analysis"]
        assert a["randomization"]["enabled"] and a["faithfulness"]["enabled"], layers
        assert a["faithfulness"]["methods"] is None and a["faithfulness"]["fills"] == ["baseline", "noise"], layers
        assert a["subset"]["seeds"] is None and a["subset"]["steps_relative_to_onset"] == [-15, 0, 15], layers
        assert cfg["noise"]["steps"] == 100 and cfg["noise"]["seeds"] == 4, layers
        assert {"integrated_gradients", "gradient_shap", "occlusion"} <= set(cfg["methods"]), layers
    assert merged(load("config.yaml"), load("paper.yaml"))["analysis"]["theory"]["band_subset"] == "all"


@pytest.mark.parametrize("patch, culprit", [
    (dict(noise__seeds=0), "noise.seeds"),
    (dict(noise__seeds=-2), "noise.seeds"),
    (dict(noise__steps=0), "noise.steps"),
    (dict(noise__steps=-5), "noise.steps"),
    (dict(noise__timesteps=[5, 100]), "noise.timesteps"),
    (dict(noise__timesteps=[-1]), "noise.timesteps"),
    (dict(noise__steps=500), "noise.steps"),
    (dict(methods=["integrated_gradients", "lime"]), "methods"),
    (dict(methods=[]), "methods"),
    (dict(noise__beta_schedule="cosine"), "noise.beta_schedule"),
    (dict(onset__threshold=1.5), "onset.threshold"),
    (dict(attribution__precision="fp8"), "attribution.precision"),
    (dict(attribution__occlusion={"window": [3, 300, 300], "stride": [3, 8, 8]}), "attribution.occlusion.window"),
    (dict(attribution__seeds=9), "attribution.seeds"),
    (dict(noise__typo_key=1), "noise"),
    (dict(classes="some"), "classes"),
    (dict(image__crop=300), "image.crop"),
    (dict(images_per_class=0), "images_per_class"),
    (dict(images_per_class=2, min_images_per_class=3), "min_images_per_class"),
    (dict(attribution__images=2), "attribution.images"),  # more than images_per_class (1)
    (dict(images_per_class=3, attribution__images=2, figures__image=2), "figures.image"),
    (dict(skip_bad_images="yes please"), "skip_bad_images"),
    (dict(image_seed=-1), "image_seed"),
])
def test_bad_values_name_the_key(patch, culprit):
    with pytest.raises(DiffxaiError) as e:
        validate_config(_cfg(**patch), SCHEMA)
    msg = str(e.value)
    assert culprit in msg and "\n" not in msg, msg


def test_shards():
    assert plan_shards(["a", "b"], 1) == {"a": ["a"], "b": ["b"]}
    shards = plan_shards([f"c{i}" for i in range(1000)], 50)
    assert len(shards) == 20 and sum(map(len, shards.values())) == 1000
    assert list(shards)[0] == "shard000"


def test_nested_command_line_values_are_typed():
    """Snakemake's --config parses nested values with YAML's BaseLoader (every leaf a string);
    the config gets them typed as the schema says, merged into the config file's values."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    cfg = copy.deepcopy(BASE)
    update_config(cfg, parse_config(["noise={seeds: 2, timesteps: [0, 50, 99], beta_end: 0.03}",
                                     "attribution={seeds: null, occlusion: {window: [3, 15, 15], stride: [3, 8, 8]}}",
                                     "onset={threshold: 0.4}"]))
    assert cfg["noise"]["seeds"] == "2"  # what Snakemake hands over
    cfg = validate_config(cfg, SCHEMA)
    assert cfg["noise"]["seeds"] == 2 and cfg["noise"]["timesteps"] == [0, 50, 99]
    assert cfg["noise"]["beta_end"] == 0.03 and cfg["onset"]["threshold"] == 0.4
    assert cfg["attribution"]["seeds"] is None and cfg["attribution"]["occlusion"]["window"] == [3, 15, 15]
    assert cfg["noise"]["beta_schedule"] == BASE["noise"]["beta_schedule"]  # merged, not replaced
    # strings stay strings where the schema allows them; text that is no number stays wrong
    assert validate_config(_cfg(classes=["283"]), SCHEMA)["classes"] == ["283"]
    with pytest.raises(DiffxaiError, match=r"noise\.seeds: 'four' is not of type 'integer'"):
        validate_config(_cfg(noise__seeds="four"), SCHEMA)


@pytest.mark.parametrize("override, culprit", [
    ("noise={'seeds': 0}", "noise.seeds: 0 is less than the minimum of 1"),
    ("noise={steps: 500}", "noise.steps: 500 is more than num_train_timesteps=100"),
    ("classes=['persain cat']", "Persian cat"),
    ("classes=['crane']", "n02012849"),
    ("classes=['tiger','n02129604']", "tiger"),
    ("methods=['occlusion','deeplift']", "methods"),
])
def test_snakemake_reports_bad_config_in_one_line(tmp_path, override, culprit):
    res = subprocess.run([SNAKEMAKE, "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--config", override], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    lines = [l for l in (res.stdout + res.stderr).splitlines() if "diffxai:" in l]
    assert lines and culprit in lines[0], res.stdout + res.stderr
