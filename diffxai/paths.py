"""Every path the workflow reads or writes, relative to its working directory, defined once.

``rules/common.smk`` declares the rules' inputs and outputs with these functions, and the stages
receive the per-class files as named mappings built here from the job's classes (and methods):
``{cls: path}``, or ``{method: {cls: path}}`` for a job that reads every method. A stage declares
which family each such argument belongs to (:func:`files`); ``diffxai.smk`` builds the mapping
from the job's ``classes`` and ``method``/``methods`` params and checks that the rule declared
exactly those paths, so a rule and its stage cannot disagree about which file is which.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .errors import DiffxaiError

RESULTS = "results"
ONSET = f"{RESULTS}/onset.csv"
ONSET_IMAGES = f"{RESULTS}/onset_images.csv"
ONSET_SEEDS = f"{RESULTS}/onset_seeds.csv"
PHASES = f"{RESULTS}/analysis/phases.csv"
VERDICTS = f"{RESULTS}/analysis/verdicts.csv"
METRICS_BY_CATEGORY = f"{RESULTS}/analysis/metrics_by_category.csv"
REPORT = f"{RESULTS}/report.md"
SUMMARY = f"{RESULTS}/summary"


def image_folder(slug: str) -> str:
    """resources/images/{cls}/: 000.png, 001.png, ... and manifest.json (one directory output)."""
    return f"resources/images/{slug}"


def noised_store(slug: str) -> str:
    return f"{RESULTS}/noised/{slug}.zarr"


def probs_store(slug: str) -> str:
    return f"{RESULTS}/probs/{slug}.zarr"


def attribution_store(method: str, slug: str) -> str:
    return f"{RESULTS}/attributions/{method}/{slug}.zarr"


def analysis_store(method: str, slug: str) -> str:
    return f"{RESULTS}/analysis/{method}/{slug}.zarr"


def agreement_store(slug: str) -> str:
    return f"{RESULTS}/analysis/agreement/{slug}.zarr"


def figure(name: str, ext: str = "png") -> str:
    """results/figures/{name}.{ext} (every PNG has a PDF beside it)."""
    return f"{RESULTS}/figures/{name}.{ext}"


def summary(name: str) -> str:
    """results/summary/{name} (the cross-class aggregates)."""
    return f"{SUMMARY}/{name}"


def log(name: str) -> str:
    return f"{RESULTS}/logs/{name}.log"


def benchmark(name: str) -> str:
    return f"{RESULTS}/benchmarks/{name}.tsv"


@dataclass(frozen=True)
class Family:
    """One per-class file of a kind: ``path(cls)``, or ``path(method, cls)`` when ``per_method``."""

    name: str
    path: Callable[..., str]
    per_method: bool = False

    def mapping(self, slugs: Sequence[str], method: str | None = None, methods: Sequence[str] | None = None):
        """{cls: path}; for a per-method family {cls: path} of ``method`` or, given ``methods``,
        {method: {cls: path}}."""
        if not self.per_method:
            return {s: self.path(s) for s in slugs}
        if methods is not None:
            return {m: {s: self.path(m, s) for s in slugs} for m in methods}
        if method is None:
            raise DiffxaiError(f"{self.name} files are per method: the rule passes neither method nor methods")
        return {s: self.path(method, s) for s in slugs}


IMAGES = Family("image folder", image_folder)
NOISED = Family("noised store", noised_store)
PROBS = Family("probs store", probs_store)
ATTRIBUTIONS = Family("attribution store", attribution_store, per_method=True)
ANALYSES = Family("analysis store", analysis_store, per_method=True)
AGREEMENTS = Family("agreement store", agreement_store)
ONSET_PNG = Family("onset panel", lambda s: figure(f"onset_{s}"))
ONSET_PDF = Family("onset panel PDF", lambda s: figure(f"onset_{s}", "pdf"))
ANALYSIS_PNG = Family("analysis figure", lambda s: figure(f"analysis_{s}"))
MASKS_PNG = Family("masks figure", lambda s: figure(f"masks_{s}"))
ANIMATION_GIF = Family("animation", lambda s: figure(f"animation_{s}", "gif"))


def flat(mapping) -> list[str]:
    """The paths of a (nested) mapping, in its order: what a rule declares as its input or output."""
    if isinstance(mapping, Mapping):
        return [p for v in mapping.values() for p in flat(v)]
    return [str(mapping)]


def files(**families: Family):
    """Declare which of a stage's arguments are per-class files, and of which family."""
    def mark(fn):
        fn.files = dict(families)
        return fn
    return mark


def bind_files(stage: str, fn, kwargs: dict) -> dict:
    """``kwargs`` (a rule's inputs, outputs and params by name) with each argument ``fn`` declares
    as a :class:`Family` replaced by its named mapping, built from the ``classes`` and
    ``method``/``methods`` params; DiffxaiError unless the rule declared exactly those paths."""
    out = dict(kwargs)
    declared = getattr(fn, "files", {})
    if declared and "classes" not in kwargs:
        raise DiffxaiError(f"rule/stage mismatch for {stage}: the stage reads per-class files but the rule "
                           "passes no classes")
    slugs = [c["slug"] for c in kwargs.get("classes", ())]
    for name, fam in declared.items():
        if name not in kwargs:
            continue
        mapping = fam.mapping(slugs, kwargs.get("method"), kwargs.get("methods"))
        want, got = flat(mapping), [str(p) for p in ([kwargs[name]] if isinstance(kwargs[name], str) else kwargs[name])]
        if sorted(want) != sorted(got):
            extra = sorted(set(got) - set(want))
            missing = sorted(set(want) - set(got))
            raise DiffxaiError(f"rule/stage mismatch for {stage}: {name} ({fam.name}s) "
                               + "; ".join(x for x in (f"declares {', '.join(extra)} which the stage does not read"
                                                       if extra else "",
                                                       f"lacks {', '.join(missing)}" if missing else "",
                                                       "repeats a path" if not (extra or missing) else "") if x))
        out[name] = mapping
    return out
