"""Rules that turn the phase tables and onset CIs into verdicts on the study's claims.

Every verdict is :data:`SUPPORTED`, ``not supported (<why>)`` or ``undecided (<why>)``, and comes
with the rule that produced it (a string for the report, written beside the verdict), the numbers
it used and its **scope**: a CI over the seeds of one image speaks about that image, one over
images about the class (:func:`diffxai.analysis.aligned.scope`).

The claims are described once, in :data:`CLAIMS` (name, the metric rows and CI each reads, the
predicted direction, the minimum effect's config key, the classes it applies to); the report's
claim list (:data:`STUDY_CLAIMS`) and every rule text derive from it.

**One guard for every rule** (:func:`guard`): a part whose row is missing, whose estimate or CI is
NaN, whose CI rests on fewer than two (image, seed) units, or whose CI has zero width (all units
equal, e.g. ties) makes the verdict ``undecided (<reason>)``: missing evidence is never a verdict.

**Minimum effect** ``d`` (``analysis.verdicts.min_effect``, one per claim): each part predicts that
a quantity lies beyond a reference (a change beyond 0, a level beyond the null's 1) in one direction.
In the predicted orientation, with the CI ``[L, U]`` of (quantity - reference):

- ``L >= d`` (and ``L > 0``): the part **holds** (an effect of at least ``d`` in the predicted way);
- ``U < d``: the part **fails** -> not supported; why: ``opposite direction`` (U < 0),
  ``negligible`` (the CI inside (-d, d)), else ``effect below minimum`` (the CI excludes an effect of
  ``d`` without excluding 0);
- otherwise **undecided**: ``effect may be below minimum`` (CI excludes 0 but straddles ``d``) or
  ``CI includes 0``.

A claim holds when every part holds; it is not supported when any part fails; else undecided.
With ``d = 0`` this is the plain "CI excludes 0" rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .aligned import scope as _scope
from .spatial import NULL_REGIONS

SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
UNDECIDED = "undecided"


def undecided(why: str = "") -> str:
    return f"{UNDECIDED} ({why})" if why else UNDECIDED


def not_supported(why: str = "") -> str:
    return f"{NOT_SUPPORTED} ({why})" if why else NOT_SUPPORTED


def is_supported(verdict: str) -> bool:
    return verdict == SUPPORTED


def is_not_supported(verdict: str) -> bool:
    return verdict.startswith(NOT_SUPPORTED)


@dataclass(frozen=True)
class Verdict:
    claim: str
    cls: str
    verdict: str
    rule: str
    evidence: dict = field(default_factory=dict)
    scope: str = ""


def enrichment_metric(mask: str, part: str = "abs") -> str:
    """Row name of a mask's raw enrichment in the phase table (stage variable ``enrichment``)."""
    return f"enrichment[mask={mask},part={part}]"


def vs_null_metric(mask: str, part: str = "abs") -> str:
    """Row name of a mask's enrichment relative to its region-constrained null (what verdicts read)."""
    return f"enrichment_vs_null[mask={mask},part={part}]"


# ---------------------------------------------------------------- the claims, described once
@dataclass(frozen=True)
class Part:
    """One CI a claim reads: the phase-table row ``metric`` (``{part}`` filled in), its column
    ``tag``, the predicted ``direction`` (+1 above ``reference``, -1 below), a short ``name`` (for
    reasons and evidence) and a ``label`` (for the rule text)."""
    name: str
    label: str
    metric: str
    tag: str
    direction: int
    reference: float = 0.0

    def row_name(self, part: str) -> str:
        return self.metric.format(part=part)

    def text(self) -> str:
        rel = ">" if self.direction > 0 else "<"
        return f"{self.label} {rel} {self.reference:g}"


@dataclass(frozen=True)
class Claim:
    key: str                      # id in analysis.verdicts.min_effect
    name: str                     # as the report and verdicts.csv write it
    summary: str                  # the claim in words, with its source
    parts: tuple[Part, ...]       # empty: a rule of its own (proper classification)
    masks: tuple[str, ...] = ()   # masks it needs (user masks for faces and stripes)
    every_class: bool = True      # False: only the classes in analysis.verdicts.claim_classes[name]


