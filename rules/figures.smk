# Figures of the study (PNG + PDF beside each), wrapped for `snakemake --report`.
rule figures_curves:
    input:
        probs=[probs_store(s) for s in SLUGS],
        onset="results/onset.csv",
        onset_images="results/onset_images.csv",
    output:
        png=report(
            figure("softmax_curves"),
            caption="../report/softmax_curves.rst",
            category="Softmax along the trajectory",
        ),
        pdf="results/figures/softmax_curves.pdf",
    params:
        classes=class_params(SLUGS),
        threshold=config["onset"]["threshold"],
    log:
        "results/logs/figures/softmax_curves.log",
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
            noised=[noised_store(s) for s in SLUGS[:8]],
            attributions=[attribution_store(_method, s) for s in SLUGS[:8]],
            onset_images="results/onset_images.csv",  # which image represents each class
        output:
            png=report(
                figure(f"{_method}_grid"),
                caption="../report/method_grid.rst",
                category="Attribution maps",
                labels={"method": _method},
            ),
            pdf=f"results/figures/{_method}_grid.pdf",
        params:
            method=_method,
            classes=class_params(SLUGS[:8]),
            grid_steps=config["figures"]["grid_steps"],
            image=config["figures"]["image"],
        log:
            f"results/logs/figures/{_method}_grid.log",
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
            noised=[noised_store(s) for s in _members],
            attributions=[attribution_store(m, s) for s in _members for m in config["methods"]],
            onset="results/onset.csv",
            onset_images="results/onset_images.csv",
        output:
            png=[
                report(
                    figure(f"onset_{s}"),
                    caption="../report/onset_panels.rst",
                    category="Before, at and after the onset",
                    labels={"class": s},
                )
                for s in _members
            ],
            pdf=[f"results/figures/onset_{s}.pdf" for s in _members],
        params:
            classes=class_params(_members),
            methods=config["methods"],
            offsets=config["figures"]["onset_offsets"],
            image=config["figures"]["image"],
        log:
            f"results/logs/figures/onset_{_shard}.log",
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/figure_onset.py"
