# Per-timestep noised tensors (diffusers DDPMScheduler.add_noise) in Zarr.
for _shard, _members in SHARDS.items():

    rule:
        name:
            f"noise_{_shard}"
        input:
            images=by_class(paths.IMAGES, _members),
        output:
            noised=[directory(p) for p in by_class(paths.NOISED, _members)],
        params:
            classes=class_params(_members),
            noise=config["noise"],
        log:
            paths.log(f"noise/{_shard}"),
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/noise.py"
