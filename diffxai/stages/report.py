"""rules/report.smk: results/report.md (its prose is the template report/report.md.j2) and the
cross-class aggregates."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("diffxai.stages.report")

#: the report's template folder (the repository's report/, beside the Snakemake captions)
TEMPLATES = Path(__file__).resolve().parents[2] / "report"


def report(onset, onset_images, figures, verdicts, phases, md, config_summary, threshold, gradient_shap):
    """results/report.md, written once: the onsets next to the study's, the analysis verdict
    tables with their rules, and the note on GradientSHAP's settings."""
    import pandas as pd

    from ..store import atomic_path

    here = Path(md).resolve().parent
    figures = [os.path.relpath(Path(f).resolve(), here) for f in figures]   # embedded, relative to the report
    text = render_report(pd.read_csv(onset), pd.read_csv(onset_images), figures, pd.read_csv(verdicts),
                         config_summary, threshold, gradient_shap)
    with atomic_path(md) as tmp:
        Path(tmp).write_text(text)


def render_report(per_class, per_image, figures, verdicts, config_summary, threshold, gradient_shap) -> str:
    """The report's Markdown from the onset tables, the figure paths and the verdict table."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    return env.get_template("report.md.j2").render(**onset_context(per_class, per_image, figures, config_summary,
                                                                  threshold),
                                                   **verdict_context(verdicts, gradient_shap))


def _num(v) -> str:
    import pandas as pd

    return "–" if pd.isna(v) else f"{v:.1f}"


def _flags(v) -> str:
    """A flags cell: empty for none (the CSV reads an empty field back as NaN)."""
    import pandas as pd

    return "" if pd.isna(v) else f"{v}"


def onset_context(df, pi, figures, config_summary, threshold) -> dict:
    """The onset part's values: per-class and per-image rows (formatted cells), the study's
    crossings beside them, the figures and the settings."""
    import numpy as np

    from ..classes import study_reference

    study_threshold, study = study_reference()
    per_class = [{**{k: _num(r[k]) for k in ("onset", "onset_lo", "onset_hi", "midpoint", "threshold_cross",
                                             "threshold_cross_lo", "threshold_cross_hi")},
                  "name": f"{r['name']}", "synset": f"{r['synset']}", "n_images": f"{r['n_images']}",
                  "n_seeds": f"{r['n_seeds']}", "study": _num(study.get(r["cls"], np.nan)),
                  "p_clean": f"{r['p_clean']:.2f}", "flags": _flags(r["flags"])} for _, r in df.iterrows()]
    per_image = [{**{k: _num(r[k]) for k in ("onset", "onset_lo", "onset_hi", "threshold_cross")},
                  "cls": f"{r['cls']}", "image": f"{r['image']}", "image_file": f"{r['image_file']}",
                  "p_clean": f"{r['p_clean']:.2f}", "clean_top1": f"{r['clean_top1']:.0%}",
                  "clean_wrong": bool(r["clean_wrong"]), "flags": _flags(r["flags"])} for _, r in pi.iterrows()]
    return {"study_threshold": f"{study_threshold:g}", "threshold": f"{threshold:g}", "per_class": per_class,
            "per_image": per_image, "never": [r for r in per_image if r["clean_wrong"]],
            "figures": [{"name": Path(p).stem, "path": Path(p).as_posix()} for p in figures],
            "settings_json": json.dumps(config_summary, indent=1, sort_keys=True, default=str)}


def _short(verdict: str) -> str:
    """A combined verdict for a table cell: the per-method list is in the columns beside it."""
    return verdict.split(":", 1)[0] + ")" if verdict.startswith("undecided (methods disagree") else verdict


def verdict_context(vd, gradient_shap: dict) -> dict:
    """The verdict part's values: the answer (per claim and class the combined verdict and its
    scope); per claim of the study a table class x method with its rules; the control verdicts
    (what carries each trend) per method with their rules; the GradientSHAP settings."""
    from ..analysis.control_verdicts import is_control_claim
    from ..analysis.verdicts import STUDY_CLAIMS

    methods = [m for m in dict.fromkeys(vd["xai_method"]) if m != "combined"] + ["combined"]
    claims, answer = [], []
    for claim in STUDY_CLAIMS:
        sub = vd[vd["claim"] == claim]
        if sub.empty:
            continue
        rows = []
        for cls, g in sub.groupby("cls", sort=False):
            by = dict(zip(g["xai_method"], g["verdict"]))
            scope = "; ".join(dict.fromkeys(x for x in g.get("scope", []) if isinstance(x, str) and x)) or "–"
            rows.append({"cls": f"{cls}", "scope": scope,
                         "cells": {m: f"{by.get(m, '–')}" if m != "combined" else f"{_short(by.get(m, '–'))}"
                                   for m in methods}})
            answer.append({"claim": claim, "cls": f"{cls}", "scope": scope, "verdict": rows[-1]["cells"]["combined"]})
        claims.append({"name": claim, "rows": rows, "rules": [f"{r}" for r in dict.fromkeys(sub["rule"])]})
    is_ctl = vd["claim"].map(is_control_claim).astype(bool)
    per_method = vd[is_ctl & (vd["xai_method"] != "combined")]
    controls = [{"cls": f"{cls}", "claim": f"{claim}", "cells": dict(zip(g["xai_method"], g["verdict"]))}
                for (cls, claim), g in per_method.groupby(["cls", "claim"], sort=False)]
    gs = gradient_shap or {}
    return {"methods": methods, "claims": claims, "answer": answer,
            "control_methods": [m for m in methods if m != "combined"], "controls": controls,
            "control_rules": [f"{r}" for r in dict.fromkeys(per_method["rule"])],
            "gradient_shap_json": json.dumps(gs, sort_keys=True),
            "paper_gradient_shap": gs.get("baselines", "zero") == "zero" and not gs.get("stdevs")}


def aggregate(onset, by_category, by_category_png, by_category_pdf, histogram, histogram_pdf, extremes):
    """results/summary/: the onsets per category (table and figure), their histogram and the
    earliest and latest classes."""
    import pandas as pd

    from .. import aggregate as agg

    agg.summarise(pd.read_csv(onset), None, by_category=by_category, by_category_png=by_category_png,
                  by_category_pdf=by_category_pdf, histogram=histogram, histogram_pdf=histogram_pdf,
                  extremes=extremes)  # None: the packaged class table
