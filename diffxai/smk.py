"""The glue between a Snakemake ``script:`` and a function of diffxai.pipeline.

A script stays thin::

    sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
    from diffxai.smk import run
    run(snakemake, "noise")
"""
from __future__ import annotations

import logging
import sys
import time


def _named(io) -> dict:
    """Snakemake's Namedlist -> {name: value} (lists stay lists)."""
    return {k: v for k, v in io.items()}


def run(snakemake, stage: str) -> None:
    from . import pipeline
    from .errors import DiffxaiError

    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    log = logging.getLogger(f"diffxai.{stage}")
    try:
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))
    except ImportError:  # pragma: no cover
        pass
    kwargs = {**_named(snakemake.input), **_named(snakemake.output), **_named(snakemake.params)}
    t0 = time.perf_counter()
    try:
        getattr(pipeline, stage)(**kwargs)
    except DiffxaiError as exc:
        log.error("%s", exc)
        print(f"diffxai error: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("%s finished in %.1f s", stage, time.perf_counter() - t0)
