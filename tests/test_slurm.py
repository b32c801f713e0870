"""The tiny workflow through a real SLURM with the cluster profile (profiles/slurm).

Needs a responding SLURM (CI: `bash .ci/slurm.sh setup`, a single node with one fake GPU) and
snakemake-executor-plugin-slurm. Every job must go through sbatch, the attribution jobs with a
GPU request (`--gpus=1`), the others without one, and every output of the DAG must exist.
"""
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SHARED, TINY, snakemake

SLUGS = ["tiger", "persian_cat"]
METHODS = ["integrated_gradients", "gradient_shap", "occlusion", "saliency"]  # tests/data/tiny.yaml's
OVERLAY = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm"
TIMEOUT_S = int(os.environ.get("DIFFXAI_SLURM_TEST_TIMEOUT", "900"))


def _sinfo_ok() -> bool:
    """A controller answers. Without one sinfo retries for ~15 s: give up after 5."""
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _plugin_installed() -> bool:
    # find_spec, not import: importing the plugin runs sacct/scontrol (slow without a controller)
    return importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _plugin_installed(), reason="snakemake-executor-plugin-slurm not installed"),
    pytest.mark.skipif(not SHARED.is_dir(), reason="shared samples missing"),
]


def _partitions() -> tuple[str, list[str]]:
    """(default partition, all partitions) from sinfo."""
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    names = [p.rstrip("*") for p in out.split()]
    default = next((p.rstrip("*") for p in out.split() if p.endswith("*")), names[0])
    return default, names


def _jobs_in(workdir: Path) -> dict[str, dict[str, str]]:
    """SLURM's records (`scontrol -o show job`) of the jobs whose working directory is ``workdir``."""
    res = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30)
    jobs = {}
    for line in res.stdout.splitlines():
        rec = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
        if rec.get("WorkDir") == str(workdir):
            jobs[rec["JobId"]] = rec
    return jobs


def _sbatch_calls(log: str) -> dict[str, str]:
    """Rule name → the sbatch command line the plugin ran (logged with --verbose)."""
    calls = {}
    for line in log.splitlines():
        if "sbatch call:" in line:
            m = re.search(r"--comment '?rule_(\S+?)(?:_wildcards_\S*)?'?\s", line)
            assert m, line
            calls[m.group(1)] = line.split("--wrap")[0]
    return calls


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    # checked here, not at collection: a run that deselects these tests pays nothing
    if not _sinfo_ok():
        pytest.skip("no SLURM responding (run: bash .ci/slurm.sh setup)")
    work = tmp_path_factory.mktemp("slurm").resolve()
    env_backup = {k: os.environ.get(k) for k in ("DIFFXAI_SLURM_PARTITION", "DIFFXAI_SLURM_ACCOUNT")}
    default, names = _partitions()
    partition = os.environ.get("DIFFXAI_SLURM_PARTITION") or default
    os.environ["DIFFXAI_SLURM_PARTITION"] = partition
    os.environ.setdefault("DIFFXAI_SLURM_ACCOUNT", "")  # no accounting on the CI cluster
    # Where the cluster has a "gpu" partition (.ci/slurm.sh makes one), send the attribution
    # jobs there the way docs/cluster.md tells users to: resources.gpu.slurm_partition.
    # (One file: of several --configfile flags Snakemake keeps only the last.)
    config_files = [TINY]
    gpu_partition = "gpu" if "gpu" in names else partition
    if gpu_partition != partition:
        cfg = yaml.safe_load(TINY.read_text())
        cfg.setdefault("resources", {}).setdefault("gpu", {})["slurm_partition"] = gpu_partition
        combined = work.parent / f"{work.name}-tiny-gpu-partition.yaml"
        combined.write_text(yaml.safe_dump(cfg))
        config_files = [combined]
    try:
        proc = snakemake(work, "--workflow-profile", str(PROFILE), "--profile", str(OVERLAY),
                         "--retries", "0", "--verbose", config_files=config_files, background=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        # Collect SLURM's job records while the run goes on (finished jobs leave scontrol after
        # MinJobAge): the last record of each job wins.
        jobs: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + TIMEOUT_S
        while proc.poll() is None:
            if time.monotonic() > deadline:
                # SIGINT: snakemake cancels its SLURM jobs and exits (on SIGTERM it waits for them)
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    subprocess.run(["scancel", *jobs], capture_output=True)
                pytest.fail(f"SLURM run took longer than {TIMEOUT_S} s:\n" + "".join(lines[-60:]))
            jobs.update(_jobs_in(work))
            time.sleep(2)
        reader.join(30)
        jobs.update(_jobs_in(work))
        log = "".join(lines)
        assert proc.returncode == 0, f"snakemake on SLURM failed ({proc.returncode}):\n{log[-12000:]}"
        return work, log, jobs, {"cpu": partition, "gpu": gpu_partition}, config_files
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_every_output_exists_and_nothing_is_left_to_do(slurm_run):
    work, _, _, _, config_files = slurm_run
    r = work / "results"
    expected = [r / "onset.csv", r / "onset_seeds.csv", r / "report.md",
                r / "summary" / "onset_by_category.csv", r / "figures" / "softmax_curves.png"]
    for s in SLUGS:
        expected += [work / "resources" / "images" / s / "000.png", r / "noised" / f"{s}.zarr",
                     r / "probs" / f"{s}.zarr", r / "figures" / f"onset_{s}.png"]
        expected += [r / "attributions" / m / f"{s}.zarr" for m in METHODS]
    expected += [r / "figures" / f"{m}_grid.png" for m in METHODS]
    missing = [str(p.relative_to(work)) for p in expected if not p.exists()]
    assert not missing, f"missing outputs: {missing}"
    for m in METHODS:
        for s in SLUGS:
            assert (r / "attributions" / m / f"{s}.zarr" / "zarr.json").is_file()
    # Every output of the DAG exists and is up to date: a dry run finds nothing to do.
    dry = snakemake(work, "--workflow-profile", str(PROFILE), "--profile", str(OVERLAY), "-n",
                    config_files=config_files)
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]


