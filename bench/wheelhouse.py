"""Build the offline wheelhouse for the lent GPU machine (which has torch but reaches no index).

    python bench/wheelhouse.py                       # -> .whl/ for the GPU image (Python 3.12)
    python bench/wheelhouse.py --python-version 3.11 --out /tmp/wh   # for this machine's Python

Steps (each printed):
1. resolve requirements.txt (less torch, torchvision and the test-only pytest, quantus,
   scikit-image, scikit-learn) with pip's own resolver
   (``pip install --dry-run --ignore-installed --report``) into the full list of distributions;
2. leave out every distribution the target image already has (``--base``, one name per line) and
   those named in ``--exclude`` (default: PuLP, 16 MB of solver binaries that only Snakemake's ILP
   scheduler imports; run Snakemake with ``--scheduler greedy`` instead), but carry those named in
   ``--carry`` even if the image has them (default: xarray, whose Zarr-3 support we pin);
3. download the rest as wheels for the target Python/platform (``pip download --no-deps
   --only-binary=:all:``); sdist-only pure-Python packages are built into wheels here;
4. check, with the target's environment markers, that every requirement of every carried wheel is
   met by another carried wheel (name and version) or by the image (name; version where known);
5. write ``manifest.tsv`` and print the total size.

Exit status 1 when a requirement is unmet or the wheelhouse exceeds ``--max-mib``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
             "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")
# the image's own torch is the point of the exercise; the rest are the tests' references, never imported
# by the workflow (quantus alone would pull 60 MB of opencv-python)
NOT_CARRIED = {"torch", "torchvision", "pytest", "quantus", "scikit-image", "scikit-learn"}


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_base(path: Path) -> dict[str, str | None]:
    """{canonical name: version or None} from a 'name [version]' file with # comments."""
    out: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, *ver = line.split()
            out[canonical(name)] = ver[0] if ver else None
    return out


def requirement_lines(requirements: Path) -> list[str]:
    lines = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and canonical(re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0]) not in NOT_CARRIED:
            lines.append(line)
    return lines


def resolve(lines: list[str], pins: list[str]) -> list[dict]:
    """Every distribution pip would install for ``lines`` (native resolve; markers re-checked later)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *lines, *pins]
        subprocess.run(cmd, check=True)
        data = json.loads(report.read_text())
    return [{"name": i["metadata"]["name"], "version": i["metadata"]["version"],
             "url": i["download_info"]["url"]} for i in data["install"]]


def download(dists: list[dict], out: Path, python_version: str) -> None:
    binaries = [d for d in dists if not d["url"].endswith((".tar.gz", ".zip"))]
    sdists = [d for d in dists if d not in binaries]
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    if binaries:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", python_version, "--implementation", "cp", *plat, "-d", str(out),
                        *[f"{d['name']}=={d['version']}" for d in binaries]], check=True)
    for d in sdists:  # pure-Python sdists only (checked below by the wheel's tag)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
                        f"{d['name']}=={d['version']}"], check=True)
        built = sorted(out.glob(f"{canonical(d['name']).replace('-', '_')}-{d['version']}-*.whl"))
        if not built or not built[0].name.endswith("-py3-none-any.whl"):
            raise SystemExit(f"wheelhouse: {d['name']} {d['version']} is an sdist that did not build a "
                             "pure-Python wheel; it cannot be carried to another Python")


def wheel_metadata(whl: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(whl) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta_name).decode())
    return msg["Name"], msg["Version"], msg.get_all("Requires-Dist") or []


def unmet_requirements(wheels: list[Path], base: dict[str, str | None], python_version: str,
                       excluded: set[str]) -> list[str]:
    """Requirements (target markers, no extras) that neither a carried wheel nor the image meets."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    env = {"python_version": python_version, "python_full_version": f"{python_version}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "extra": ""}
    carried = {}
    for whl in wheels:
        name, version, _ = wheel_metadata(whl)
        carried[canonical(name)] = version
    problems = []
    for whl in wheels:
        name, _, requires = wheel_metadata(whl)
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            key = canonical(req.name)
            if key in carried:
                if not req.specifier.contains(Version(carried[key]), prereleases=True):
                    problems.append(f"{name} needs {req}, the wheelhouse has {carried[key]}")
            elif key in base:
                known = base[key]
                if known is not None and not req.specifier.contains(Version(known), prereleases=True):
                    problems.append(f"{name} needs {req}, the image has {known}")
            elif key not in excluded:
                problems.append(f"{name} needs {req}: neither carried nor in the image")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / ".whl")
    ap.add_argument("--python-version", default="3.12", help="the target's Python (GPU image: 3.12)")
    ap.add_argument("--base", type=Path, default=REPO / "bench" / "gpu-image-packages.txt",
                    help="packages the target already has ('name [version]' per line)")
    ap.add_argument("--requirements", type=Path, default=REPO / "requirements.txt")
    ap.add_argument("--exclude", nargs="*", default=["pulp"], help="never carry these")
    ap.add_argument("--carry", nargs="*", default=["xarray"], help="carry these even if the image has them")
    ap.add_argument("--pin", nargs="*", default=["torch==2.11.0", "torchvision==0.26.0"],
                    help="pins for the resolve only (the image's torch), so pip does not pick another")
    ap.add_argument("--max-mib", type=float, default=56.0, help="fail above this size (the device carries 64 MiB)")
    a = ap.parse_args(argv)

    base = read_base(a.base)
    carry, exclude = {canonical(n) for n in a.carry}, {canonical(n) for n in a.exclude}
    dists = resolve(requirement_lines(a.requirements), a.pin)
    keep = [d for d in dists if canonical(d["name"]) not in exclude | NOT_CARRIED
            and (canonical(d["name"]) not in base or canonical(d["name"]) in carry)]
    skipped = sorted(canonical(d["name"]) for d in dists if d not in keep)
    print(f"resolved {len(dists)} distributions; carrying {len(keep)}, the image has or we exclude "
          f"{len(skipped)} ({', '.join(skipped)})")
    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob("*.whl"):
        old.unlink()
    download(keep, a.out, a.python_version)
    wheels = sorted(a.out.glob("*.whl"))
    problems = unmet_requirements(wheels, base, a.python_version, exclude)
    rows = ["wheel\tbytes"] + [f"{w.name}\t{w.stat().st_size}" for w in wheels]
    (a.out / "manifest.tsv").write_text("\n".join(rows) + "\n")
    total = sum(w.stat().st_size for w in wheels) / 2**20
    for w in sorted(wheels, key=lambda w: -w.stat().st_size)[:8]:
        print(f"  {w.stat().st_size / 2**20:6.1f} MiB  {w.name}")
    print(f"wheelhouse {a.out}: {len(wheels)} wheels, {total:.1f} MiB (limit {a.max_mib} MiB); excluded: "
          f"{', '.join(sorted(exclude))}")
    for p in problems:
        print(f"unmet: {p}", file=sys.stderr)
    if problems:
        return 1
    if total > a.max_mib:
        print(f"wheelhouse: {total:.1f} MiB is over --max-mib {a.max_mib}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
