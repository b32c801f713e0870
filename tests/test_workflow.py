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

from conftest import REPO, SHARED, TINY, TINY_IMAGES, snakemake, tiny

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason="shared samples missing")]

SLUGS = ["tiger", "persian_cat"]
METHODS = ["integrated_gradients", "gradient_shap", "occlusion", "saliency"]  # config/config.yaml's


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
    files = {"tiger": ["n02129604_a_orig.jpg", "n02129604_b_flip.jpeg", "n02129604_c_crop.jpg"],
             "persian_cat": [f"n02123394/n02123394_{v}" for v in ("a_orig.JPG", "b_flip.JPEG", "c_crop.JPG")]}
    for s in SLUGS:
        folder = work / "resources" / "images" / s
        manifest = json.loads((folder / "manifest.json").read_text())
        assert [e["file"] for e in manifest["images"]] == files[s]
        if s == "tiger":  # the byte-identical copy is counted once, with a warning
            assert [d["file"] for d in manifest["duplicates"]] == ["n02129604_aa_dup.jpg"]
            assert any("duplicate" in w for w in manifest["warnings"])
        for i in range(3):
            im = Image.open(folder / f"{i:03d}.png")
            assert im.mode == "RGB" and im.size == (224, 224)
        noised = open_store(r / "noised" / f"{s}.zarr")
        assert noised["x"].dims == ("image", "seed", "step", "channel", "y", "x")
        assert noised["x"].shape == (3, 2, 4, 3, 224, 224)
        assert noised["x"].encoding["chunks"] == (1, 1, 4, 3, 224, 224)
        assert list(noised["image"].values) == [0, 1, 2]
        assert list(noised["image_file"].values) == files[s]
        assert list(noised["image_sha256"].values) == [e["sha256_png"] for e in manifest["images"]]
        assert list(noised["step"].values) == [0, 33, 66, 99]
        assert list(noised["t"].values) == [99, 66, 33, 0]
        for c in ("alpha_bar", "log_snr", "sigma"):
            assert c in noised.coords
        assert noised.attrs["seeds"] == [0, 1]
        x = noised["x"].values
        assert not np.array_equal(x[0], x[1]), "each image has its own noise and pixels"
        probs = open_store(r / "probs" / f"{s}.zarr")
        assert probs["p_true"].dims == ("image", "seed", "step")
        assert probs["p_true"].shape == (3, 2, 4) and probs["top5_class"].shape == (3, 2, 4, 5)
        assert list(probs["image_file"].values) == files[s]
        assert probs["p_true"].values[0, :, -1].mean() > 0.5, f"{s}: the clean image is recognised"
        for m in METHODS:
            a = open_store(r / "attributions" / m / f"{s}.zarr")
            assert a["attribution"].dims == ("image", "seed", "step", "y", "x")
            assert a["attribution"].dtype == np.float32 and a["attribution"].shape == (2, 2, 4, 224, 224)
            assert list(a["image"].values) == [0, 1] and list(a["image_file"].values) == files[s][:2]
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
    assert (per_class["n_images"] == 3).all() and (per_class["n_seeds"] == 2).all()
    per_image = pd.read_csv(r / "onset_images.csv")
    assert len(per_image) == 3 * len(SLUGS) and list(per_image["image"][:3]) == [0, 1, 2]
    assert {"image_file", "clean_top1", "clean_wrong"} <= set(per_image.columns)
    per_seed = pd.read_csv(r / "onset_seeds.csv")
    assert len(per_seed) == 3 * 2 * len(SLUGS) and {"cls", "image", "seed"} <= set(per_seed.columns)
    for name in ["softmax_curves"] + [f"{m}_grid" for m in METHODS]:
        assert (r / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (r / "figures" / f"{name}.pdf").is_file()
    report = (r / "report.md").read_text()
    assert "Tiger" in report or "tiger" in report
    assert "n02123394/n02123394_b_flip.JPEG" in report, "the report lists per-image onsets"
    assert (r / "summary" / "onset_by_category.csv").is_file()
    for rule_log in (r / "logs").rglob("*.log"):
        assert rule_log.stat().st_size > 0 or "fetch" in str(rule_log), rule_log
    log = (r / "logs" / "figures" / "integrated_gradients_grid.log").read_text()
    assert "Traceback" not in log


def test_the_tiny_dag_analyses_the_maps_and_states_verdicts(tiny_run):
    """The analysis stage: per method and class a store over the attributed images, seeds
    and steps, agreement, the phase and verdict tables, the figures and the report's verdict table."""
    from diffxai.analysis.control_verdicts import is_control_claim

    work, _ = tiny_run
    r = work / "results"
    for s in SLUGS:
        for m in METHODS:
            ds = open_store(r / "analysis" / m / f"{s}.zarr")
            assert ds["enrichment"].dims == ("image", "seed", "step", "mask", "part")
            assert ds["enrichment"].shape == (2, 2, 4, 6, 2)
            assert list(ds["mask"].values) == ["silhouette", "outline", "interior", "background", "detail", "edges"]
            # (part=pos is NaN where a map has no positive pixel: the tiny run's 2x2-window Occlusion;
            # an empty mask, e.g. no outline where the silhouette fills the frame, is NaN for every map)
            filled = ds["mask_pixels"].any(("y", "x")).transpose("image", "mask")
            e = ds["enrichment"].sel(part="abs").transpose("image", "seed", "step", "mask")
            assert np.isfinite(e.where(filled).values[np.broadcast_to(filled.values[:, None, None], e.shape)]).all()
            assert np.isnan(e.values[np.broadcast_to(~filled.values[:, None, None], e.shape)]).all()
            assert np.isfinite(ds["spectral_centroid"].values).all()
            # the costly checks on the subset only: image 0, seed 0, steps k = 0 and 99 (steps_every 10)
            sub = ds["in_subset"].values
            assert sub.sum() == 2 and sub[0, 0, 0] and sub[0, 0, -1]
            d = ds["deletion_auc_raw"].sel(order="attribution").values
            assert np.isfinite(d[sub]).all() and np.isnan(d[~sub]).all()
            assert ("randomization_spearman" in ds) == (m in ("integrated_gradients", "gradient_shap"))
            assert ds["mask_pixels"].shape == (6, 2, 224, 224)   # (mask, image, y, x)
            assert (r / "benchmarks" / f"analyze_{m}" / f"{s}.tsv").is_file()
            assert list(ds["fill"].values) == ["baseline", "noise"]
            assert ("enrichment_gradient_only" in ds) == (m in ("integrated_gradients", "gradient_shap"))  # IG and GS: their own
            assert np.isfinite(ds["enrichment_input_abs"].sel(part="abs").values).all()
        shared = open_store(r / "analysis" / "integrated_gradients" / f"{s}.zarr")   # the shared checks' job
        assert np.isfinite(shared["p_true_band"].values).all() and shared["crossover_frequency"].dims == ("image", "step")
        ag = open_store(r / "analysis" / "agreement" / f"{s}.zarr")
        assert ag["method_spearman"].dims == ("pair", "image", "seed", "step")
        assert ag.sizes["pair"] == len(METHODS) * (len(METHODS) - 1) // 2
        assert (r / "figures" / f"analysis_{s}.png").stat().st_size > 10_000
        assert (r / "figures" / f"masks_{s}.png").stat().st_size > 10_000
        gif = Image.open(r / "figures" / f"animation_{s}.gif")
        assert gif.format == "GIF" and gif.n_frames == 4
    phases = pd.read_csv(r / "analysis" / "phases.csv")
    assert {"cls", "xai_method", "metric", "before", "before_lo", "before_hi", "after_minus_before",
            "after_minus_before_lo", "after_minus_before_hi"} <= set(phases.columns)
    assert set(phases["cls"]) == set(SLUGS) and set(phases["xai_method"]) == set(METHODS)
    verdicts = pd.read_csv(r / "analysis" / "verdicts.csv")
    assert list(verdicts.columns) == ["claim", "cls", "synset", "xai_method", "verdict", "scope", "rule", "evidence"]
    assert set(verdicts["xai_method"]) == set(METHODS) | {"combined"}
    claims = set(verdicts["claim"])
    assert {"outline first, details later", "proper classification from 40-60", "faces at the rise",
            "stripes then face"} <= claims
    ctl = verdicts["claim"].map(is_control_claim).astype(bool)
    assert verdicts.loc[~ctl, "verdict"].str.match(r"^(supported|not supported|undecided)").all()
    assert verdicts.loc[ctl, "verdict"].str.match(r"^(carried by the (gradient|input)|(more|no more) than noising "
                                                  r"predicts|undecided)").all()
    # without user masks the face/stripes claims cannot be decided
    assert (verdicts.loc[verdicts["claim"] == "stripes then face", "verdict"].str.startswith("undecided")).all()
    assert (verdicts.loc[verdicts["claim"] == "faces at the rise", "cls"] == "persian_cat").all()
    assert pd.read_csv(r / "analysis" / "metrics_by_category.csv")["category"].eq("animal").all()
    report = (r / "report.md").read_text()
    assert "## Verdicts on the study's claims" in report and "Rule: supported if" in report
    assert "| class | scope | " + " | ".join(METHODS) + " | combined |" in report
    assert "Monte-Carlo estimate" in report
    for s in SLUGS:
        assert f"| {s} | " in report.split("## Verdicts")[1]


def _declared_outputs(work) -> set[str]:
    """Every output path the rules declare for this run, from ``snakemake --summary``."""
    res = tiny(work, "--summary")
    lines = (res.stdout).splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("output_file"))
    return {l.split("\t")[0] for l in lines[start + 1:] if l.strip()}