_VS = "enrichment_vs_null[mask={mask},part={{part}}]"
CLAIMS: tuple[Claim, ...] = (
    Claim("outline_first", "outline first, details later",
          "the map's relevance moves from the object's outline to its details as noise falls "
          "(every class; Wang & Vastola 2023)",
          (Part("outline change", "outline enrichment vs its null, change after - before the onset",
                _VS.format(mask="outline"), "after_minus_before", -1),
           Part("detail change", "detail enrichment vs its null, change after - before the onset",
                _VS.format(mask="detail"), "after_minus_before", +1)),
          masks=("outline", "detail")),
    Claim("faces_at_rise", "faces at the rise",
          "the face draws relevance when p(true) rises (cat classes)",
          (Part("face change", "face enrichment vs its null, change around - before the onset",
                _VS.format(mask="face"), "around_minus_before", +1),
           Part("face vs null around", "face enrichment vs its null around the onset (1 = the null)",
                _VS.format(mask="face"), "around", +1, 1.0)),
          masks=("face",), every_class=False),
    Claim("stripes_then_face", "stripes then face",
          "the tiger's stripes draw relevance before the onset, its face after (tiger)",
          (Part("stripes - face before", "stripes minus face enrichment vs null, before the onset",
                "stripes_minus_face[part={part}]", "before", +1),
           Part("stripes - face after", "stripes minus face enrichment vs null, after the onset",
                "stripes_minus_face[part={part}]", "after", -1)),
          masks=("stripes", "face"), every_class=False),
    Claim("proper_classification", "proper classification from 40-60",
          "the classifier's p(true) crosses 0.5 within steps 40-60 (every class)", ()),
)
BY_NAME = {c.name: c for c in CLAIMS}
#: the report's claim list, in order
STUDY_CLAIMS = tuple(c.name for c in CLAIMS)

def defaults() -> dict:
    """``analysis.verdicts`` defaults: config/schema.yaml's (with the reasons there), a fresh copy."""
    from ..config import schema_defaults

    return schema_defaults("analysis")["verdicts"]


GUARD_TEXT = ("missing rows, NaN estimates or CIs, CIs from fewer than 2 (image, seed) units and "
              "zero-width CIs give undecided")


def rule_text(claim: Claim, min_effect: float = 0.0) -> str:
    """The rule of a part-based claim, in words, with its minimum effect."""
    parts = "; ".join(p.text() for p in claim.parts)
    return (f"supported if every part's CI lies beyond its reference by at least "
            f"{min_effect:g} in the predicted direction [{parts}]; not supported if any part's CI lies "
            f"short of that minimum (opposite direction, negligible, or effect below minimum); else "
            f"undecided (CI includes 0, or effect may be below minimum); {GUARD_TEXT}")


def proper_rule(window=(40, 60)) -> str:
    return (f"supported if the CI of the class's 0.5-crossing of p(true) lies within [{window[0]}, "
            f"{window[1]}]; not supported if the CI lies entirely outside; else undecided (no minimum "
            f"effect: the window's width is the tolerance); {GUARD_TEXT}")


# ---------------------------------------------------------------- evidence and the one guard
def _row(table: pd.DataFrame, metric: str) -> pd.Series | None:
    if "metric" not in table:
        return None
    r = table[table["metric"] == metric]
    return None if r.empty else r.iloc[0]


def _f(row, key) -> float:
    try:
        return float(row.get(key, np.nan))
    except (TypeError, ValueError):
        return np.nan


def _ev(row: pd.Series | None, tag: str) -> tuple:
    """(estimate, lo, hi, n_units) of ``tag`` in ``row``; NaN (and n = NaN) where absent."""
    if row is None:
        return (np.nan, np.nan, np.nan, np.nan)
    return (_f(row, tag), _f(row, f"{tag}_lo"), _f(row, f"{tag}_hi"), _f(row, "n_units"))