def test_every_job_went_through_sbatch(slurm_run):
    work, log, jobs, partitions, _ = slurm_run
    calls = _sbatch_calls(log)
    rules = set(calls)
    for s in SLUGS:
        assert {f"fetch_image_{s}", f"noise_{s}", f"classify_{s}", f"figures_onset_{s}"} <= rules
        assert {f"attribute_{m}_{s}" for m in METHODS} <= rules
    assert {"onset", "figures_curves", "report_md", "aggregate"} <= rules
    assert {f"figures_grid_{m}" for m in METHODS} <= rules
    per_class = ("fetch_image_", "noise_", "classify_", "attribute_", "figures_onset_")
    others = {r for r in rules if r.startswith(per_class) and not r.endswith(tuple(SLUGS))}
    assert not others, f"jobs for classes outside the tiny config: {sorted(others)}"
    # SLURM ran them: one record per submission, all completed, in the expected partition,
    # and the plugin kept one log per job.
    assert len(jobs) == len(calls), (sorted(calls), {j: r.get("Comment") for j, r in jobs.items()})
    for jid, rec in jobs.items():
        assert rec["JobState"] == "COMPLETED", rec
        rule = rec["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        assert rec["Partition"] == partitions["gpu" if rule.startswith("attribute_") else "cpu"], rec
        assert (work / ".snakemake" / "slurm_logs" / f"rule_{rule}" / f"{jid}.log").is_file()


def test_attribution_jobs_request_one_gpu_and_the_others_none(slurm_run):
    _, log, jobs, _, _ = slurm_run
    calls = _sbatch_calls(log)
    for rule, call in calls.items():
        if rule.startswith("attribute_"):
            assert " --gpus=1" in call and "--cpus-per-gpu=" in call, call
        else:
            assert "--gpus" not in call and "--gres" not in call, call
    # ... and what SLURM recorded for the jobs agrees
    for rec in jobs.values():
        rule = rec["Comment"].removeprefix("rule_")
        gpu_tres = re.search(r"gpu:(\d+)", rec.get("TresPerJob", "") + rec.get("TresPerNode", ""))
        if rule.startswith("attribute_"):
            assert gpu_tres and gpu_tres.group(1) == "1", rec
        else:
            assert gpu_tres is None, rec
