"""The glue between a Snakemake ``script:`` and a stage function of diffxai.stages.

A script stays thin::

    sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
    from diffxai.smk import run
    run(snakemake, "noise.noise")     # diffxai.stages.noise.noise

The seam is by name, and checked: the rule's input, output and param names must be exactly the
stage function's parameters (those without a default required), so a renamed or added output
(e.g. a ``pdf``) that the function does not take fails at once, with one line naming it, instead of
being silently ignored. The per-class files a stage declares (diffxai.paths.files) reach it as
named mappings built from the job's classes and methods, after a check that the rule declared
exactly those paths. Each stage writes exactly the paths it is given as outputs. Params named
``tracked_*`` are for Snakemake's rerun decisions only (:mod:`diffxai.inputs`) and are not passed on.

Nothing here imports torch: a CPU-only job starts without it; the stages that compute with torch
apply the job's thread count when they import it (diffxai.stages.common.job_torch).
"""
from __future__ import annotations

import importlib
import logging
import sys
import time


def _named(io) -> dict:
    """Snakemake's Namedlist -> {name: value} (lists stay lists)."""
    return {k: v for k, v in io.items()}


def stage_function(stage: str):
    """``"<module>.<function>"`` -> the function of diffxai.stages.<module>."""
    from .errors import DiffxaiError

    module, _, name = stage.rpartition(".")
    try:
        return getattr(importlib.import_module(f"diffxai.stages.{module}"), name)
    except (ImportError, AttributeError, ValueError):
        raise DiffxaiError(f"no stage {stage!r}: expected '<module>.<function>' of diffxai.stages") from None


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
        raise DiffxaiError(f"rule/stage mismatch for {stage}: {what}")


def bind(stage: str, input: dict, output: dict, params: dict) -> tuple:
    """(function, keyword arguments) of a job: the names checked against the stage's signature,
    its per-class files as named mappings (diffxai.paths.bind_files)."""
    from .inputs import untracked
    from .paths import bind_files

    fn = stage_function(stage)
    kwargs = untracked({**input, **output, **params})
    check_names(stage, fn, kwargs)
    return fn, bind_files(stage, fn, kwargs)


def run(snakemake, stage: str) -> None:
    from .errors import DiffxaiError
    from .stages import common

    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    log = logging.getLogger(f"diffxai.{stage}")
    common.JOB_THREADS = max(1, int(snakemake.threads))
    t0 = time.perf_counter()
    try:
        fn, kwargs = bind(stage, _named(snakemake.input), _named(snakemake.output), _named(snakemake.params))
        fn(**kwargs)
    except DiffxaiError as exc:
        log.error("%s", exc)
        print(f"diffxai error: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("%s finished in %.1f s", stage, time.perf_counter() - t0)
