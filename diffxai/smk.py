"""The glue between a Snakemake ``script:`` and a function of diffxai.pipeline.

A script stays thin::

    sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
    from diffxai.smk import run
    run(snakemake, "noise")

The seam is by name, and checked: the rule's input, output and param names must be exactly the
stage function's parameters (those without a default required), so a renamed or added output
(e.g. a ``pdf``) that the function does not take fails at once, with one line naming it, instead of
being silently ignored. Each stage writes exactly the paths it is given as outputs. Params named
``tracked_*`` are for Snakemake's rerun decisions only (:mod:`diffxai.inputs`) and are not passed on.
"""
from __future__ import annotations

import logging
import sys
import time


def _named(io) -> dict:
    """Snakemake's Namedlist -> {name: value} (lists stay lists)."""
    return {k: v for k, v in io.items()}


def check_names(stage: str, fn, names) -> None:
    """DiffxaiError unless ``names`` (the rule's) are exactly what ``fn`` takes."""
    import inspect

    from .errors import DiffxaiError

    params = inspect.signature(fn).parameters
    unknown = sorted(set(names) - set(params))
    missing = sorted(n for n, p in params.items() if p.default is p.empty and n not in names)
    if unknown or missing:
        what = "; ".join(x for x in (f"the rule passes {', '.join(unknown)} which it does not take" if unknown else "",
                                     f"the rule does not pass {', '.join(missing)}" if missing else "") if x)
        raise DiffxaiError(f"rule/stage mismatch for pipeline.{stage}: {what}")


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
    from .inputs import untracked

    kwargs = untracked({**_named(snakemake.input), **_named(snakemake.output), **_named(snakemake.params)})
    t0 = time.perf_counter()
    try:
        fn = getattr(pipeline, stage)
        check_names(stage, fn, kwargs)
        fn(**kwargs)
    except DiffxaiError as exc:
        log.error("%s", exc)
        print(f"diffxai error: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("%s finished in %.1f s", stage, time.perf_counter() - t0)
