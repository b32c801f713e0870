"""The analysis metrics, described once.

Each :class:`Metric` says what a variable of the analysis stage is (name, extra dims beyond
``(image, seed, step)``), which job computes it, which ``analysis:`` config blocks it reads, its
controls (``{name}_{control}`` variables), whether it enters the phase table, the panel it gets in
the metric figure and the rows the per-category summary keeps. Every list that used to repeat
these derives from :data:`METRICS`:

- :data:`SUMMARY_VARIABLES` (the phase table's variables, controls included) and :data:`CONTROLS`
  (``analysis.stage``), :data:`METHOD_INDEPENDENT` (what :func:`analysis.stage.combine` keeps once);
- :data:`PANELS` (``figures_analysis.metric_figure``);
- :data:`CATEGORY_METRICS` (``stages.analyze.category_summary``), :data:`JUDGED` and
  :data:`THEORY_JUDGED` (``analysis.control_verdicts``);
- :data:`METHOD_JOB_KEYS` (the config blocks the per-method analysis rule passes as params).

The claims that read these metrics are described in :data:`diffxai.analysis.verdicts.CLAIMS`.
Torch-free: the Snakefile imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Panel:
    """One row of the metric figure: ``selection`` of the metric's extra dims, the row ``title``
    and the ``chance`` level drawn as a dotted line (None: none)."""
    title: str
    selection: tuple[tuple[str, str], ...] = ()
    chance: float | None = None

    @property
    def sel(self) -> dict:
        return dict(self.selection)


@dataclass(frozen=True)
class Metric:
    name: str
    dims: tuple[str, ...] = ()                    # beyond (image, seed, step)
    job: str = "method"                           # method (analysis) | agreement | probs (classify's p_true)
    config: tuple[str, ...] = ()                  # analysis: blocks it reads
    controls: tuple[str, ...] = ()                # {name}_{control} variables beside it
    method_independent: bool = False              # the same for every method (kept once)
    summary: bool = True                          # a variable of the phase table
    panels: tuple[Panel, ...] = ()                # rows of the metric figure
    category: tuple[tuple[tuple[str, str], ...], ...] = ()   # selections the category summary keeps
    judged: tuple[tuple[tuple[tuple[str, str], ...], str], ...] = ()   # (selection, min_effect key) whose
    #                                               trend the control verdicts judge (analysis.control_verdicts)

    def row(self, selection: tuple[tuple[str, str], ...] = ()) -> str:
        """Its row name in the phase table for a selection of its extra dims, e.g.
        ``enrichment[mask=outline,part=abs]`` (the format of :func:`analysis.aligned.phase_table`)."""
        return self.name + ("[" + ",".join(f"{k}={v}" for k, v in selection) + "]" if selection else "")


_OUTLINE, _DETAIL = (("mask", "outline"), ("part", "abs")), (("mask", "detail"), ("part", "abs"))
_ATTR_BASE = (("fill", "baseline"), ("order", "attribution"))

METRICS: tuple[Metric, ...] = (
    Metric("p_true", job="probs", method_independent=True, panels=(Panel("p(true class)"),)),
    Metric("enrichment", ("mask", "part"), config=("masks", "enrichment"), controls=("gradient_only", "input_abs"),
           panels=(Panel("outline enrichment |a| (1 = chance); grey: |x|", _OUTLINE, 1.0),
                   Panel("detail enrichment |a| (1 = chance); grey: |x|", _DETAIL, 1.0)),
           category=(_OUTLINE, _DETAIL), judged=((_OUTLINE, "outline_first"), (_DETAIL, "outline_first"))),
    Metric("enrichment_null", ("mask", "part"), config=("masks", "enrichment")),
    Metric("enrichment_vs_null", ("mask", "part"), config=("masks", "enrichment")),
    Metric("stripes_minus_face", ("part",), config=("masks", "enrichment")),
    Metric("spectral_centroid", config=("spectral",), controls=("gradient_only", "input_abs", "theory"),
           panels=(Panel("centroid of |a| (cycles/px); grey: |x|; purple: noising (f*, dashed: kept)"),),
           category=((),), judged=(((), "spectral_centroid"),)),
    Metric("low_freq_share", config=("spectral",), controls=("gradient_only", "input_abs"),
           panels=(Panel("low-frequency share; grey: |x|"),), category=((),), judged=(((), "low_freq_share"),)),
    Metric("crossover_frequency", config=("theory",), method_independent=True),
    Metric("p_true_band", ("band",), config=("theory",), method_independent=True,
           panels=(Panel("p(true) of low- / high-pass inputs (cut at f*)"),)),
    Metric("method_spearman", ("pair",), job="agreement", config=("agreement",),
           panels=(Panel("method agreement (Spearman, 28x28)", chance=0.0),), category=((),)),
    Metric("method_overlap", ("pair",), job="agreement", config=("agreement",)),
    Metric("deletion_auc", ("fill", "order"), config=("subset", "faithfulness"), category=(_ATTR_BASE,)),
    Metric("insertion_auc", ("fill", "order"), config=("subset", "faithfulness"), category=(_ATTR_BASE,)),
    Metric("deletion_auc_raw", ("fill", "order"), config=("subset", "faithfulness"),
           panels=(Panel("deletion AUC of p(true); fill: solid baseline, -. noise; : random",
                         (("order", "attribution"),)),)),
    Metric("insertion_auc_raw", ("fill", "order"), config=("subset", "faithfulness")),
    Metric("randomization_spearman", ("depth",), config=("subset", "randomization")),
    Metric("randomization_ssim", ("depth",), config=("subset", "randomization")),
    Metric("seed_spearman", job="agreement", config=("agreement",), summary=False),
    Metric("seed_overlap", job="agreement", config=("agreement",), summary=False),
)
BY_NAME = {m.name: m for m in METRICS}

#: variables the stage stores beside the metrics, which are not metrics themselves: the deletion /
#: insertion curves behind the AUCs, where the costly checks ran, the masks used, and the cross-seed
#: method agreement (the chance level of method agreement)
AUXILIARY = ("deletion_curve", "insertion_curve", "p_before_deletion", "in_subset", "in_randomization_subset",
             "mask_pixels", "method_spearman_cross_seed", "method_overlap_cross_seed")

#: the config blocks of each control (analysis.controls switches the |x| and gradient-only ones on)
CONTROL_CONFIG = {"gradient_only": ("subset", "controls"), "input_abs": ("controls",), "theory": ("theory",)}
#: controls that do not depend on the method (computed from the input or the schedule)
METHOD_INDEPENDENT_CONTROLS = ("input_abs", "theory")


def control_name(metric: str, control: str) -> str:
    return f"{metric}_{control}"


def described(variable: str) -> Metric | None:
    """The metric a stage variable is, or is a control of (None: not described here)."""
    if variable in BY_NAME:
        return BY_NAME[variable]
    return next((m for m in METRICS for c in m.controls if variable == control_name(m.name, c)), None)


#: {metric: its controls} (``{metric}_{control}`` variables; see analysis.controls)
CONTROLS = {m.name: m.controls for m in METRICS if m.controls}

#: the phase table's variables: each summary metric followed by its controls' variables
SUMMARY_VARIABLES = tuple(
    [m.name for m in METRICS if m.summary]
    + [control_name(m.name, c) for m in METRICS if m.summary for c in m.controls])

#: variables that do not depend on the method: the stage's combine keeps one copy
METHOD_INDEPENDENT = tuple(
    [m.name for m in METRICS if m.method_independent]
    + [control_name(m.name, c) for m in METRICS for c in m.controls if c in METHOD_INDEPENDENT_CONTROLS])

#: (variable, selection, title, chance line) per row of the metric figure
PANELS = tuple((m.name, p.sel, p.title, p.chance) for m in METRICS for p in m.panels)

#: rows of the phase table the per-category summary keeps
CATEGORY_METRICS = tuple(m.row(sel) for m in METRICS for sel in m.category)


#: {phase-table row: the min_effect key}: the map trends the control verdicts judge
JUDGED = {m.row(sel): key for m in METRICS for sel, key in m.judged}
#: metrics judged against the theory's prediction (those with a ``theory`` control)
THEORY_JUDGED = tuple(m.name for m in METRICS if "theory" in m.controls)

#: the analysis: config blocks the per-method analysis jobs read (their params carry only these);
#: sorted, so that reordering :data:`METRICS` does not change the rule's params (and rerun it)
METHOD_JOB_KEYS = tuple(sorted(
    {k for m in METRICS if m.job == "method" for k in m.config}
    | {k for m in METRICS if m.job == "method" for c in m.controls for k in CONTROL_CONFIG[c]}))
