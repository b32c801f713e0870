"""The analysis stage's wiring: the engine adapter against the real engine and Captum, the schema
against the core's defaults, and the report's verdict section."""
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from captum.attr import GradientShap, IntegratedGradients
from torch import nn

from diffxai.analysis import randomization as RA
from diffxai.analysis import stage as ST
from diffxai.analysis import verdicts as V
from diffxai.attribution import EngineOptions, method_spec
from diffxai.config import validate_config
from diffxai.stages.report import render_report, verdict_context

from conftest import REPO


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


def _inputs(n=3, h=12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, h, h, generator=g), torch.tensor([0, 2, 4][:n])


def test_engine_adapter_gradient_only_ig_equals_captum():
    """The analysis control (IG with multiply_by_inputs=False) through the real engine is Captum's
    IntegratedGradients(multiply_by_inputs=False), channel-summed."""
    model, (x, t) = _model(), _inputs()
    fn = ST.engine_attribute_fn(method_spec("integrated_gradients", {"n_steps": 8, "multiply_by_inputs": False}),
                                EngineOptions())
    got = fn(model, x, t)
    ref = IntegratedGradients(model, multiply_by_inputs=False).attribute(
        x, baselines=0.0, target=t, n_steps=8, method="gausslegendre").sum(1)
    assert got.shape == (3, 12, 12)
    torch.testing.assert_close(got, ref.detach(), rtol=1e-4, atol=1e-6)
    # and the default (x factor) differs from it by exactly x: IG = x * mean gradient
    ig = ST.engine_attribute_fn(method_spec("integrated_gradients", {"n_steps": 8}), EngineOptions())(model, x, t)
    full = IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=8).sum(1).detach()
    torch.testing.assert_close(ig, full, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ig, got)


def test_engine_adapter_gradient_shap_zero_baseline_is_an_ig_estimate():
    """GradientSHAP (zero baseline, stdevs 0) through the engine: its mean over many samples
    approaches IG's map (the report's note), its few-sample maps do not equal it."""
    model, (x, t) = _model(), _inputs()
    gs = ST.engine_attribute_fn(method_spec("gradient_shap", {"n_samples": 1000, "stdevs": 0.0}), EngineOptions())
    ig = IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=64).sum(1).detach()
    got = gs(model, x, t)
    rel = (got - ig).norm() / ig.norm()
    assert rel < 0.2, float(rel)
    ref = GradientShap(model).attribute(x, baselines=torch.zeros(1, 3, 12, 12), target=t, n_samples=1000).sum(1)
    assert ((ref.detach() - ig).norm() / ig.norm()) < 0.2


def test_engine_adapter_sees_randomized_weights():
    """Cascading randomization through the engine: the engine's prepared-model cache must follow
    the in-place re-initialisation, so the similarity to the original map drops."""
    model, (x, t) = _model(), _inputs()
    fn = ST.engine_attribute_fn(method_spec("integrated_gradients", {"n_steps": 4}), EngineOptions())
    res = RA.cascading_randomization(model, x, t, fn, [("fc", ["4"]), ("conv", ["0"])], seed=42)
    assert res["depth"] == ["original", "fc", "conv"]
    np.testing.assert_allclose(res["spearman"][:, 0], 1.0, atol=1e-6)
    assert (res["spearman"][:, -1] < 0.99).all()


def test_the_schema_is_the_only_source_of_analysis_defaults():
    """The stage fills its settings from config/schema.yaml's analysis block (no copy of its own), so
    a validated config and the stage's defaults agree key for key."""
    from diffxai.config import schema_defaults

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.pop("analysis", None)   # (the preview sets lighter costly checks)
    validate_config(cfg, REPO / "config" / "schema.yaml")
    assert cfg["analysis"] == ST.merged_settings(None) == schema_defaults("analysis")
    assert not hasattr(ST, "DEFAULTS")
    s = ST.merged_settings({"subset": {"seeds": None}})
    assert s["subset"]["seeds"] is None and s["subset"]["images"] == cfg["analysis"]["subset"]["images"]


