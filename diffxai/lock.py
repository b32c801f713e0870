"""Clear a Snakemake lock that a killed run left behind, and only then.

After ``kill -9`` Snakemake's lock files stay in ``.snakemake/locks`` and the next run refuses to
start. ``make run`` calls this first: if no live snakemake process works in this folder, the
lock is stale and ``snakemake --unlock`` removes it; a live run keeps its lock.

    python -m diffxai.lock [--directory DIR] [--snakefile FILE]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def live_snakemake_in(workdir: Path) -> list[int]:
    workdir = workdir.resolve()
    me = {os.getpid(), os.getppid()}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd")).resolve()
        except OSError:
            continue
        exe = [Path(c.decode(errors="replace")).name for c in cmd[:2]]
        if "snakemake" in exe and "diffxai.lock" not in b" ".join(cmd).decode(errors="replace"):
            args = [c.decode(errors="replace") for c in cmd]
            target = Path(args[args.index("--directory") + 1]).resolve() if "--directory" in args else cwd
            if target == workdir:
                pids.append(int(proc.name))
    return pids


def clear_stale_lock(workdir: Path, snakefile: Path | None = None) -> str:
    locks = workdir / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return "no lock"
    live = live_snakemake_in(workdir)
    if live:
        return f"locked by a running snakemake (pid {', '.join(map(str, live))}); left alone"
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--unlock", "--directory", str(workdir)]
    if snakefile:
        cmd += ["--snakefile", str(snakefile)]
    subprocess.run(cmd, check=True, capture_output=True)
    return "removed a stale lock left by a killed run"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--directory", default=".")
    ap.add_argument("--snakefile", default=None)
    a = ap.parse_args(argv)
    msg = clear_stale_lock(Path(a.directory), Path(a.snakefile) if a.snakefile else None)
    if msg != "no lock":
        print(f"diffxai: {msg}")


if __name__ == "__main__":
    main()
