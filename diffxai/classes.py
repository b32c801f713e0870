"""The ImageNet-1k class table and resolution of user class specs to a :class:`ClassInfo`.

A user names a class by synset (``"n02123394"``), index (``283`` or ``"283"``), name
(``"Persian cat"``; case-insensitive, spaces/underscores/hyphens equivalent) or slug
(``"persian_cat"``).  Three names are shared by two classes each (``crane``, ``cardigan``,
``maillot``); such a name is refused with both candidates listed, and their slugs carry the
synset (``crane_n02012849``) so they stay unique.
"""
from __future__ import annotations

import csv
import difflib
import functools
import io
import operator
import re
from dataclasses import dataclass
from importlib import resources

from diffxai.errors import DiffxaiError

__all__ = ["ClassInfo", "class_table", "class_table_df", "resolve_class", "resolve_classes", "study_reference"]

_TABLE = "imagenet_classes.tsv"
_STUDY = "study_reference.tsv"  # the study's p(true) = 0.5 crossings (Kim, Byeon, Park)
_COLUMNS = ("index", "synset", "name", "slug", "category", "url", "sha256")
_SYNSET_RE = re.compile(r"n\d{8}")
_SEP_RE = re.compile(r"[\s_\-]+")


@dataclass(frozen=True)
class ClassInfo:
    index: int
    synset: str
    name: str
    slug: str
    category: str
    url: str
    sha256: str

    def label(self) -> str:
        """``"Persian cat (n02123394, index 283)"``: how errors and logs name a class."""
        return f"{self.name} ({self.synset}, index {self.index})"


def _norm(text: str) -> str:
    """Case-fold and treat runs of spaces, underscores and hyphens as one space."""
    return _SEP_RE.sub(" ", text.strip().casefold()).strip()


def _norm_loose(text: str) -> str:
    """Like :func:`_norm`, and also ignore apostrophes and dots ("carpenters kit")."""
    return _norm(re.sub(r"['\u2019.]", "", text))


@functools.cache
def class_table() -> tuple[ClassInfo, ...]:
    """All 1000 classes, ordered by index (cached; read from the package data)."""
    text = resources.files("diffxai").joinpath("data", _TABLE).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    if tuple(reader.fieldnames or ()) != _COLUMNS:
        raise DiffxaiError(f"package data {_TABLE} has columns {reader.fieldnames}, expected {list(_COLUMNS)}")
    table = []
    for row in reader:
        table.append(ClassInfo(index=int(row["index"]), synset=row["synset"], name=row["name"],
                               slug=row["slug"], category=row["category"], url=row["url"],
                               sha256=row["sha256"].lower()))
    if [c.index for c in table] != list(range(len(table))):
        raise DiffxaiError(f"package data {_TABLE} is not ordered by index 0..{len(table) - 1}")
    return tuple(table)


@functools.cache
def _lookup() -> tuple[dict[str, ClassInfo], dict[str, ClassInfo], dict[str, list[ClassInfo]],
                       dict[str, list[ClassInfo]]]:
    """(synset → class, slug → class, normalised name → classes, loose name → classes)."""
    by_synset = {c.synset: c for c in class_table()}
    by_slug = {c.slug: c for c in class_table()}
    by_name: dict[str, list[ClassInfo]] = {}
    by_loose: dict[str, list[ClassInfo]] = {}
    for c in class_table():
        by_name.setdefault(_norm(c.name), []).append(c)
        by_loose.setdefault(_norm_loose(c.name), []).append(c)
    return by_synset, by_slug, by_name, by_loose


def _ambiguous(spec: str, candidates: list[ClassInfo]) -> DiffxaiError:
    listed = "; ".join(f"{c.name} = {c.synset} (index {c.index}, {c.category}, slug {c.slug})"
                       for c in candidates)
    return DiffxaiError(f"class name {spec!r} is ambiguous, it matches {len(candidates)} classes: "
                        f"{listed}; use the synset instead")


