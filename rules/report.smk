# A Markdown summary (onsets next to the study's) and cross-class aggregates.
rule report_md:
    input:
        onset="results/onset.csv",
        onset_images="results/onset_images.csv",
        figures=[figure("softmax_curves")] + [figure(f"{m}_grid") for m in config["methods"]],
    output:
        md="results/report.md",
    params:
        config_summary={k: config[k] for k in ("classifier", "images_per_class", "noise", "attribution", "onset")},
        threshold=config["onset"]["threshold"],
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
