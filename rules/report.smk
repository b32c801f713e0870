# A Markdown summary (onsets next to the study's, the analysis verdicts) and cross-class aggregates.
rule report_md:
    input:
        onset=paths.ONSET,
        onset_images=paths.ONSET_IMAGES,
        figures=[figure("softmax_curves")]
        + [figure(f"{m}_grid") for m in config["methods"]]
        + by_class(paths.ANALYSIS_PNG, SLUGS),
        verdicts=paths.VERDICTS,
        phases=paths.PHASES,
    output:
        md=paths.REPORT,
    params:
        config_summary={
            k: config[k] for k in ("classifier", "images_per_class", "noise", "attribution", "onset", "analysis")
        },
        threshold=config["onset"]["threshold"],
        gradient_shap=config["attribution"]["gradient_shap"],
    log:
        paths.log("report_md"),
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/report_md.py"


rule aggregate:
    input:
        onset=paths.ONSET,
    output:
        by_category=report(
            paths.summary("onset_by_category.csv"),
            caption="../report/aggregate.rst",
            category="Across classes",
        ),
        by_category_png=paths.summary("onset_by_category.png"),
        by_category_pdf=paths.summary("onset_by_category.pdf"),
        histogram=paths.summary("onset_histogram.png"),
        histogram_pdf=paths.summary("onset_histogram.pdf"),
        extremes=paths.summary("onset_extremes.csv"),
    log:
        paths.log("aggregate"),
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/aggregate.py"
