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
TINY_IMAGES = REPO / "tests" / "data" / "tiny_images.yaml"
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


def tiny_image_dir(work: Path) -> Path:
    """The image_dir of the tiny run in ``work`` (built by :func:`tiny_run`, outside results/ and resources/)."""
    return work / "image_dir"


def tiny(work: Path, *args, config=(), **kw):
    """snakemake() with the tiny run's configuration (tiny.yaml + tiny_images.yaml, its image_dir);
    ``config``: more KEY=VALUE items (Snakemake keeps only the last ``--config`` flag)."""
    extra = kw.pop("config_files", ())
    return snakemake(work, *args, "--config", f"image_dir={tiny_image_dir(work)}", *config,
                     config_files=(TINY, TINY_IMAGES, *extra), **kw)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny DAG (3 images per class), run once per test session; tests read its outputs (and
    must not modify them)."""
    if not SHARED.is_dir():
        pytest.skip("shared samples not present")
    work = tmp_path_factory.mktemp("tiny")
    build_image_tree(tiny_image_dir(work), ["n02129604"], layout="flat", duplicate=True)
    build_image_tree(tiny_image_dir(work), ["n02123394"], layout="tree")
    # a workstation with two (fake) GPUs: two attribution jobs at once, each claims its own device
    locks = tmp_path_factory.mktemp("gpu-locks")
    res = tiny(work, "--resources", "gpu=2",
               env={"DIFFXAI_GPU_COUNT": "2", "DIFFXAI_GPU_LOCK_DIR": str(locks)})
    return work, res


def build_image_tree(root: Path, synsets, layout: str = "flat", *, variants=("orig", "flip", "crop", "png"),
                     duplicate: bool = False, truncated: bool = False) -> Path:
    """A small ImageNet-style image_dir in ``root`` from the shared samples: per synset the real
    image plus transformed copies (never copies into the repo). ``layout``: "flat"
    (``<synset>_<variant>.<ext>``) or "tree" (``<synset>/<synset>_<variant>.<EXT>``). ``duplicate``
    adds a byte-identical copy of the original; ``truncated`` a cut-off JPEG (named to sort last)."""
    from PIL import Image, ImageOps

    root.mkdir(parents=True, exist_ok=True)
    for syn in synsets:
        src = sample_path(syn)
        folder = root / syn if layout == "tree" else root
        folder.mkdir(parents=True, exist_ok=True)
        name = (lambda v, ext: f"{syn}_{v}.{ext.upper() if layout == 'tree' else ext}")
        with Image.open(src) as im:
            im = im.convert("RGB")
            for v in variants:
                if v == "orig":
                    shutil.copy(src, folder / name("a_orig", "jpg"))
                elif v == "flip":
                    ImageOps.mirror(im).save(folder / name("b_flip", "jpeg"), quality=90)
                elif v == "crop":
                    w, h = im.size
                    im.crop((w // 8, h // 8, w - w // 8, h - h // 8)).save(folder / name("c_crop", "jpg"), quality=85)
                elif v == "png":
                    im.rotate(90, expand=True).save(folder / name("d_rot", "png"))
                elif v == "gray":
                    im.convert("L").save(folder / name("e_gray", "jpg"), quality=80)
        if duplicate:
            shutil.copy(src, folder / name("aa_dup", "jpg"))  # sorts right after a_orig
        if truncated:
            raw = src.read_bytes()
            (folder / name("zz_trunc", "jpg")).write_bytes(raw[: len(raw) // 3])
    return root
