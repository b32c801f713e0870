"""Constructed report inputs (onset tables, verdicts) for the report's golden-file test."""
import json
import math

import pandas as pd

NAN = math.nan
GS_SETTINGS = ({"n_samples": 20, "stdevs": 0.0, "baselines": "zero", "n_baselines": 1},
               {"n_samples": 8, "stdevs": 0.1, "baselines": "uniform", "n_baselines": 16})


def write_inputs(folder, variant: int) -> dict:
    """Report-stage keyword arguments (paths under ``folder``) for variant 0 or 1."""
    folder.mkdir(parents=True, exist_ok=True)
    onset = pd.DataFrame([
        {"cls": "tiger", "synset": "n02129604", "name": "tiger", "n_images": 3, "n_seeds": 2, "onset": 41.25,
         "onset_lo": 38.0, "onset_hi": 44.5, "midpoint": 47.04, "threshold_cross": 50.5, "threshold_cross_lo": NAN,
         "threshold_cross_hi": 55.0, "p_clean": 0.876, "flags": ""},
        {"cls": "persian_cat", "synset": "n02123394", "name": "Persian cat", "n_images": 1, "n_seeds": 4,
         "onset": NAN, "onset_lo": NAN, "onset_hi": NAN, "midpoint": NAN, "threshold_cross": NAN,
         "threshold_cross_lo": NAN, "threshold_cross_hi": NAN, "p_clean": 0.014, "flags": "no_rise;clean_wrong"},
        {"cls": "wombat", "synset": "n01883070", "name": "wombat", "n_images": 2, "n_seeds": 1, "onset": 60.0,
         "onset_lo": 59.96, "onset_hi": 60.04, "midpoint": 61.0, "threshold_cross": 70.0,
         "threshold_cross_lo": 69.0, "threshold_cross_hi": 71.0, "p_clean": 1.0, "flags": "narrow"},
    ][: 3 if variant == 0 else 2])
    images = pd.DataFrame([
        {"cls": "tiger", "image": 0, "image_file": "a.jpg", "onset": 40.0, "onset_lo": 39.0, "onset_hi": 41.0,
         "threshold_cross": 50.0, "p_clean": 0.9, "clean_top1": 1.0, "clean_wrong": False, "flags": ""},
        {"cls": "tiger", "image": 1, "image_file": "b c.jpg", "onset": NAN, "onset_lo": NAN, "onset_hi": NAN,
         "threshold_cross": NAN, "p_clean": 0.333, "clean_top1": 0.5, "clean_wrong": False, "flags": "no_rise"},
        {"cls": "persian_cat", "image": 0, "image_file": "p.jpg", "onset": NAN, "onset_lo": NAN, "onset_hi": NAN,
         "threshold_cross": NAN, "p_clean": 0.014, "clean_top1": 0.0, "clean_wrong": variant == 0, "flags": "x"},
    ])
    methods = ("integrated_gradients", "occlusion")
    rows = []
    for cls, syn in (("tiger", "n02129604"), ("persian_cat", "n02123394")):
        for claim, verdicts, rule in (
                ("outline first, details later", ("supported", "not supported"), "rule A, 40-60"),
                ("proper classification from 40-60", ("undecided (no onset)", "undecided (no onset)"), "rule B"),
                ("what carries the spectral_centroid trend", ("carried by the gradient", "undecided (no gradient-only "
                 "control for this method)"), "rule S"),
                ("low_freq_share rises", ("supported", "supported"), "rule L")):
            if variant == 1 and claim.startswith("outline"):
                continue
            for m, v in zip(methods, verdicts):
                rows.append({"claim": claim, "cls": cls, "synset": syn, "xai_method": m, "verdict": v,
                             "scope": "image (1 image, 4 seeds)", "rule": rule, "evidence": "k=1"})
            comb = verdicts[0] if verdicts[0] == verdicts[1] else \
                f"undecided (methods disagree: {verdicts[0]} vs {verdicts[1]})"
            rows.append({"claim": claim, "cls": cls, "synset": syn, "xai_method": "combined", "verdict": comb,
                         "scope": "image (1 image, 4 seeds)", "rule": rule if variant == 0 else "", "evidence": ""})
    verdicts = pd.DataFrame(rows)
    if variant == 1:  # no control verdicts at all
        verdicts = verdicts[~verdicts["claim"].str.startswith("what carries")]
    paths = {k: str(folder / f"{k}.csv") for k in ("onset", "onset_images", "verdicts", "phases")}
    onset.to_csv(paths["onset"], index=False, float_format="%.4g")
    images.to_csv(paths["onset_images"], index=False, float_format="%.4g")
    verdicts.to_csv(paths["verdicts"], index=False)
    pd.DataFrame({"cls": ["tiger"], "metric": ["m"], "before": [1.0]}).to_csv(paths["phases"], index=False)
    gs = GS_SETTINGS[variant]
    return {**paths, "figures": ["results/figures/softmax_curves.png", "x/y/occlusion_grid.png"],
            "config_summary": {"classifier": "efficientnet_lite0", "onset": {"threshold": 0.5, "ci": 0.95},
                               "noise": {"steps": [1, 2], "when": json.dumps(gs)}, "attribution": {"gradient_shap": gs}},
            "threshold": 0.5 if variant == 0 else 0.25, "gradient_shap": gs}
