# Class images: from image_dir (offline) or the pinned originals (https + sha256), to a
# Resize+CenterCrop 8-bit RGB PNG with a provenance JSON beside it.
for _shard, _members in SHARDS.items():

    rule:
        name:
            f"fetch_image_{_shard}"
        output:
            png=[image_png(s) for s in _members],
            meta=[f"resources/images/{s}.json" for s in _members],
        params:
            classes=class_params(_members),
            image_dir=config["image_dir"],
            resize=config["image"]["resize"],
            crop=config["image"]["crop"],
        log:
            f"results/logs/fetch_image/{_shard}.log",
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/fetch_image.py"
