# Figures of the study (PNG + PDF beside each), wrapped for `snakemake --report`.
rule figures_curves:
    input:
        probs=by_class(paths.PROBS, SLUGS),
        onset=paths.ONSET,
        onset_images=paths.ONSET_IMAGES,
    output:
        png=report(
            figure("softmax_curves"),
            caption="../report/softmax_curves.rst",
            category="Softmax along the trajectory",
        ),
        pdf=figure("softmax_curves", "pdf"),
    params:
        classes=class_params(SLUGS),
        threshold=config["onset"]["threshold"],
    log:
        paths.log("figures/softmax_curves"),
    conda:
        ENV
    resources:
        **CPU_RES,
    script:
        "../scripts/figure_curves.py"


for _method in config["methods"]:

    rule:
        name:
            f"figures_grid_{_method}"
        input:
            noised=by_class(paths.NOISED, SLUGS[:8]),
            attributions=by_class(paths.ATTRIBUTIONS, SLUGS[:8], _method),
            onset_images=paths.ONSET_IMAGES,  # which image represents each class
        output:
            png=report(
                figure(f"{_method}_grid"),
                caption="../report/method_grid.rst",
                category="Attribution maps",
                labels={"method": _method},
            ),
            pdf=figure(f"{_method}_grid", "pdf"),
        params:
            method=_method,
            classes=class_params(SLUGS[:8]),
            grid_steps=config["figures"]["grid_steps"],
            image=config["figures"]["image"],
        log:
            paths.log(f"figures/{_method}_grid"),
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/figure_grid.py"


for _shard, _members in SHARDS.items():

    rule:
        name:
            f"figures_onset_{_shard}"
        input:
            noised=by_class(paths.NOISED, _members),
            attributions=by_method_class(paths.ATTRIBUTIONS, _members),
            onset=paths.ONSET,
            onset_images=paths.ONSET_IMAGES,
        output:
            png=[
                report(
                    p,
                    caption="../report/onset_panels.rst",
                    category="Before, at and after the onset",
                    labels={"class": s},
                )
                for s, p in paths.ONSET_PNG.mapping(_members).items()
            ],
            pdf=by_class(paths.ONSET_PDF, _members),
        params:
            classes=class_params(_members),
            methods=config["methods"],
            offsets=config["figures"]["onset_offsets"],
            image=config["figures"]["image"],
        log:
            paths.log(f"figures/onset_{_shard}"),
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/figure_onset.py"
