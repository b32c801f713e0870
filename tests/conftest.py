import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data" / "imagenet-samples").resolve()
TINY = REPO / "tests" / "data" / "tiny.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

needs_samples = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")


def sample_path(synset: str) -> Path:
    hits = sorted(SHARED.glob(f"{synset}_*.jpg"))
    if not hits:
        pytest.skip(f"no shared sample for {synset}")
    return hits[0]


def load_sample(synset: str, size: int = 224) -> np.ndarray:
    """(size, size, 3) uint8: the standard Resize(256)+CenterCrop(224), then resized if asked."""
    from PIL import Image

    from diffxai.images import load_rgb, preprocess

    rgb, _ = load_rgb(sample_path(synset))
    img, _ = preprocess(rgb, 256, 224)
    if size != 224:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
    return img


def snakemake(workdir: Path, *args, config_files=(TINY,), check=True, timeout=900, **popen):
    """Run the real workflow in ``workdir`` (a temp folder) with the repo's Snakefile."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if config_files:  # one flag with several files: a repeated --configfile keeps only the last
        cmd += ["--configfile", *map(str, config_files)]
    cmd += ["--config", f"image_dir={SHARED}", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DIFFXAI_GPU_COUNT": "0", **popen.pop("env", {})}
    if popen.pop("background", False):
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True, **popen)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **popen)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-8000:]}")
    return res


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny DAG, run once per test session; tests read its outputs (and must not modify them)."""
    if not SHARED.is_dir():
        pytest.skip("shared samples not present")
    work = tmp_path_factory.mktemp("tiny")
    # a workstation with two (fake) GPUs: two attribution jobs at once, each claims its own device
    locks = tmp_path_factory.mktemp("gpu-locks")
    res = snakemake(work, "--resources", "gpu=2",
                    env={"DIFFXAI_GPU_COUNT": "2", "DIFFXAI_GPU_LOCK_DIR": str(locks)})
    return work, res
