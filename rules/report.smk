# A Markdown summary (onsets next to the study's) and cross-class aggregates.
rule report_md:
    input:
        onset="results/onset.csv",
        figures=[figure("softmax_curves")] + [figure(f"{m}_grid") for m in config["methods"]],
    output:
        md="results/report.md",
    params:
        config_summary={k: config[k] for k in ("classifier", "noise", "attribution", "onset")},
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
        histogram="results/summary/onset_histogram.png",
        extremes="results/summary/onset_extremes.csv",
    log:
        "results/logs/aggregate.log",
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/aggregate.py"
