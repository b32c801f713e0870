"""What carries a map's trend across the onset: the gradient, the input, or more than noising predicts.

IG and GradientSHAP maps are ``x`` times a gradient, so any trend of ``x`` imprints on them (Hooker
et al. 2019). Each metric with a trend in the map (its change after - before the onset lies beyond
the minimum effect, either way) is judged against its controls (:mod:`.controls`), read from the
phase table:

- ``{metric}_gradient_only`` (the method's own map without the ``x`` factor): when its change lies
  beyond the minimum in the map's direction, the trend is **carried by the gradient** (the model's
  sensitivity itself moves);
- else, when the gradient-only change falls short of the minimum in that direction and the map moves
  no more than ``|x|`` does (``{metric}_minus_input_abs`` change short of the minimum in the map's
  direction), the trend is **carried by the input**;
- ``spectral_centroid_minus_theory``: the map's spectral trend is **more than noising predicts**
  when that change lies beyond the minimum in the map's direction, **no more than noising predicts**
  when it falls short of it.

Anything else, and any missing control (Occlusion has no gradient-only map; a NaN or single-unit
CI), is ``undecided (<reason>)``: the same guard as every verdict (:func:`.verdicts.guard`).
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..registry import X_FACTOR_METHODS
from .metrics import JUDGED, THEORY_JUDGED
from .verdicts import (GUARD_TEXT, Verdict, _ev, _row, guard, judge_part, phase_reason, row_scope,
                       trend_direction, undecided)

CARRIED_BY_GRADIENT = "carried by the gradient"
CARRIED_BY_INPUT = "carried by the input"
BEYOND_THEORY, WITHIN_THEORY = "more than noising predicts", "no more than noising predicts"

CARRIER_RULE = (f"for a map trend (change after - before beyond the minimum effect, either way): "
                f"'{CARRIED_BY_GRADIENT}' if the method's gradient-only map changes beyond the minimum in the "
                f"same direction; '{CARRIED_BY_INPUT}' if it does not and (map - |x|) changes less than the "
                f"minimum in that direction; else undecided; {GUARD_TEXT}")
THEORY_RULE = (f"for a map trend: '{BEYOND_THEORY}' if (map - the theory's predicted centroid) changes beyond "
               f"the minimum in the map's direction; '{WITHIN_THEORY}' if it changes less; else undecided; "
               f"{GUARD_TEXT}")


def _rows(metric: str, control: str) -> tuple[str, str]:
    """Phase-table rows of a control: its own value and the paired difference (map - control)."""
    base, sel = (metric.split("[", 1) + [""])[:2]
    sel = f"[{sel}" if sel else ""
    return f"{base}_{control}{sel}", f"{base}_minus_{control}{sel}"


def _trend(table: pd.DataFrame, metric: str, d: float) -> tuple[int, str, tuple, pd.Series | None]:
    """(direction of the map's trend or 0, why not, evidence, row)."""
    own = _row(table, metric)
    ev = _ev(own, "after_minus_before")
    why = phase_reason(own, "after_minus_before") or guard([("map change", None if own is None else ev)])
    if why:
        return 0, why, ev, own
    s, why = trend_direction(ev[1], ev[2], d)
    return s, ("" if s else f"no trend in the map: {why}"), ev, own


def carrier_verdict(table: pd.DataFrame, cls: str, metric: str, d: float, method: str | None = None) -> Verdict:
    """Is ``metric``'s trend carried by the gradient or by the input? A ``method`` without an x factor
    (registry.X_FACTOR_METHODS) has no gradient-only control, and the verdict says so."""
    claim = f"what carries the {metric} trend"
    s, why, own_ev, own = _trend(table, metric, d)
    g_name, x_name = _rows(metric, "gradient_only")[0], _rows(metric, "input_abs")[1]
    g, x = _row(table, g_name), _row(table, x_name)
    g_ev, x_ev = _ev(g, "after_minus_before"), _ev(x, "after_minus_before")
    ev = {"map_change": own_ev[:3], "gradient_only_change": g_ev[:3], "map_minus_input_abs_change": x_ev[:3],
          "min_effect": d}
    scope = row_scope([own, g, x])
    if not s:
        return Verdict(claim, cls, undecided(why), CARRIER_RULE, ev, scope)
    if method is not None and method not in X_FACTOR_METHODS:
        return Verdict(claim, cls, undecided(f"{method} has no x factor, so no gradient-only control"),
                       CARRIER_RULE, ev, scope)
    why = guard([("gradient-only change", None if g is None else g_ev)])
    if why:
        return Verdict(claim, cls, undecided(why if g is not None else "no gradient-only control for this method"),
                       CARRIER_RULE, ev, scope)
    g_state, g_why = judge_part(g_ev[1], g_ev[2], s, 0.0, d)
    if g_state == "holds":
        return Verdict(claim, cls, CARRIED_BY_GRADIENT, CARRIER_RULE, ev, scope)
    why = guard([("map - |x| change", None if x is None else x_ev)])
    if why or g_state == "undecided":
        return Verdict(claim, cls, undecided(why or f"gradient-only change: {g_why}"), CARRIER_RULE, ev, scope)
    x_state, x_why = judge_part(x_ev[1], x_ev[2], s, 0.0, d)
    if x_state == "fails":
        return Verdict(claim, cls, CARRIED_BY_INPUT, CARRIER_RULE, ev, scope)
    return Verdict(claim, cls, undecided("neither the gradient nor |x| carries it" if x_state == "holds"
                                         else f"map - |x| change: {x_why}"), CARRIER_RULE, ev, scope)


def theory_verdict(table: pd.DataFrame, cls: str, metric: str, d: float) -> Verdict:
    """Is ``metric``'s trend more than forward noising alone predicts?"""
    claim = f"{metric} trend beyond noising's prediction"
    s, why, own_ev, own = _trend(table, metric, d)
    r = _row(table, _rows(metric, "theory")[1])
    r_ev = _ev(r, "after_minus_before")
    ev = {"map_change": own_ev[:3], "map_minus_theory_change": r_ev[:3], "min_effect": d}
    scope = row_scope([own, r])
    why = why or guard([("map - theory change", None if r is None else r_ev)])
    if why:
        return Verdict(claim, cls, undecided(why), THEORY_RULE, ev, scope)
    state, why = judge_part(r_ev[1], r_ev[2], s, 0.0, d)
    v = {"holds": BEYOND_THEORY, "fails": WITHIN_THEORY}.get(state, undecided(why))
    return Verdict(claim, cls, v, THEORY_RULE, ev, scope)


def control_verdicts(table: pd.DataFrame, cls: str, min_effect: Mapping[str, float],
                     method: str | None = None) -> list[Verdict]:
    """The carrier verdict of every judged metric (metrics.JUDGED), and the theory verdict of each metric
    with a theory control (the spectral centroid)."""
    out = [carrier_verdict(table, cls, m, float(min_effect.get(key, 0.0)), method) for m, key in JUDGED.items()]
    out += [theory_verdict(table, cls, m, float(min_effect.get(m, 0.0))) for m in THEORY_JUDGED]
    return out


def is_carrier_claim(claim: str) -> bool:
    return claim.startswith("what carries the ")


def is_control_claim(claim: str) -> bool:
    return is_carrier_claim(claim) or claim.endswith(" trend beyond noising's prediction")


def votes(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a verdict table that may vote in the combined verdict: a carrier verdict of a method
    without an x factor (it has no gradient-only control, so it says nothing about what carries a
    trend) does not vote; every other row does."""
    na = frame["claim"].map(is_carrier_claim) & ~frame["xai_method"].isin(X_FACTOR_METHODS)
    return frame[~na]
