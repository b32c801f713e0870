# Likelihood onset: logistic midpoint/onset, steepest rise, threshold crossing, bootstrap CIs.
rule onset:
    input:
        probs=by_class(paths.PROBS, SLUGS),
    output:
        per_class=paths.ONSET,
        per_image=paths.ONSET_IMAGES,
        per_seed=paths.ONSET_SEEDS,
    params:
        classes=class_params(SLUGS),
        onset=config["onset"],
    log:
        paths.log("onset"),
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/onset.py"