def guard(evidence: Sequence[tuple[str, tuple | None]]) -> str | None:
    """The reason a verdict must be undecided, or None. ``evidence``: (label, (est, lo, hi, n)) per
    part, None where the row is missing. ``n`` NaN = not recorded (only the CI is checked)."""
    for label, ev in evidence:
        if ev is None:
            return f"no {label} row"
        est, lo, hi, n = ev
        if np.isfinite(n) and n < 2:
            return f"{label}: {int(n)} (image, seed) unit{'s' if n != 1 else ''}, no CI"
        if not np.isfinite(est):
            return f"{label}: no estimate (no finite units)"
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return f"{label}: no CI (fewer than 2 (image, seed) units)"
        if hi <= lo:
            return f"{label}: zero-width CI (every unit equal)"
    return None


def judge_part(lo: float, hi: float, direction: int, reference: float = 0.0,
               min_effect: float = 0.0) -> tuple[str, str]:
    """('holds' | 'fails' | 'undecided', why) of one finite CI; see the module docstring."""
    a, b = direction * (lo - reference), direction * (hi - reference)
    low, up, d = min(a, b), max(a, b), float(min_effect)
    if low >= d and low > 0:
        return "holds", ""
    if up < d:
        if up < 0:
            return "fails", "opposite direction"
        return "fails", "negligible" if low > -d else "effect below minimum"
    return "undecided", "effect may be below minimum" if low > 0 else "CI includes 0"


def combine_parts(states: Sequence[tuple[str, str, str]]) -> str:
    """One verdict from (label, state, why) per part: all hold -> supported; any fails -> not
    supported (why: the first failing part); else undecided (the first undecided part's why)."""
    failed = [(lab, why) for lab, st, why in states if st == "fails"]
    if failed:
        return not_supported(f"{failed[0][1]}: {failed[0][0]}")
    open_ = [(lab, why) for lab, st, why in states if st == "undecided"]
    if open_:
        return undecided(f"{open_[0][1]}: {open_[0][0]}")
    return SUPPORTED


def phase_reason(row: pd.Series | None, tag: str) -> str | None:
    """Why a phase-table CI cannot exist: no class onset, or a phase the tag reads has no steps."""
    if row is None:
        return None
    if "onset" in row.index and not np.isfinite(_f(row, "onset")):
        return "no class onset: the phases are undefined"
    for ph in ("before", "around", "after"):
        if ph in tag.split("_minus_") and f"n_{ph}" in row.index and _f(row, f"n_{ph}") == 0:
            return f"no steps {ph} the onset"
    return None


def row_scope(rows: Sequence[pd.Series | None]) -> str:
    """The scope of the rows' CIs ('class (N images)' / 'image (1 image, N seeds)'), joined if they differ."""
    out = []
    for r in rows:
        if r is not None and np.isfinite(_f(r, "n_images")):
            out.append(_scope(int(_f(r, "n_images")), int(_f(r, "n_units"))))
    return "; ".join(dict.fromkeys(out))


# ---------------------------------------------------------------- rules
def judge_claim(claim: Claim, table: pd.DataFrame, cls: str, masks: set[str] | None = None,
                part: str = "abs", min_effect: float = 0.0) -> Verdict:
    """A part-based claim from one class's (and method's) phase table."""
    rule = rule_text(claim, min_effect)
    missing = sorted(m for m in claim.masks if masks is not None and m not in masks)
    if missing:
        return Verdict(claim.name, cls, undecided(f"no {' and '.join(missing)} mask"), rule)
    for m in claim.masks:                       # the enrichment's null needs its region's mask
        reg = NULL_REGIONS.get(m, "image")
        if masks is not None and reg != "image" and reg not in masks:
            return Verdict(claim.name, cls, undecided(f"no {reg} mask for the {m} null"), rule)
    rows = [_row(table, p.row_name(part)) for p in claim.parts]
    evs = [_ev(r, p.tag) for r, p in zip(rows, claim.parts)]
    evidence = {p.name: ev[:3] for p, ev in zip(claim.parts, evs)}
    evidence["min_effect"] = float(min_effect)
    scope = row_scope(rows)
    why = next((w for w in (phase_reason(r, p.tag) for p, r in zip(claim.parts, rows)) if w), None) or \
        guard([(p.row_name(part) if r is None else p.name, None if r is None else ev)
               for p, r, ev in zip(claim.parts, rows, evs)])
    if why:
        return Verdict(claim.name, cls, undecided(why), rule, evidence, scope)
    states = [(p.name, *judge_part(ev[1], ev[2], p.direction, p.reference, min_effect))
              for p, ev in zip(claim.parts, evs)]
    return Verdict(claim.name, cls, combine_parts(states), rule, evidence, scope)


