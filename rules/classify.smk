# Softmax of the classifier for every noised image (on a GPU where one is visible: the job asks for
# the `gpu` resource and claims its own device, see device_resources in common.smk).
for _shard, _members in SHARDS.items():

    rule:
        name:
            f"classify_{_shard}"
        input:
            noised=by_class(paths.NOISED, _members),
        output:
            probs=[directory(p) for p in by_class(paths.PROBS, _members)],
        params:
            classes=class_params(_members),
            classifier=config["classifier"],
            batch_size=config["classify"]["batch_size"],
            device=config["classify"]["device"],
        log:
            paths.log(f"classify/{_shard}"),
        conda:
            ENV
        resources:
            **device_resources(config["classify"]["device"]),
        script:
            "../scripts/classify.py"
