# Likelihood onset: logistic midpoint/onset, steepest rise, threshold crossing, bootstrap CIs.
rule onset:
    input:
        probs=[probs_store(s) for s in SLUGS],
    output:
        per_class="results/onset.csv",
        per_image="results/onset_images.csv",
        per_seed="results/onset_seeds.csv",
    params:
        classes=class_params(SLUGS),
        onset=config["onset"],
    log:
        "results/logs/onset.log",
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/onset.py"
