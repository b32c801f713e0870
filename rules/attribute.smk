# One GPU rule per attribution method (and shard of classes). On a workstation with N GPUs,
# `--resources gpu=N` runs N of these at once; each job claims its own device (diffxai.gpu).
for _method in config["methods"]:
    for _shard, _members in SHARDS.items():

        rule:
            name:
                f"attribute_{_method}_{_shard}"
            input:
                noised=by_class(paths.NOISED, _members),
            output:
                attributions=[directory(p) for p in by_class(paths.ATTRIBUTIONS, _members, _method)],
            params:
                method=_method,
                settings=config["attribution"][_method],
                classes=class_params(_members),
                classifier=config["classifier"],
                seeds=config["attribution"]["seeds"],
                images=config["attribution"]["images"],
                target=config["attribution"]["target"],
                output=config["attribution"]["output"],
                device=config["attribution"]["device"],
                precision=config["attribution"]["precision"],
                batch_size=config["attribution"]["batch_size"],
                compile=config["attribution"]["compile"],
                check_error=config["attribution"]["check_error"],
                occlusion_tail=config["attribution"]["occlusion_tail"],
            log:
                paths.log(f"attribute_{_method}/{_shard}"),
            benchmark:
                paths.benchmark(f"attribute_{_method}/{_shard}")
            conda:
                ENV
            resources:
                gpu=1,
                **GPU_RES,
            script:
                "../scripts/attribute.py"
