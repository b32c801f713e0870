"""What several stages share: class and version attributes for the stores, the fetched images,
the job's torch threads and its device."""
from __future__ import annotations

import json
from pathlib import Path

#: threads a workflow job gives torch (set by diffxai.smk from the rule's threads; None: torch's default)
JOB_THREADS: int | None = None


def job_torch():
    """torch, with the job's thread count applied (the stages that compute with torch call this
    before they do; CPU-only jobs never import torch)."""
    import torch

    if JOB_THREADS is not None:
        torch.set_num_threads(max(1, int(JOB_THREADS)))
    return torch


def job_device(prefer: str, log, setting: str) -> str:
    """The device of a job that may use a GPU: with a GPU to use (``prefer`` cuda, or auto where
    one is visible) the job claims one (diffxai.gpu) before CUDA starts; otherwise 'cpu', as
    configured or for want of a GPU. ``setting`` names the config key in errors."""
    from .. import gpu

    return gpu.claim_for_job(prefer, log, setting=setting).device


def class_attrs(c: dict) -> dict:
    return {"cls": c["slug"], "synset": c["synset"], "class_index": int(c["index"]), "class_name": c["name"]}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "diffusers", "captum", "zarr", "xarray"):
        try:
            out[f"{pkg}_version"] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def read_manifest(folder) -> dict:
    """The manifest.json of a fetched class folder (resources/images/{cls}/)."""
    return json.loads((Path(folder) / "manifest.json").read_text())


def clean_rgb(folder):
    """(N, H, W, 3) uint8: every fetched image of a class folder, in image order."""
    import numpy as np
    from PIL import Image

    from ..fetch import image_name

    out = []
    for e in read_manifest(folder)["images"]:
        with Image.open(Path(folder) / image_name(e["image"])) as im:
            out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)


def open_all(paths: dict) -> dict:
    """{key: opened store} of {key: path}."""
    from ..store import open_store

    return {k: open_store(p) for k, p in paths.items()}