def outline_first(table: pd.DataFrame, cls: str, part: str = "abs", min_effect: float | None = None) -> Verdict:
    """'Outline first, details later' from one class's (and method's) phase table."""
    d = defaults()["min_effect"]["outline_first"] if min_effect is None else min_effect
    return judge_claim(BY_NAME["outline first, details later"], table, cls, None, part, d)


def faces_at_rise(table: pd.DataFrame, cls: str, masks: set[str], part: str = "abs",
                  min_effect: float | None = None) -> Verdict:
    """'Faces at the rise' (cats); undecided without a face mask."""
    d = defaults()["min_effect"]["faces_at_rise"] if min_effect is None else min_effect
    return judge_claim(BY_NAME["faces at the rise"], table, cls, set(masks), part, d)


def stripes_then_face(table: pd.DataFrame, cls: str, masks: set[str], part: str = "abs",
                      min_effect: float | None = None) -> Verdict:
    """'Stripes then face' (tiger); reads the row ``stripes_minus_face`` the stage adds."""
    d = defaults()["min_effect"]["stripes_then_face"] if min_effect is None else min_effect
    return judge_claim(BY_NAME["stripes then face"], table, cls, set(masks), part, d)


def proper_classification(onset_row: Mapping, cls: str, window=(40, 60)) -> Verdict:
    """'Proper classification from 40-60' from a row of ``results/onset.csv``."""
    est, lo, hi = (_f(onset_row, k) for k in ("threshold_cross", "threshold_cross_lo", "threshold_cross_hi"))
    n_img, n_seed = _f(onset_row, "n_images"), _f(onset_row, "n_seeds")
    n = n_img * n_seed if np.isfinite(n_img) and np.isfinite(n_seed) else np.nan
    scope = _scope(int(n_img), int(n_seed)) if np.isfinite(n_img) and np.isfinite(n_seed) else ""
    claim, rule = BY_NAME["proper classification from 40-60"].name, proper_rule(window)
    ev = {"threshold_cross": (est, lo, hi)}
    if not np.isfinite(est):
        return Verdict(claim, cls, undecided("p(true) never crosses 0.5"), rule, ev, scope)
    why = guard([("0.5-crossing", (est, lo, hi, n))])
    a, b = window
    if why:
        v = undecided(why)
    elif a <= lo and hi <= b:
        v = SUPPORTED
    elif hi < a or lo > b:
        v = not_supported("crossing CI outside the window")
    else:
        v = undecided("CI overlaps the window's edge")
    return Verdict(claim, cls, v, rule, ev, scope)


def applies(claim: Claim, cls: str, claim_classes: Mapping) -> bool:
    return claim.every_class or cls in claim_classes.get(claim.name, ())


def class_verdicts(cls: str, table: pd.DataFrame, onset_row: Mapping | None, masks: set[str], *,
                   part: str = "abs", window=(40, 60), claim_classes: Mapping | None = None,
                   min_effect: Mapping | None = None) -> list[Verdict]:
    """All verdicts that apply to one class (one method's table), in :data:`CLAIMS` order."""
    dv = defaults()
    cc = dv["claim_classes"] if claim_classes is None else claim_classes
    me = {**dv["min_effect"], **(min_effect or {})}
    out = []
    for c in CLAIMS:
        if not applies(c, cls, cc):
            continue
        if c.parts:
            out.append(judge_claim(c, table, cls, set(masks), part, float(me[c.key])))
        elif onset_row is None:
            out.append(Verdict(c.name, cls, undecided("no onset row for the class"), proper_rule(window)))
        else:
            out.append(proper_classification(onset_row, cls, window))
    return out


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """Verdicts as a table (claim, cls, verdict, scope, rule, evidence) for the report."""
    return pd.DataFrame([{"claim": v.claim, "cls": v.cls, "verdict": v.verdict, "scope": v.scope,
                          "rule": v.rule, "evidence": repr(v.evidence)} for v in verdicts],
                        columns=["claim", "cls", "verdict", "scope", "rule", "evidence"])


