# Softmax of the classifier for every noised image.
for _shard, _members in SHARDS.items():

    rule:
        name:
            f"classify_{_shard}"
        input:
            noised=[noised_store(s) for s in _members],
        output:
            probs=[directory(probs_store(s)) for s in _members],
        params:
            classes=class_params(_members),
            classifier=config["classifier"],
            batch_size=config["classify"]["batch_size"],
            device=config["classify"]["device"],
        log:
            f"results/logs/classify/{_shard}.log",
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/classify.py"
