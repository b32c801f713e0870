"""The whole DAG on a tiny config, run for real with Snakemake in a temporary folder."""
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from diffxai.store import open_store

from conftest import REPO, SHARED, TINY, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason="shared samples missing")]

SLUGS = ["tiger", "persian_cat"]
METHODS = ["integrated_gradients", "gradient_shap", "occlusion"]


def _planned_rules(dry_run_output: str) -> set[str]:
    """Rule names from the job table of a dry run."""
    table = dry_run_output.split("Job stats:")[-1].split("Reasons:")[0]
    rules = set()
    for line in table.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            rules.add(m.group(1))
    return rules


def test_every_output_of_the_tiny_dag(tiny_run):
    work, _ = tiny_run
    r = work / "results"
    for s in SLUGS:
        png = work / "resources" / "images" / f"{s}.png"
        im = Image.open(png)
        assert im.mode == "RGB" and im.size == (224, 224)
        noised = open_store(r / "noised" / f"{s}.zarr")
        assert noised["x"].dims == ("seed", "step", "channel", "y", "x")
        assert noised["x"].shape == (2, 4, 3, 224, 224)
        assert list(noised["step"].values) == [0, 33, 66, 99]
        assert list(noised["t"].values) == [99, 66, 33, 0]
        for c in ("alpha_bar", "log_snr", "sigma"):
            assert c in noised.coords
        assert len(noised.attrs["image_sha256"]) == 64 and noised.attrs["seeds"] == [0, 1]
        probs = open_store(r / "probs" / f"{s}.zarr")
        assert probs["p_true"].shape == (2, 4) and probs["top5_class"].shape == (2, 4, 5)
        assert probs["p_true"].values[:, -1].mean() > 0.5, f"{s}: the clean image is recognised"
        for m in METHODS:
            a = open_store(r / "attributions" / m / f"{s}.zarr")
            assert a["attribution"].dims == ("seed", "step", "y", "x")
            assert a["attribution"].dtype == np.float32 and a["attribution"].shape == (2, 4, 224, 224)
            vals = a["attribution"].values
            assert np.isfinite(vals).all() and np.abs(vals).max() > 0
            for key in ("method", "settings", "captum_version", "device", "precision", "seeds", "target_mode"):
                assert key in a.attrs, key
            assert a.attrs["method"] == m and a.attrs["precision"] == "fp32"
            # Occlusion ran through the incremental module (EfficientNet-Lite0), the others cannot
            cut = json.loads(a.attrs["engine"])["occlusion_incremental_cut"]
            assert (cut is not None) == (m == "occlusion"), (m, cut)
            assert (a["target"].values == probs.attrs["class_index"]).all()
            assert (r / "benchmarks" / f"attribute_{m}" / f"{s}.tsv").is_file()
            assert a.attrs["gpu_slot"] in (0, 1), "each GPU job claimed one of the two fake devices"
            log = (r / "logs" / f"attribute_{m}" / f"{s}.log").read_text()
            assert f"CUDA_VISIBLE_DEVICES={a.attrs['gpu_slot']}" in log
        assert (r / "figures" / f"onset_{s}.png").stat().st_size > 10_000
        assert (r / "figures" / f"onset_{s}.pdf").is_file()
    per_class = pd.read_csv(r / "onset.csv")
    assert sorted(per_class["cls"]) == sorted(SLUGS)
    for col in ("onset", "onset_lo", "onset_hi", "midpoint", "slope", "threshold_cross", "t_onset", "log_snr_onset"):
        assert col in per_class.columns
    per_seed = pd.read_csv(r / "onset_seeds.csv")
    assert len(per_seed) == 2 * len(SLUGS)
    for name in ["softmax_curves"] + [f"{m}_grid" for m in METHODS]:
        assert (r / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (r / "figures" / f"{name}.pdf").is_file()
    assert "Tiger" in (r / "report.md").read_text() or "tiger" in (r / "report.md").read_text()
    assert (r / "summary" / "onset_by_category.csv").is_file()
    for rule_log in (r / "logs").rglob("*.log"):
        assert rule_log.stat().st_size > 0 or "fetch" in str(rule_log), rule_log


def test_rerun_with_nothing_changed_does_nothing(tiny_run):
    work, _ = tiny_run
    res = snakemake(work, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr


def _replan(work, tmp_path, section, key, value) -> set[str]:
    """Rules a dry run plans after changing one config value of the tiny run."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg[section][key] = value
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    res = snakemake(work, "-n", config_files=(changed,))
    return _planned_rules(res.stdout + res.stderr)


def test_editing_an_onset_setting_plans_only_onset_figures_and_report(tiny_run, tmp_path):
    rules = _replan(tiny_run[0], tmp_path, "onset", "threshold", 0.6)
    assert "onset" in rules
    allowed = {"onset", "figures_curves", "report_md", "aggregate", "all"} | {f"figures_onset_{s}" for s in SLUGS}
    assert rules <= allowed, rules - allowed


def test_changing_the_schedule_reruns_noise_and_everything_after(tiny_run, tmp_path):
    rules = _replan(tiny_run[0], tmp_path, "noise", "beta_end", 0.03)
    assert {f"noise_{s}" for s in SLUGS} <= rules
    assert {f"attribute_{m}_{s}" for m in METHODS for s in SLUGS} <= rules
    assert not any(r.startswith("fetch_image") for r in rules)


def test_nested_command_line_override_reruns_only_its_method(tiny_run):
    """`--config 'attribution={occlusion: {...}}'` is merged and typed (Snakemake hands nested values
    over as strings) and replans Occlusion and what reads it, nothing upstream, no other method."""
    res = snakemake(tiny_run[0], "attribution={occlusion: {window: [3, 56, 56], stride: [3, 56, 56]}}", "-n")
    rules = _planned_rules(res.stdout + res.stderr)
    assert {f"attribute_occlusion_{s}" for s in SLUGS} <= rules
    assert not any(r.startswith(("fetch_image", "noise_", "classify_", "attribute_integrated", "attribute_gradient"))
                   for r in rules), rules


def test_kill_9_during_attribution_then_resume(tmp_path):
    """Kill the whole run while an attribution job is writing; the README's rerun finishes it."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["classes"] = ["tiger"]
    cfg["methods"] = ["occlusion"]
    cfg["attribution"]["occlusion"] = {"window": [3, 32, 32], "stride": [3, 32, 32]}  # ~400 forwards
    cfg_path = tmp_path / "kill.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    proc = snakemake(work, "--cores", "1", config_files=(cfg_path,), background=True)
    store = work / "results" / "attributions" / "occlusion" / "tiger.zarr"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if list(store.parent.glob(".tiger.zarr.tmp-*")) and proc.poll() is None:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("the attribution job never started")
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not store.exists(), "a half-written store must never sit at the final path"
    noised = work / "results" / "noised" / "tiger.zarr"
    before = (noised / "zarr.json").stat().st_mtime_ns
    # what `make run` does: clear the stale lock of the killed run, then run (the profile sets
    # rerun-incomplete, so the killed job is redone from scratch)
    from diffxai.lock import clear_stale_lock

    assert clear_stale_lock(work, REPO / "Snakefile") == "removed a stale lock left by a killed run"
    res = snakemake(work, config_files=(cfg_path,))
    out = res.stdout + res.stderr
    assert "noise_tiger" not in _planned_rules(out), "finished work is not recomputed"
    assert (noised / "zarr.json").stat().st_mtime_ns == before
    a = open_store(store)
    assert np.isfinite(a["attribution"].values).all()
    assert not list(store.parent.glob(".tiger.zarr.tmp-*")), "stale temporaries are cleaned"
    again = snakemake(work, "-n", config_files=(cfg_path,))
    assert "Nothing to be done" in again.stdout + again.stderr


def test_imagenet1k_plans_gpu_sized_jobs_not_thousands(tmp_path):
    """1000 classes in shards of 50: a few dozen jobs per stage (the plan, not its speed)."""
    res = snakemake(tmp_path, "-n", config_files=(REPO / "config" / "imagenet1k.yaml",))
    out = res.stdout + res.stderr
    total = int(re.search(r"^total\s+(\d+)$", out, re.M).group(1))
    rules = _planned_rules(out)
    assert total < 200, total
    assert sum(r.startswith("attribute_occlusion_shard") for r in rules) == 20
    assert sum(r.startswith("noise_shard") for r in rules) == 20


def test_snakemake_lint_is_clean(tmp_path):
    res = snakemake(tmp_path, "--lint", config_files=())
    assert "Congratulations, your workflow is in a good condition" in res.stdout + res.stderr
