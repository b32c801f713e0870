# Per-timestep noised tensors (diffusers DDPMScheduler.add_noise) in Zarr.
for _shard, _members in SHARDS.items():

    rule:
        name:
            f"noise_{_shard}"
        input:
            images=[image_folder(s) for s in _members],
        output:
            stores=[directory(noised_store(s)) for s in _members],
        params:
            classes=class_params(_members),
            noise=config["noise"],
        log:
            f"results/logs/noise/{_shard}.log",
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/noise.py"
