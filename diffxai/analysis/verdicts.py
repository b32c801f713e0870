"""Rules that turn the phase tables and onset CIs into verdicts on the study's claims.

Every verdict is one of :data:`SUPPORTED`, :data:`NOT_SUPPORTED` or ``undecided (...)``, and comes
with the rule that produced it (a string for the report, written beside the verdict) and the
numbers it used. A CI "excludes 0" when lo > 0 or hi < 0; "change" is the paired after - before
(or around - before) change of :func:`diffxai.analysis.aligned.phase_table`.

Claims (study: Kim, Byeon, Park), with the metric rows they read:

- **outline first, details later** (every class; Wang & Vastola 2023): outline enrichment is higher
  before the onset than after AND detail enrichment higher after than before;
- **faces at the rise** (cat classes): the ``face`` mask's enrichment around the onset exceeds its
  enrichment before AND exceeds chance (1); needs a user ``face`` mask;
- **stripes then face** (tiger): ``stripes`` enrichment exceeds ``face`` enrichment before the
  onset and ``face`` exceeds ``stripes`` after; needs user ``stripes`` and ``face`` masks;
- **proper classification from 40-60** (every class): the class's 0.5-crossing of p(true) and its
  CI lie within the window.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

SUPPORTED, NOT_SUPPORTED = "supported", "not supported"


def undecided(why: str = "") -> str:
    return f"undecided ({why})" if why else "undecided"


@dataclass(frozen=True)
class Verdict:
    claim: str
    cls: str
    verdict: str
    rule: str
    evidence: dict = field(default_factory=dict)


def _row(table: pd.DataFrame, metric: str) -> pd.Series | None:
    r = table[table["metric"] == metric]
    return None if r.empty else r.iloc[0]


def _sign(row: pd.Series | None, tag: str) -> int:
    """+1 if the CI of ``tag`` lies above 0, -1 below, 0 if it includes 0 or is missing."""
    if row is None:
        return 0
    lo, hi = row.get(f"{tag}_lo", np.nan), row.get(f"{tag}_hi", np.nan)
    if np.isfinite(lo) and lo > 0:
        return 1
    if np.isfinite(hi) and hi < 0:
        return -1
    return 0


def _ci_reason(rows_tags) -> str:
    """Why a verdict is undecided: no CI at all (fewer than two units), or a CI that includes 0."""
    for row, tag in rows_tags:
        if row is not None and not (np.isfinite(row.get(f"{tag}_lo", np.nan))
                                    and np.isfinite(row.get(f"{tag}_hi", np.nan))):
            return "no CI: fewer than 2 (image, seed) units"
    return "CI includes 0"


def _ev(row: pd.Series | None, tag: str) -> tuple:
    if row is None:
        return (np.nan, np.nan, np.nan)
    return tuple(float(row.get(k, np.nan)) for k in (tag, f"{tag}_lo", f"{tag}_hi"))


def enrichment_metric(mask: str, part: str = "abs") -> str:
    """Row name of a mask's enrichment in the phase table (stage variable ``enrichment``)."""
    return f"enrichment[mask={mask},part={part}]"


OUTLINE_RULE = ("supported if the CI of outline enrichment (after - before onset) < 0 AND the CI of "
                "detail enrichment (after - before) > 0; not supported if either CI excludes 0 in "
                "the opposite direction; else undecided")


def outline_first(table: pd.DataFrame, cls: str, part: str = "abs") -> Verdict:
    """'Outline first, details later' from one class's (and method's) phase table."""
    o, d = _row(table, enrichment_metric("outline", part)), _row(table, enrichment_metric("detail", part))
    ev = {"outline_change": _ev(o, "after_minus_before"), "detail_change": _ev(d, "after_minus_before")}
    if o is None or d is None:
        return Verdict("outline first, details later", cls, undecided("no outline/detail rows"), OUTLINE_RULE, ev)
    so, sd = _sign(o, "after_minus_before"), _sign(d, "after_minus_before")
    if so == -1 and sd == 1:
        v = SUPPORTED
    elif so == 1 or sd == -1:
        v = NOT_SUPPORTED
    else:
        v = undecided(_ci_reason([(o, "after_minus_before"), (d, "after_minus_before")]))
    return Verdict("outline first, details later", cls, v, OUTLINE_RULE, ev)


