"""Known-answer tests for every verdict rule on constructed phase tables: both directions, NaN, one
unit, ties (zero change), an effect below the minimum, and the registry the report reads."""
import numpy as np
import pandas as pd
import pytest

from diffxai.analysis import control_verdicts as CV
from diffxai.analysis import verdicts as V

D = 0.1                                     # the minimum effect used below
PART_CLAIMS = [c for c in V.CLAIMS if c.parts]
MASKS = {"outline", "detail", "face", "stripes", "interior", "silhouette"}


def _table(claim, centre, half=0.05, n_units=4, n_images=1, nan=False):
    """A phase table whose every part of ``claim`` has the CI reference + direction * (centre +- half)."""
    rows = {}
    for p in claim.parts:
        mid = p.reference + p.direction * centre
        row = rows.setdefault(p.row_name("abs"), {"metric": p.row_name("abs"), "n_units": n_units,
                                                  "n_images": n_images})
        row[p.tag], row[f"{p.tag}_lo"], row[f"{p.tag}_hi"] = mid, mid - half, mid + half
        if nan:
            row[f"{p.tag}_lo"] = row[f"{p.tag}_hi"] = np.nan
    return pd.DataFrame(list(rows.values()))


def _judge(claim, table):
    return V.judge_claim(claim, table, "c", MASKS, "abs", D)


@pytest.mark.parametrize("claim", PART_CLAIMS, ids=lambda c: c.key)
@pytest.mark.parametrize("centre,half,expected", [
    (3 * D, D, V.SUPPORTED),                                   # predicted direction, beyond the minimum
    (-3 * D, D, "not supported (opposite direction"),            # the other direction
    (0.5 * D, 0.3 * D, "not supported (negligible"),             # significant but inside (-min, min)
    (0.0, 0.5 * D, "not supported (negligible"),                  # a tie-like small spread around 0
    (-D, 1.5 * D, "not supported (effect below minimum"),        # includes 0, excludes an effect of min
    (D, 0.5 * D, "undecided (effect may be below minimum"),      # excludes 0, straddles the minimum
    (0.0, 5 * D, "undecided (CI includes 0"),
])
def test_every_part_rule_both_directions_and_the_minimum(claim, centre, half, expected):
    v = _judge(claim, _table(claim, centre, half))
    assert v.verdict.startswith(expected), v.verdict
    assert v.scope == "image (1 image, 4 seeds)" and f"{D:g}" in v.rule


@pytest.mark.parametrize("claim", PART_CLAIMS, ids=lambda c: c.key)
def test_missing_nan_one_unit_and_ties_are_undecided(claim):
    assert _judge(claim, _table(claim, 3 * D, nan=True)).verdict.startswith("undecided (")
    assert "no CI" in _judge(claim, _table(claim, 3 * D, nan=True)).verdict
    assert "1 (image, seed) unit" in _judge(claim, _table(claim, 3 * D, n_units=1)).verdict
    tie = _judge(claim, _table(claim, 0.0, half=0.0))            # every unit's change exactly 0
    assert tie.verdict.startswith("undecided (") and "zero-width" in tie.verdict
    assert _judge(claim, pd.DataFrame({"metric": []})).verdict.startswith("undecided (no ")
    # one part decided the wrong way does not decide the claim while another part has no evidence
    t = _table(claim, -3 * D)
    p = claim.parts[-1]
    t.loc[t["metric"] == p.row_name("abs"), f"{p.tag}_lo"] = np.nan
    assert _judge(claim, t).verdict.startswith("undecided (")


def test_estimate_without_units_and_missing_masks():
    c = V.BY_NAME["faces at the rise"]
    t = _table(c, 3 * D)
    t["around"] = np.nan
    assert "no estimate" in _judge(c, t).verdict
    assert V.faces_at_rise(t, "c", {"outline"}).verdict == "undecided (no face mask)"
    assert V.stripes_then_face(t, "c", {"face"}).verdict == "undecided (no stripes mask)"
    assert V.faces_at_rise(t, "c", {"face"}).verdict == "undecided (no silhouette mask for the face null)"
    assert V.class_verdicts("c", t, None, {"outline", "detail"})[0].verdict == \
        "undecided (no interior mask for the detail null)"


@pytest.mark.parametrize("lo,hi,direction,ref,d,state,why", [
    (0.2, 0.5, +1, 0, 0.1, "holds", ""),
    (-0.5, -0.2, -1, 0, 0.1, "holds", ""),
    (1.2, 1.5, +1, 1, 0.1, "holds", ""),                         # a level above the null's 1
    (1.02, 1.08, +1, 1, 0.1, "fails", "negligible"),
    (0.02, 0.08, +1, 0, 0.0, "holds", ""),                       # min 0: the plain CI-excludes-0 rule
    (-0.02, 0.08, +1, 0, 0.0, "undecided", "CI includes 0"),
    (-0.5, -0.2, +1, 0, 0.1, "fails", "opposite direction"),
])
def test_judge_part(lo, hi, direction, ref, d, state, why):
    assert V.judge_part(lo, hi, direction, ref, d) == (state, why)