def combine_rule(methods: Sequence[str] | None = None) -> str:
    over = f" ({', '.join(methods)})" if methods else ""
    return (f"across methods{over}: supported if every method's verdict is supported, not supported if "
            "every one is not supported, the methods' common verdict if they all give the same "
            "undecided, else undecided (methods disagree; their verdicts are listed); methods outside "
            "analysis.verdicts.combine_methods are reported but not combined")


def _combined(vs: list[str], ms: list[str]) -> str:
    if not vs:
        return undecided("no method to combine")
    if all(is_supported(v) for v in vs):
        return SUPPORTED
    if all(is_not_supported(v) for v in vs):
        return vs[0] if len(set(vs)) == 1 else NOT_SUPPORTED
    if len(set(vs)) == 1:
        return vs[0]
    return undecided("methods disagree: " + "; ".join(f"{m}: {x}" for m, x in zip(ms, vs)))


def combine_methods(frame: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (cls, claim): one verdict over the ``xai_method`` rows of a verdict table; ``methods``
    (``analysis.verdicts.combine_methods``; None = every method in the table) are the ones combined."""
    rows = []
    for (cls, claim), g in frame.groupby(["cls", "claim"], sort=False):
        if methods is not None and "xai_method" in g:
            g = g[g["xai_method"].isin(list(methods))]
        vs = list(g["verdict"])
        ms = list(g["xai_method"]) if "xai_method" in g else [""] * len(vs)
        scopes = list(dict.fromkeys(s for s in g.get("scope", pd.Series(dtype=str)).fillna("") if s))
        rows.append({"cls": cls, "claim": claim, "verdict": _combined(vs, ms), "scope": "; ".join(scopes),
                     "rule": combine_rule(methods)})
    return pd.DataFrame(rows, columns=["cls", "claim", "verdict", "scope", "rule"])


# ---------------------------------------------------------------- a trend in either direction
def trend_direction(lo: float, hi: float, min_effect: float = 0.0) -> tuple[int, str]:
    """(+1 | -1, '') when a finite CI lies beyond +-min_effect, else (0, why)."""
    up, why_up = judge_part(lo, hi, +1, 0.0, min_effect)
    if up == "holds":
        return 1, ""
    down, why_down = judge_part(lo, hi, -1, 0.0, min_effect)
    if down == "holds":
        return -1, ""
    whys = ([w for st, w in ((up, why_up), (down, why_down)) if st == "undecided"]
            or [w for w in (why_up, why_down) if w != "opposite direction"] or [why_up])
    return 0, whys[0]


def claims_markdown() -> str:
    """The registry as a Markdown table (docs/ANALYSIS.md carries it; a test keeps them equal)."""
    dv = defaults()
    me, cc = dv["min_effect"], dv["claim_classes"]
    out = ["| claim | what it says | classes | reads (phase-table row: CI) | predicted | min effect (default) "
           "| masks |",
           "|---|---|---|---|---|---|---|"]
    for c in CLAIMS:
        classes = "every class" if c.every_class else ", ".join(cc.get(c.name, []))
        if not c.parts:
            w = dv["proper_window"]
            out.append(f"| {c.name} | {c.summary} | {classes} | `results/onset.csv`: threshold_cross | CI within "
                       f"[{w[0]}, {w[1]}] | – (the window is the tolerance) | – |")
            continue
        reads = "<br>".join(f"`{p.row_name('abs')}`: {p.tag}" for p in c.parts)
        pred = "<br>".join(f"{'>' if p.direction > 0 else '<'} {p.reference:g}" for p in c.parts)
        out.append(f"| {c.name} | {c.summary} | {classes} | {reads} | {pred} | `{c.key}`: {me[c.key]:g} | "
                   f"{', '.join(c.masks)} |")
    return "\n".join(out)