FACE_RULE = ("supported if the CI of face enrichment (around - before onset) > 0 AND the CI of face "
             "enrichment around the onset > 1 (chance); not supported if the change CI < 0 or the "
             "around CI < 1; else undecided; needs a user 'face' mask")


def faces_at_rise(table: pd.DataFrame, cls: str, masks: set[str], part: str = "abs") -> Verdict:
    """'Faces at the rise' (cats) from the phase table; undecided without a face mask."""
    claim = "faces at the rise"
    if "face" not in masks:
        return Verdict(claim, cls, undecided("no face mask"), FACE_RULE)
    f = _row(table, enrichment_metric("face", part))
    ev = {"face_change": _ev(f, "around_minus_before"), "face_around": _ev(f, "around")}
    if f is None:
        return Verdict(claim, cls, undecided("no face row"), FACE_RULE, ev)
    ch = _sign(f, "around_minus_before")
    lo, hi = f.get("around_lo", np.nan), f.get("around_hi", np.nan)
    above = 1 if lo > 1 else (-1 if hi < 1 else 0)
    if ch == 1 and above == 1:
        v = SUPPORTED
    elif ch == -1 or above == -1:
        v = NOT_SUPPORTED
    else:
        v = undecided("CI includes 0 or 1")
    return Verdict(claim, cls, v, FACE_RULE, ev)


STRIPES_RULE = ("supported if the CI of (stripes - face) enrichment before the onset > 0 AND after "
                "the onset < 0; not supported if before < 0 or after > 0 with the CI excluding 0; "
                "else undecided; needs user 'stripes' and 'face' masks")


def stripes_then_face(table: pd.DataFrame, cls: str, masks: set[str], part: str = "abs") -> Verdict:
    """'Stripes then face' (tiger); reads the row ``stripes_minus_face`` the stage adds."""
    claim = "stripes then face"
    missing = sorted({"stripes", "face"} - set(masks))
    if missing:
        return Verdict(claim, cls, undecided(f"no {' and '.join(missing)} mask"), STRIPES_RULE)
    r = _row(table, f"stripes_minus_face[part={part}]")
    ev = {"before": _ev(r, "before"), "after": _ev(r, "after")}
    if r is None:
        return Verdict(claim, cls, undecided("no stripes_minus_face row"), STRIPES_RULE, ev)
    sb, sa = _sign(r, "before"), _sign(r, "after")
    if sb == 1 and sa == -1:
        v = SUPPORTED
    elif sb == -1 or sa == 1:
        v = NOT_SUPPORTED
    else:
        v = undecided(_ci_reason([(r, "before"), (r, "after")]))
    return Verdict(claim, cls, v, STRIPES_RULE, ev)


def proper_rule(window=(40, 60)) -> str:
    return (f"supported if the CI of the class's 0.5-crossing of p(true) lies within [{window[0]}, "
            f"{window[1]}]; not supported if the CI lies entirely outside; else undecided")


def proper_classification(onset_row: Mapping, cls: str, window=(40, 60)) -> Verdict:
    """'Proper classification from 40-60' from a row of ``results/onset.csv``."""
    est, lo, hi = (float(onset_row.get(k, np.nan)) for k in
                   ("threshold_cross", "threshold_cross_lo", "threshold_cross_hi"))
    ev = {"threshold_cross": (est, lo, hi)}
    a, b = window
    if not (np.isfinite(lo) and np.isfinite(hi)):
        v = undecided("no crossing CI" if np.isfinite(est) else "p(true) never crosses 0.5")
    elif a <= lo and hi <= b:
        v = SUPPORTED
    elif hi < a or lo > b:
        v = NOT_SUPPORTED
    else:
        v = undecided("CI overlaps the window's edge")
    return Verdict("proper classification from 40-60", cls, v, proper_rule(window), ev)