@pytest.mark.parametrize("row,expected", [
    ({"threshold_cross": 50, "threshold_cross_lo": 45, "threshold_cross_hi": 55}, V.SUPPORTED),
    ({"threshold_cross": 70, "threshold_cross_lo": 65, "threshold_cross_hi": 75}, "not supported (crossing CI"),
    ({"threshold_cross": 30, "threshold_cross_lo": 25, "threshold_cross_hi": 35}, "not supported (crossing CI"),
    ({"threshold_cross": 58, "threshold_cross_lo": 55, "threshold_cross_hi": 63}, "undecided (CI overlaps"),
    ({"threshold_cross": np.nan, "threshold_cross_lo": np.nan, "threshold_cross_hi": np.nan},
     "undecided (p(true) never crosses 0.5)"),
    ({"threshold_cross": 50, "threshold_cross_lo": np.nan, "threshold_cross_hi": np.nan},
     "undecided (0.5-crossing: no CI"),
    ({"threshold_cross": 50, "threshold_cross_lo": 50, "threshold_cross_hi": 50},
     "undecided (0.5-crossing: zero-width"),
    ({"threshold_cross": 50, "threshold_cross_lo": 45, "threshold_cross_hi": 55, "n_images": 1, "n_seeds": 1},
     "undecided (0.5-crossing: 1 (image, seed) unit"),
])
def test_proper_classification(row, expected):
    v = V.proper_classification(row, "c")
    assert v.verdict.startswith(expected), v.verdict
    assert "[40, 60]" in v.rule


def test_proper_classification_scope():
    row = {"threshold_cross": 50, "threshold_cross_lo": 45, "threshold_cross_hi": 55, "n_images": 1, "n_seeds": 4}
    assert V.proper_classification(row, "c").scope == "image (1 image, 4 seeds)"


def _ctl(own, grad=None, minus_x=None, minus_theory=None, metric="spectral_centroid", n_units=4):
    """A phase table: the map's change and its controls' changes, each (estimate, lo, hi) or None."""
    base, sel = (metric.split("[", 1) + [""])[:2]
    sel = f"[{sel}" if sel else ""
    rows = [(metric, own), (f"{base}_gradient_only{sel}", grad), (f"{base}_minus_input_abs{sel}", minus_x),
            (f"{base}_minus_theory{sel}", minus_theory)]
    return pd.DataFrame([{"metric": name, "after_minus_before": m, "after_minus_before_lo": lo,
                          "after_minus_before_hi": hi, "n_units": n_units, "n_images": 1}
                         for name, v in rows if v is not None for m, lo, hi in [v]])


UP, DOWN, FLAT = (0.1, 0.05, 0.15), (-0.1, -0.15, -0.05), (0.0, -0.005, 0.005)


@pytest.mark.parametrize("own,grad,minus_x,expected", [
    (UP, UP, None, CV.CARRIED_BY_GRADIENT),                 # the gradient alone moves the same way
    (DOWN, DOWN, FLAT, CV.CARRIED_BY_GRADIENT),             # both directions
    (UP, FLAT, FLAT, CV.CARRIED_BY_INPUT),                  # gradient still; the map moves as |x| does
    (DOWN, UP, (0.01, 0.0, 0.02), CV.CARRIED_BY_INPUT),     # gradient the other way; map - |x| not down
    (UP, FLAT, UP, "undecided (neither the gradient nor |x| carries it"),
    (UP, None, FLAT, "undecided (no gradient-only control for this method"),   # Occlusion
    (UP, (np.nan,) * 3, FLAT, "undecided (gradient-only change: no estimate"),
    (UP, (0.1, np.nan, np.nan), FLAT, "undecided (gradient-only change: no CI"),
    (UP, (0.1, 0.1, 0.1), FLAT, "undecided (gradient-only change: zero-width CI"),   # a tie
    (UP, (0.05, 0.005, 0.09), FLAT, "undecided (gradient-only change: effect may be below minimum"),
    ((0.0, -0.1, 0.1), UP, FLAT, "undecided (no trend in the map: CI includes 0"),
    ((0.005, 0.002, 0.008), UP, FLAT, "undecided (no trend in the map: negligible"),
])
def test_what_carries_a_trend(own, grad, minus_x, expected):
    v = CV.carrier_verdict(_ctl(own, grad, minus_x), "c", "spectral_centroid", 0.01)
    assert v.verdict.startswith(expected), v.verdict
    assert v.claim == "what carries the spectral_centroid trend" and v.scope == "image (1 image, 4 seeds)"


