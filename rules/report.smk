# A Markdown summary (onsets next to the study's, the analysis verdicts) and cross-class aggregates.
rule report_md:
    input:
        onset="results/onset.csv",
        onset_images="results/onset_images.csv",
        figures=[figure("softmax_curves")] + [figure(f"{m}_grid") for m in config["methods"]]
        + [figure(f"analysis_{s}") for s in SLUGS],
        verdicts="results/analysis/verdicts.csv",
        phases="results/analysis/phases.csv",
    output:
        md="results/report.md",
    params:
        config_summary={
            k: config[k] for k in ("classifier", "images_per_class", "noise", "attribution", "onset", "analysis")
        },
        threshold=config["onset"]["threshold"],
        gradient_shap=config["attribution"]["gradient_shap"],
    log:
        "results/logs/report_md.log",
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/report_md.py"


rule aggregate:
    input:
        onset="results/onset.csv",
    output:
        by_category=report(
            "results/summary/onset_by_category.csv",
            caption="../report/aggregate.rst",
            category="Across classes",
        ),
        by_category_png="results/summary/onset_by_category.png",
        by_category_pdf="results/summary/onset_by_category.pdf",
        histogram="results/summary/onset_histogram.png",
        histogram_pdf="results/summary/onset_histogram.pdf",
        extremes="results/summary/onset_extremes.csv",
    log:
        "results/logs/aggregate.log",
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/aggregate.py"