DEFAULT_CLAIM_CLASSES = {
    "faces at the rise": ["n02123394", "n02123597", "n02124075"],
    "stripes then face": ["n02129604"],
}


def class_verdicts(cls: str, table: pd.DataFrame, onset_row: Mapping | None, masks: set[str], *,
                   part: str = "abs", window=(40, 60), claim_classes: Mapping | None = None) -> list[Verdict]:
    """All verdicts that apply to one class (one method's table)."""
    cc = DEFAULT_CLAIM_CLASSES if claim_classes is None else claim_classes
    out = [outline_first(table, cls, part)]
    if cls in cc.get("faces at the rise", ()):
        out.append(faces_at_rise(table, cls, masks, part))
    if cls in cc.get("stripes then face", ()):
        out.append(stripes_then_face(table, cls, masks, part))
    if onset_row is not None:
        out.append(proper_classification(onset_row, cls, window))
    return out


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """Verdicts as a table (claim, cls, verdict, rule, evidence) for the report."""
    return pd.DataFrame([{"claim": v.claim, "cls": v.cls, "verdict": v.verdict, "rule": v.rule,
                          "evidence": repr(v.evidence)} for v in verdicts])


CONTROL_RULE = ("the spectral trend survives control C if the CI of the map's change (after - before) "
                "excludes 0 AND the CI of the change of (map - C), paired per unit, excludes 0 in the same "
                "direction; it does not survive if the map's change CI excludes 0 but the (map - C) change "
                "CI includes 0 or has the opposite sign; undecided if the map's own change CI includes 0")

SPECTRAL_CONTROLS = ("input_abs", "gradient_only", "theory")


def spectral_trend_survives(table: pd.DataFrame, cls: str, metric: str = "spectral_centroid",
                            controls=SPECTRAL_CONTROLS) -> list[Verdict]:
    """Does the map's spectral trend across the onset survive each control? Reads the rows
    ``{metric}`` and ``{metric}_minus_{control}`` that :func:`stage.summarize_class` adds."""
    own = _row(table, metric)
    s_own = _sign(own, "after_minus_before")
    out = []
    for c in controls:
        claim = f"{metric} trend survives the {c} control"
        r = _row(table, f"{metric}_minus_{c}")
        ev = {"map_change": _ev(own, "after_minus_before"), "diff_change": _ev(r, "after_minus_before")}
        if r is None:
            out.append(Verdict(claim, cls, undecided(f"no {c} control"), CONTROL_RULE, ev))
            continue
        if s_own == 0:
            v = undecided("no trend in the map")
        elif _sign(r, "after_minus_before") == s_own:
            v = SUPPORTED
        else:
            v = NOT_SUPPORTED
        out.append(Verdict(claim, cls, v, CONTROL_RULE, ev))
    return out


COMBINE_RULE = ("across methods: supported if every method's verdict is supported, not supported if "
                "every one is not supported, the methods' common verdict if they all give the same "
                "undecided, else undecided (methods disagree; their verdicts are listed)")


def combine_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (cls, claim): one verdict over the ``xai_method`` rows of a verdict table."""
    rows = []
    for (cls, claim), g in frame.groupby(["cls", "claim"], sort=False):
        vs = list(g["verdict"])
        if all(v == SUPPORTED for v in vs):
            v = SUPPORTED
        elif all(v == NOT_SUPPORTED for v in vs):
            v = NOT_SUPPORTED
        elif len(set(vs)) == 1:
            v = vs[0]
        else:
            v = undecided("methods disagree: " + "; ".join(f"{m}: {x}" for m, x in zip(g.get("xai_method", [""] * len(vs)), vs)))
        rows.append({"cls": cls, "claim": claim, "verdict": v, "rule": COMBINE_RULE})
    return pd.DataFrame(rows)
