"""The GPU machine's path on the CPU: build a wheelhouse, install it offline beside the running
torch, run the whole workflow through bench/gpu_flow.sh --flow-test, read its summary.

The wheelhouse here carries a few of the real packages (the rest count as "the image's"), so the
same recipe, the same offline install and the same script run as on the device, in minutes."""
import importlib.metadata as md
import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO, SHARED

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason="shared samples missing")]

CARRIED = ["captum==0.9.0", "zarr==3.1.6", "xarray==2026.9.0", "diffusers==0.42.1"]
NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                  "Max retries exceeded", "ConnectionResetError", "ReadTimeoutError")


def _base_without(names: set[str], path) -> None:
    """Every installed distribution except ``names`` (and their own needs), as 'the image'."""
    from packaging.utils import canonicalize_name

    keep = sorted({canonicalize_name(d.metadata["Name"]) for d in md.distributions()} - names)
    path.write_text("\n".join(f"{n} {md.version(n)}" for n in keep) + "\n")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheelhouse")
    reqs = tmp / "requirements.txt"
    reqs.write_text("\n".join(CARRIED) + "\n")
    base = tmp / "base.txt"
    _base_without({"captum", "zarr", "xarray", "diffusers", "numcodecs", "donfig", "google-crc32c"}, base)
    out = tmp / "whl"
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "wheelhouse.py"), "--out", str(out),
                          "--python-version", v, "--base", str(base), "--requirements", str(reqs),
                          "--pin", "--carry", "--exclude"], capture_output=True, text=True, timeout=900)
    if res.returncode != 0 and any(e in res.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"the package index is unreachable: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wheelhouse" in res.stdout and "MiB" in res.stdout
    return out


def test_wheelhouse_carries_what_the_base_lacks(wheelhouse):
    names = sorted(p.name.split("-")[0].lower() for p in wheelhouse.glob("*.whl"))
    assert names == ["captum", "diffusers", "donfig", "google_crc32c", "numcodecs", "xarray", "zarr"], names
    manifest = (wheelhouse / "manifest.tsv").read_text().splitlines()
    assert manifest[0] == "wheel\tbytes" and len(manifest) == 1 + len(names)


def test_flow_runs_offline_from_the_wheelhouse(wheelhouse, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DIFFXAI_GPU_COUNT": "0",
           "PIP_NO_INDEX": "1"}  # offline, as on the device
    res = subprocess.run(["bash", str(REPO / "bench" / "gpu_flow.sh"), "--flow-test", "--wheelhouse",
                          str(wheelhouse), "--images", str(SHARED)], env=env, capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    pkgs = summary["environment"]["packages"]
    for name in ("captum", "zarr", "xarray", "diffusers"):
        assert pkgs[name]["from"] == "wheelhouse", (name, pkgs[name])
    assert pkgs["torch"]["from"] == "environment"
    (run,) = summary["runs"]
    assert run["name"] == "flow" and run["exit_code"] == 0 and run["wall_seconds"] > 0
    for stage in ("fetch_image", "noise", "classify", "attribute_integrated_gradients",
                  "attribute_gradient_shap", "attribute_occlusion", "onset"):
        assert run["stage_seconds"][stage] > 0, stage
    assert "tiger" in run["onset_csv"]
    assert {s["device"] for s in run["attribution_stores"]} == {"cpu"}
    acc = summary["accuracy_quick"]  # bench/accuracy_speed.py --quick: the GPU run's measurement path
    assert acc["exit_code"] == 0, (out / "accuracy_quick.log").read_text()[-2000:]
    assert acc["result"]["errors"]["integrated_gradients"]["engine"]["rel_l2"] < 1e-3
    assert acc["result"]["occlusion_tails"]["folded"]["error_vs_float64"]["rel_l2"] < 1e-4
    with tarfile.open(out / "flow.tar.gz") as tar:
        names = tar.getnames()
    assert "results/onset.csv" in names and "results/figures/softmax_curves.png" in names
    assert not any(".zarr" in n for n in names), "the stores stay on the device"