def test_stages_write_exactly_the_declared_outputs(tiny_run):
    """Each stage writes the paths its rule declares and nothing else (logs and benchmarks aside)."""
    work, _ = tiny_run
    declared = _declared_outputs(work)
    assert "results/onset_images.csv" in declared and "results/summary/onset_histogram.pdf" in declared
    missing = sorted(p for p in declared if not (work / p).exists())
    assert not missing, f"declared but not written: {missing}"
    dirs = [work / p for p in declared if (work / p).is_dir()]
    undeclared = []
    for top in ("results", "resources"):
        for f in (work / top).rglob("*"):
            if not f.is_file() and not f.is_symlink():
                continue
            rel = f.relative_to(work).as_posix()
            if rel.startswith(("results/logs/", "results/benchmarks/")):
                continue
            if rel in declared or any(d in f.parents for d in dirs):
                continue
            undeclared.append(rel)
    assert not undeclared, f"written but declared by no rule: {undeclared}"


def test_rerun_with_nothing_changed_does_nothing(tiny_run):
    work, _ = tiny_run
    res = tiny(work, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr


def _replan(work, tmp_path, section, key, value) -> set[str]:
    """Rules a dry run plans after changing one config value of the tiny run."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg[section][key] = value
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    res = tiny(work, "-n", config_files=(changed, TINY_IMAGES))
    return _planned_rules(res.stdout + res.stderr)


def test_editing_an_onset_setting_plans_only_onset_figures_and_report(tiny_run, tmp_path):
    rules = _replan(tiny_run[0], tmp_path, "onset", "threshold", 0.6)
    assert "onset" in rules
    allowed = {"onset", "figures_curves", "report_md", "aggregate", "all"} | {f"figures_onset_{s}" for s in SLUGS} \
        | {f"figures_grid_{m}" for m in METHODS} \
        | {"analysis_summary"} | {f"figures_analysis_{s}" for s in SLUGS} \
        | {f"analyze_{m}_{s}" for m in METHODS for s in SLUGS}  # the phases and the costly subset follow the onset
    assert rules <= allowed, rules - allowed


def test_changing_the_schedule_reruns_noise_and_everything_after(tiny_run, tmp_path):
    rules = _replan(tiny_run[0], tmp_path, "noise", "beta_end", 0.03)
    assert {f"noise_{s}" for s in SLUGS} <= rules
    assert {f"attribute_{m}_{s}" for m in METHODS for s in SLUGS} <= rules
    assert not any(r.startswith("fetch_image") for r in rules)


def test_nested_command_line_override_reruns_only_its_method(tiny_run):
    """`--config 'attribution={occlusion: {...}}'` is merged and typed (Snakemake hands nested values
    over as strings) and replans Occlusion and what reads it, nothing upstream, no other method."""
    res = tiny(tiny_run[0], "-n", config=["attribution={occlusion: {window: [3, 56, 56], stride: [3, 56, 56]}}"])
    rules = _planned_rules(res.stdout + res.stderr)
    assert {f"attribute_occlusion_{s}" for s in SLUGS} <= rules
    assert not any(r.startswith(("fetch_image", "noise_", "classify_", "attribute_integrated", "attribute_gradient"))
                   for r in rules), rules


def test_an_analysis_setting_replans_only_analysis_its_figures_and_the_report(tiny_run):
    """`--config 'analysis={...}'` after the tiny run: a mask setting reruns the per-method analysis
    stores and what reads them; a verdict setting only the summary and the report; nothing upstream."""
    res = tiny(tiny_run[0], "-n", config=["analysis={masks: {outline: {width: 4}}}"])
    rules = _planned_rules(res.stdout + res.stderr)
    assert {f"analyze_{m}_{s}" for m in METHODS for s in SLUGS} <= rules
    allowed = {f"analyze_{m}_{s}" for m in METHODS for s in SLUGS} | {f"figures_analysis_{s}" for s in SLUGS} \
        | {"analysis_summary", "report_md", "all"}
    assert rules <= allowed, rules - allowed
    res = tiny(tiny_run[0], "-n", config=["analysis={verdicts: {proper_window: [30, 70]}}"])
    assert _planned_rules(res.stdout + res.stderr) == {"analysis_summary", "report_md", "all"}


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
    assert total < 300, total  # 20 shards x (fetch, noise, classify, 3 attribute, 3 analyze, agreement, 2 figures)
    assert sum(r.startswith("attribute_occlusion_shard") for r in rules) == 20
    assert sum(r.startswith("noise_shard") for r in rules) == 20


def test_snakemake_lint_is_clean(tmp_path):
    res = snakemake(tmp_path, "--lint", config_files=())
    assert "Congratulations, your workflow is in a good condition" in res.stdout + res.stderr


def _tiger_chain() -> set[str]:
    return {"fetch_image_tiger", "noise_tiger", "classify_tiger", "figures_onset_tiger", "figures_analysis_tiger",
            "analyze_agreement_tiger"} | {f"{r}_{m}_tiger" for r in ("attribute", "analyze") for m in METHODS}


def test_the_same_images_by_another_path_plan_nothing_and_a_changed_one_its_class(tiny_run, tmp_path):
    """Reruns follow the images' content: a copy of image_dir reached through a symlink and a
    path with `..` plans nothing; one changed image replans its class and what follows, only."""
    from conftest import tiny_image_dir

    work = tiny_run[0]
    copy = shutil.copytree(tiny_image_dir(work), tmp_path / "copy", symlinks=False)
    (tmp_path / "link").symlink_to(copy)
    spelled = tmp_path / "link" / ".." / "link"

    def plan():
        res = snakemake(work, "-n", "--config", f"image_dir={spelled}", config_files=(TINY, TINY_IMAGES))
        return res.stdout + res.stderr, _planned_rules(res.stdout + res.stderr)

    out, _ = plan()
    assert "Nothing to be done" in out, out[-3000:]
    with Image.open(copy / "n02129604_c_crop.jpg") as im:  # the third tiger image, re-encoded
        im.save(copy / "n02129604_c_crop.jpg", quality=60)
    _, rules = plan()
    assert _tiger_chain() <= rules, rules
    # the other class: only what reads the cross-class onset tables (its figures, and its analyses,
    # whose costly subset is placed around the class onsets of results/onset.csv)
    assert rules - _tiger_chain() <= {"onset", "figures_curves", "report_md", "aggregate", "all", "analysis_summary",
                                      "figures_onset_persian_cat", "figures_analysis_persian_cat"} \
        | {f"figures_grid_{m}" for m in METHODS} | {f"analyze_{m}_persian_cat" for m in METHODS}, rules - _tiger_chain()


def test_a_user_mask_replans_exactly_its_class_analysis(tiny_run):
    """analysis.masks.folder (tiny_images.yaml: <workdir>/masks) is tracked by content: adding a
    mask for one class replans that class's analysis and what reads it, nothing else."""
    work = tiny_run[0]
    folder = work / "masks" / "persian_cat"
    folder.mkdir(parents=True)
    try:
        Image.fromarray(np.full((224, 224), 255, np.uint8)).save(folder / "face.png")
        res = tiny(work, "-n")
    finally:
        shutil.rmtree(work / "masks")
    rules = _planned_rules(res.stdout + res.stderr)
    assert {f"analyze_{m}_persian_cat" for m in METHODS} <= rules
    assert rules <= {f"analyze_{m}_persian_cat" for m in METHODS} | {"figures_analysis_persian_cat", "analysis_summary",
                                                                       "report_md", "all"}, rules