def test_what_carries_a_trend_one_unit_and_enrichment_rows():
    assert CV.carrier_verdict(_ctl(UP, UP, n_units=1), "c", "spectral_centroid", 0.01).verdict.startswith(
        "undecided (map change: 1 (image, seed) unit")
    m = "enrichment[mask=outline,part=abs]"
    assert CV.carrier_verdict(_ctl(UP, UP, metric=m), "c", m, 0.01).verdict == CV.CARRIED_BY_GRADIENT
    # a method without an x factor: its (all-NaN) gradient-only row is not read as missing evidence
    for method in ("occlusion", "saliency"):
        assert CV.carrier_verdict(_ctl(UP, (np.nan,) * 3, FLAT), "c", "spectral_centroid", 0.01, method).verdict \
            == f"undecided ({method} has no x factor, so no gradient-only control)"
    assert CV.carrier_verdict(_ctl(UP, UP, FLAT), "c", "spectral_centroid", 0.01,
                              "gradient_shap").verdict == CV.CARRIED_BY_GRADIENT


@pytest.mark.parametrize("own,minus_theory,expected", [
    (UP, UP, CV.BEYOND_THEORY), (DOWN, DOWN, CV.BEYOND_THEORY), (UP, FLAT, CV.WITHIN_THEORY),
    (UP, (0.0, -0.05, 0.1), "undecided (CI includes 0"), (UP, None, "undecided (no map - theory change row"),
])
def test_trend_beyond_the_theory(own, minus_theory, expected):
    v = CV.theory_verdict(_ctl(own, minus_theory=minus_theory), "c", "spectral_centroid", 0.01)
    assert v.verdict.startswith(expected), v.verdict


def test_class_verdicts_follow_the_registry_and_the_config():
    c = V.BY_NAME["outline first, details later"]
    t = _table(c, 0.15, 0.02)
    tiger = V.class_verdicts("n02129604", t, None, {"outline", "detail", "interior"})
    assert [v.claim for v in tiger] == ["outline first, details later", "stripes then face",
                                        "proper classification from 40-60"]
    assert tiger[0].verdict == V.SUPPORTED                       # 0.13-0.17 beyond the default 0.1
    assert tiger[2].verdict == "undecided (no onset row for the class)"
    strict = V.class_verdicts("x", t, {"threshold_cross": 50, "threshold_cross_lo": 45, "threshold_cross_hi": 55},
                              {"outline", "detail", "interior"}, min_effect={"outline_first": 0.2})
    assert [v.claim for v in strict] == ["outline first, details later", "proper classification from 40-60"]
    assert strict[0].verdict == "not supported (negligible: outline change)"   # 0.13-0.17 inside (-0.2, 0.2)
    assert V.STUDY_CLAIMS == tuple(c.name for c in V.CLAIMS)
    from diffxai.analysis.metrics import BY_NAME        # every part reads a described metric
    assert all(p.metric.split("[")[0] in BY_NAME for c in V.CLAIMS for p in c.parts)
    assert set(V.defaults()["min_effect"]) >= {c.key for c in PART_CLAIMS}
    assert not hasattr(V, "DEFAULTS")    # the schema is the only source of the defaults


def test_combine_methods_and_the_voting_methods():
    rows = []
    for claim, votes in (("x", (V.SUPPORTED, V.SUPPORTED, V.SUPPORTED, "undecided (CI includes 0)")),
                         ("y", (V.SUPPORTED, "not supported (negligible)", V.SUPPORTED, V.SUPPORTED)),
                         ("z", ("undecided (no face mask)",) * 4),
                         ("w", ("not supported (negligible)", "not supported (opposite direction)",
                                "not supported (negligible)", V.SUPPORTED))):
        rows += [{"xai_method": m, "cls": "c", "claim": claim, "verdict": v, "scope": "image (1 image, 4 seeds)"}
                 for m, v in zip(("ig", "gs", "occ", "saliency"), votes)]
    f = pd.DataFrame(rows)
    out = V.combine_methods(f, ["ig", "gs", "occ"]).set_index("claim")
    assert out.loc["x", "verdict"] == V.SUPPORTED, "saliency does not vote"
    assert out.loc["y", "verdict"].startswith("undecided (methods disagree: ig: supported; gs: not supported")
    assert out.loc["z", "verdict"] == "undecided (no face mask)", "the same undecided everywhere stays itself"
    assert out.loc["w", "verdict"] == V.NOT_SUPPORTED
    assert out.loc["x", "scope"] == "image (1 image, 4 seeds)"
    assert "saliency" not in out.loc["x", "rule"] and "ig, gs, occ" in out.loc["x", "rule"]
    every = V.combine_methods(f).set_index("claim")
    assert every.loc["x", "verdict"].startswith("undecided (methods disagree")
    none = V.combine_methods(f, ["occlusion_typo"])
    assert (none["verdict"] == "undecided (no method to combine)").all() and len(none) == 4
    assert list(V.verdict_frame([V.Verdict("x", "c", V.SUPPORTED, "r")]).columns) == \
        ["claim", "cls", "verdict", "scope", "rule", "evidence"]


