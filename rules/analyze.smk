# Analysis (issue 12; docs/ANALYSIS.md): what the attribution maps show, per method and class,
# every metric with its null or control beside it; then agreement between methods and seeds, the
# phase table and verdicts on the study's claims, and the analysis figures.
#
# The analysis jobs run where classify runs (analysis.device: auto = the GPU when torch sees one,
# no GPU claim): their costly part (deletion/insertion, randomization, the spectral controls) is
# bounded by analysis.subset and costs a fraction of the attribution, so holding a GPU slot for it
# would only queue it behind the attribution jobs. The per-method jobs read results/onset.csv: the
# costly subset is placed around each class's onset (analysis.subset.steps_relative_to_onset).
# Each rule's params carry only the analysis keys it reads: a verdict window change reruns the
# summary and the report, a mask change the per-method stores and what follows.


for _method in config["methods"]:
    for _shard, _members in SHARDS.items():

        rule:
            name:
                f"analyze_{_method}_{_shard}"
            input:
                noised=[noised_store(s) for s in _members],
                attributions=[attribution_store(_method, s) for s in _members],
                images=[image_folder(s) for s in _members],
                probs=[probs_store(s) for s in _members],
                onset="results/onset.csv",
            output:
                analyses=[directory(analysis_store(_method, s)) for s in _members],
            params:
                method=_method,
                settings=config["attribution"][_method],
                analysis={k: ANALYSIS[k] for k in ANALYSIS_METHOD_KEYS},
                classes=class_params(_members),
                classifier=config["classifier"],
                output=config["attribution"]["output"],
                device=ANALYSIS["device"],
                shared=_method == SHARED_CHECKS_METHOD,
                tracked_masks=tracked_masks(_members),
            log:
                f"results/logs/analyze_{_method}/{_shard}.log",
            benchmark:
                f"results/benchmarks/analyze_{_method}/{_shard}.tsv"
            conda:
                ENV
            resources:
                **CPU_RES,
            script:
                "../scripts/analyze.py"


for _shard, _members in SHARDS.items():

    rule:
        name:
            f"analyze_agreement_{_shard}"
        input:
            attributions=[attribution_store(m, s) for s in _members for m in config["methods"]],
        output:
            agreements=[directory(agreement_store(s)) for s in _members],
        params:
            classes=class_params(_members),
            methods=config["methods"],
            agreement=ANALYSIS["agreement"],
        log:
            f"results/logs/analyze_agreement/{_shard}.log",
        benchmark:
            f"results/benchmarks/analyze_agreement/{_shard}.tsv"
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/analyze_agreement.py"


rule analysis_summary:
    input:
        analyses=[analysis_store(m, s) for s in SLUGS for m in config["methods"]],
        agreements=[agreement_store(s) for s in SLUGS],
        onset="results/onset.csv",
    output:
        phases=report(
            "results/analysis/phases.csv",
            caption="../report/analysis_tables.rst",
            category="Analysis",
            labels={"table": "phases"},
        ),
        verdicts=report(
            "results/analysis/verdicts.csv",
            caption="../report/analysis_tables.rst",
            category="Analysis",
            labels={"table": "verdicts"},
        ),
        by_category="results/analysis/metrics_by_category.csv",
    params:
        classes=class_params(SLUGS),
        methods=config["methods"],
        analysis={k: ANALYSIS[k] for k in ("aligned", "verdicts")},
    log:
        "results/logs/analysis_summary.log",
    benchmark:
        "results/benchmarks/analysis_summary.tsv"
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/analysis_summary.py"


for _shard, _members in SHARDS.items():

    rule:
        name:
            f"figures_analysis_{_shard}"
        input:
            noised=[noised_store(s) for s in _members],
            images=[image_folder(s) for s in _members],
            attributions=[attribution_store(m, s) for s in _members for m in config["methods"]],
            analyses=[analysis_store(m, s) for s in _members for m in config["methods"]],
            agreements=[agreement_store(s) for s in _members],
            onset="results/onset.csv",
            onset_images="results/onset_images.csv",
        output:
            analysis_png=[
                report(
                    figure(f"analysis_{s}"),
                    caption="../report/analysis_metrics.rst",
                    category="Analysis",
                    subcategory="Metrics along the trajectory",
                    labels={"class": s},
                )
                for s in _members
            ],
            masks_png=[
                report(
                    figure(f"masks_{s}"),
                    caption="../report/analysis_masks.rst",
                    category="Analysis",
                    subcategory="Masks",
                    labels={"class": s},
                )
                for s in _members
            ],
            animation_gif=[
                report(
                    f"results/figures/animation_{s}.gif",
                    caption="../report/analysis_animation.rst",
                    category="Analysis",
                    subcategory="Animation",
                    labels={"class": s},
                )
                for s in _members
            ],
        params:
            classes=class_params(_members),
            methods=config["methods"],
            aligned=ANALYSIS["aligned"],
            image=config["figures"]["image"],
            animation_ms=ANALYSIS["figures"]["animation_ms"],
        log:
            f"results/logs/figures/analysis_{_shard}.log",
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/figure_analysis.py"