def test_paper_config_checks_at_the_studys_settings():
    """config/paper.yaml: deletion/insertion with >= 10 fractions and >= 5 random orders on every
    seed around each class's onset and at the noisy end, both fills; randomization at the noisy end,
    the onset and the clean end."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for k, v in paper.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    cfg["analysis"] = paper["analysis"]
    validate_config(cfg, REPO / "config" / "schema.yaml")
    a = cfg["analysis"]
    assert len(a["faithfulness"]["fractions"]) >= 10 and a["faithfulness"]["n_random"] >= 5
    assert a["faithfulness"]["fills"] == ["baseline", "noise"]
    assert a["subset"]["seeds"] is None and a["subset"]["images"] is None
    steps = np.arange(100)
    sub = ST.subset_steps(steps, a["subset"], onset=50.0)
    assert list(steps[sub]) == [0, 35, 50, 65]
    rand = ST.subset_steps(steps, {**a["subset"], **a["randomization"]["subset"]}, onset=50.0)
    assert list(steps[rand]) == [0, 50, 99]


def test_a_nested_command_line_analysis_setting_is_typed():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["analysis"] = {"subset": {"steps_every": "5", "steps": "[0, 99]"}, "verdicts": {"proper_window": "[30, 70]"}}
    validate_config(cfg, REPO / "config" / "schema.yaml")
    assert cfg["analysis"]["subset"]["steps"] == [0, 99] and cfg["analysis"]["verdicts"]["proper_window"] == [30, 70]


def _verdicts_md(vd, gradient_shap) -> str:
    """The report's verdict part (rendered with empty onset tables)."""
    md = render_report(pd.DataFrame(), pd.DataFrame(), [], vd, {}, 0.5, gradient_shap)
    assert verdict_context(vd, gradient_shap)["methods"][-1] == "combined"
    return md[md.index("## Verdicts"):]


def test_verdict_section_has_every_claim_rule_and_the_gradient_shap_note():
    vs = [V.outline_first(pd.DataFrame({"metric": []}), "n02129604"),
          V.proper_classification({"threshold_cross": 50, "threshold_cross_lo": 45, "threshold_cross_hi": 55},
                                  "n02129604"),
          V.stripes_then_face(pd.DataFrame({"metric": []}), "n02129604", {"outline", "detail"})]
    vd = pd.concat([V.verdict_frame(vs).assign(xai_method=m) for m in ("integrated_gradients", "occlusion")])
    comb = V.combine_methods(vd).assign(xai_method="combined", evidence="")
    vd = pd.concat([vd, comb]).assign(cls="tiger")
    md = _verdicts_md(vd, {"n_samples": 20, "stdevs": 0.0, "baselines": "zero"})
    for claim in ("outline first, details later", "stripes then face", "proper classification from 40-60"):
        assert f"### {claim}" in md
    assert "| tiger | – | supported | supported | **supported** |" in md      # 45-55 lies in 40-60
    assert "| tiger | – | undecided (no face and stripes mask) | undecided (no face and stripes mask) | " \
           "**undecided (no face and stripes mask)** |" in md
    assert "| class | scope | integrated_gradients | occlusion | combined |" in md
    vd2 = vd.copy()
    vd2.loc[(vd2["xai_method"] == "occlusion") & (vd2["claim"].str.startswith("proper")), "verdict"] = V.NOT_SUPPORTED
    comb2 = V.combine_methods(vd2[vd2["xai_method"] != "combined"]).assign(xai_method="combined", evidence="")
    md2 = _verdicts_md(pd.concat([vd2[vd2["xai_method"] != "combined"], comb2]).assign(cls="tiger"), {})
    assert "| tiger | – | supported | not supported | **undecided (methods disagree)** |" in md2
    assert md.count("Rule: ") >= 3 and "Monte-Carlo estimate" in md and "paper config" in md
    assert "config/gradient_shap_noise.yaml" in md