def _unknown(spec: str) -> DiffxaiError:
    by_synset, _, by_name, _ = _lookup()
    norm = _norm(spec)
    names = difflib.get_close_matches(norm, list(by_name), n=5, cutoff=0.6)
    # Near misses on the synset itself ("n0212339") are suggested too.
    synsets = difflib.get_close_matches(spec.strip().lower(), list(by_synset), n=3, cutoff=0.8)
    seen: list[ClassInfo] = []
    for c in [c for n in names for c in by_name[n]] + [by_synset[s] for s in synsets]:
        if c not in seen:
            seen.append(c)
    hint = ("; did you mean: " + ", ".join(f"{c.name} ({c.synset})" for c in seen)) if seen else \
        "; give a synset (n02123394), an index 0-999, a class name (Persian cat) or a slug (persian_cat)"
    return DiffxaiError(f"unknown class {spec!r}{hint}")


def resolve_class(spec: str | int) -> ClassInfo:
    """Resolve a synset, index, name or slug to its :class:`ClassInfo` (DiffxaiError if unknown/ambiguous)."""
    table = class_table()
    if isinstance(spec, bool):
        raise DiffxaiError(f"class spec {spec!r} is a boolean; give a synset, index, name or slug")
    if not isinstance(spec, str):
        try:
            index = operator.index(spec)  # int, numpy integer
        except TypeError:
            raise DiffxaiError(f"class spec {spec!r} has type {type(spec).__name__}; "
                               "give a synset, index, name or slug") from None
        if not 0 <= index < len(table):
            raise DiffxaiError(f"class index {index} is out of range 0-{len(table) - 1}")
        return table[index]

    text = spec.strip()
    if not text:
        raise DiffxaiError("empty class spec; give a synset, index, name or slug")
    if text.isascii() and text.isdigit():
        index = int(text)
        if index >= len(table):
            raise DiffxaiError(f"class index {text!r} is out of range 0-{len(table) - 1}")
        return table[index]
    by_synset, by_slug, by_name, by_loose = _lookup()
    if _SYNSET_RE.fullmatch(text.lower()):
        if text.lower() in by_synset:
            return by_synset[text.lower()]
        raise _unknown(spec)
    if text in by_slug:
        return by_slug[text]
    for key, index in ((_norm(text), by_name), (_norm_loose(text), by_loose)):
        candidates = index.get(key, [])
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise _ambiguous(spec, candidates)
    slug = by_slug.get(_norm(text).replace(" ", "_"))  # "Crane_N02012849", "crane-n02012849"
    if slug is not None:
        return slug
    raise _unknown(spec)


def resolve_classes(specs) -> list[ClassInfo]:
    """Resolve a list of specs (or the string ``"all"``) to classes, refusing duplicates."""
    if isinstance(specs, str):
        if specs.strip().casefold() == "all":
            return list(class_table())
        raise DiffxaiError(f"classes must be a list of class specs or 'all', got the string {specs!r}")
    if specs is None or len(specs) == 0:
        raise DiffxaiError("classes is empty; give a list of class specs or 'all'")
    seen: dict[int, object] = {}
    out: list[ClassInfo] = []
    for spec in specs:
        info = resolve_class(spec)
        if info.index in seen:
            raise DiffxaiError(f"class specs {seen[info.index]!r} and {spec!r} both name "
                               f"{info.label()}; list each class once")
        seen[info.index] = spec
        out.append(info)
    return out


def class_table_df():
    """The class table as a pandas DataFrame (columns index, synset, name, slug, category, url, sha256)."""
    import dataclasses

    import pandas as pd

    return pd.DataFrame([dataclasses.asdict(c) for c in class_table()], columns=list(_COLUMNS))


@functools.cache
def study_reference() -> tuple[float, dict[str, float]]:
    """(threshold, {slug: step k where the study's p(true) crosses it}) from the package data."""
    text = resources.files("diffxai").joinpath("data", _STUDY).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    thresholds = {float(r["threshold"]) for r in rows}
    if len(thresholds) != 1:
        raise DiffxaiError(f"package data {_STUDY} mixes thresholds {sorted(thresholds)}")
    return thresholds.pop(), {r["cls"]: float(r["crossing_step"]) for r in rows}