def test_docs_carry_the_registry_and_the_null_regions():
    from pathlib import Path

    from diffxai.analysis import spatial as S
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ANALYSIS.md").read_text()
    assert V.claims_markdown() in doc and S.null_regions_markdown() in doc


def test_no_onset_or_an_empty_phase_is_undecided():
    c = V.BY_NAME["outline first, details later"]
    t = _table(c, 3 * D)
    t["onset"] = np.nan                                          # onset.csv had no onset: no phases
    assert _judge(c, t).verdict == "undecided (no class onset: the phases are undefined)"
    t["onset"], t["n_before"], t["n_after"] = 5.0, 0, 40         # onset at the noisy end: nothing before it
    assert _judge(c, t).verdict == "undecided (no steps before the onset)"
    t["n_before"] = 3
    assert _judge(c, t).verdict == V.SUPPORTED


def _moving_relevance(outline_to_detail: bool, n_seed=4, k=40, hw=32, seed=0):
    """Stage enrichment of maps whose relevance moves from the outline band to the detail texture
    (or back) as the step grows; masks as the masks stage names them."""
    import torch
    import xarray as xr

    from diffxai.analysis import aligned as AL
    from diffxai.analysis import stage as ST
    yy, xx = np.mgrid[:hw, :hw]
    r = np.hypot(yy - hw / 2, xx - hw / 2)
    sil, interior = r < 12, r < 9
    outline = sil & ~interior
    detail = interior & ((yy // 2 + xx // 2) % 2 == 0)
    masks = {n: m[None] for n, m in (("silhouette", sil), ("outline", outline), ("interior", interior),
                                     ("detail", detail))}
    w = np.linspace(0, 1, k) if outline_to_detail else np.linspace(1, 0, k)
    rng = np.random.default_rng(seed)
    maps = ((1 - w)[:, None, None] * outline + w[:, None, None] * detail)[None, None] \
        + 0.3 * rng.random((1, n_seed, k, hw, hw))
    s = ST.merged_settings({"enrichment": {"parts": ["abs"], "n_null": 8}})
    data = ST.enrichment_block(torch.as_tensor(maps.astype(np.float32)), masks, s)
    ds = xr.Dataset(data, coords={"step": np.arange(k), "mask": list(masks), "part": ["abs"]})
    return AL.phase_table(ds, k / 2, ["enrichment_vs_null"], before=5, around=3, after=5)


def test_stage_enrichment_to_verdict_known_answer():
    """The whole chain on maps with a known answer: relevance moving outline -> detail supports
    'outline first', the reverse does not; the scope is the one image."""
    v = V.class_verdicts("c", _moving_relevance(True), None, {"silhouette", "outline", "interior", "detail"})[0]
    assert v.verdict == V.SUPPORTED and v.scope == "image (1 image, 4 seeds)"
    back = V.class_verdicts("c", _moving_relevance(False), None, {"silhouette", "outline", "interior", "detail"})[0]
    assert back.verdict.startswith("not supported (opposite direction")


def test_a_method_without_an_x_factor_does_not_vote_on_what_carries_a_trend():
    vd = pd.DataFrame({"claim": ["what carries the spectral_centroid trend"] * 3 + ["faces at the rise"] * 2,
                       "cls": "c", "xai_method": ["integrated_gradients", "gradient_shap", "occlusion",
                                                  "integrated_gradients", "occlusion"],
                       "verdict": [CV.CARRIED_BY_GRADIENT, CV.CARRIED_BY_GRADIENT,
                                   "undecided (occlusion has no x factor, so no gradient-only control)",
                                   V.SUPPORTED, "undecided (CI includes 0: face change)"]})
    comb = V.combine_methods(CV.votes(vd)).set_index("claim")["verdict"]
    assert comb["what carries the spectral_centroid trend"] == CV.CARRIED_BY_GRADIENT
    assert comb["faces at the rise"].startswith("undecided (methods disagree")   # Occlusion votes on claims
