# Analysis (docs/ANALYSIS.md): what the attribution maps show, per method and class,
# every metric with its null or control beside it; then agreement between methods and seeds, the
# phase table and verdicts on the study's claims, and the analysis figures.
#
# The per-method analysis jobs compute on a GPU where one is visible (analysis.device: auto): like
# classify they then ask for the `gpu` resource and claim their own device (device_resources in
# common.smk); their costly part (deletion/insertion, randomization, the spectral controls) is
# bounded by analysis.subset and costs a fraction of the attribution.
# The per-method jobs read results/onset.csv: the costly subset is placed around each class's
# onset (analysis.subset.steps_relative_to_onset).
# Each rule's params carry only the analysis keys it reads: a verdict window change reruns the
# summary and the report, a mask change the per-method stores and what follows.


for _method in config["methods"]:
    for _shard, _members in SHARDS.items():

        rule:
            name:
                f"analyze_{_method}_{_shard}"
            input:
                noised=by_class(paths.NOISED, _members),
                attributions=by_class(paths.ATTRIBUTIONS, _members, _method),
                images=by_class(paths.IMAGES, _members),
                probs=by_class(paths.PROBS, _members),
                onset=paths.ONSET,
            output:
                analyses=[directory(p) for p in by_class(paths.ANALYSES, _members, _method)],
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
                paths.log(f"analyze_{_method}/{_shard}"),
            benchmark:
                paths.benchmark(f"analyze_{_method}/{_shard}")
            conda:
                ENV
            resources:
                **device_resources(ANALYSIS["device"]),
            script:
                "../scripts/analyze.py"


for _shard, _members in SHARDS.items():

    rule:
        name:
            f"analyze_agreement_{_shard}"
        input:
            attributions=by_method_class(paths.ATTRIBUTIONS, _members),
        output:
            agreements=[directory(p) for p in by_class(paths.AGREEMENTS, _members)],
        params:
            classes=class_params(_members),
            methods=config["methods"],
            agreement=ANALYSIS["agreement"],
        log:
            paths.log(f"analyze_agreement/{_shard}"),
        benchmark:
            paths.benchmark(f"analyze_agreement/{_shard}")
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/analyze_agreement.py"


rule analysis_summary:
    input:
        analyses=by_method_class(paths.ANALYSES, SLUGS),
        agreements=by_class(paths.AGREEMENTS, SLUGS),
        onset=paths.ONSET,
    output:
        phases=report(
            paths.PHASES,
            caption="../report/analysis_tables.rst",
            category="Analysis",
            labels={"table": "phases"},
        ),
        verdicts=report(
            paths.VERDICTS,
            caption="../report/analysis_tables.rst",
            category="Analysis",
            labels={"table": "verdicts"},
        ),
        by_category=paths.METRICS_BY_CATEGORY,
    params:
        classes=class_params(SLUGS),
        methods=config["methods"],
        analysis={k: ANALYSIS[k] for k in ("aligned", "verdicts")},
    log:
        paths.log("analysis_summary"),
    benchmark:
        paths.benchmark("analysis_summary")
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
            noised=by_class(paths.NOISED, _members),
            images=by_class(paths.IMAGES, _members),
            attributions=by_method_class(paths.ATTRIBUTIONS, _members),
            analyses=by_method_class(paths.ANALYSES, _members),
            agreements=by_class(paths.AGREEMENTS, _members),
            onset=paths.ONSET,
            onset_images=paths.ONSET_IMAGES,
        output:
            analysis_png=[
                report(
                    p,
                    caption="../report/analysis_metrics.rst",
                    category="Analysis",
                    subcategory="Metrics along the trajectory",
                    labels={"class": s},
                )
                for s, p in paths.ANALYSIS_PNG.mapping(_members).items()
            ],
            masks_png=[
                report(
                    p,
                    caption="../report/analysis_masks.rst",
                    category="Analysis",
                    subcategory="Masks",
                    labels={"class": s},
                )
                for s, p in paths.MASKS_PNG.mapping(_members).items()
            ],
            animation_gif=[
                report(
                    p,
                    caption="../report/analysis_animation.rst",
                    category="Analysis",
                    subcategory="Animation",
                    labels={"class": s},
                )
                for s, p in paths.ANIMATION_GIF.mapping(_members).items()
            ],
        params:
            classes=class_params(_members),
            methods=config["methods"],
            aligned=ANALYSIS["aligned"],
            image=config["figures"]["image"],
            animation_ms=ANALYSIS["figures"]["animation_ms"],
        log:
            paths.log(f"figures/analysis_{_shard}"),
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/figure_analysis.py"
