# Class images: images_per_class of them from image_dir (offline; <synset>/ subfolders or
# <synset>_*.jpg|jpeg|png), or the pinned original (https + sha256), to Resize+CenterCrop 8-bit RGB
# PNGs 000.png, 001.png, ... in one folder per class with manifest.json (provenance, duplicates,
# skipped files). The fetch output depends on the images' content (tracked_images: names and sha256
# of the files the job reads), not on how image_dir is spelled.
for _shard, _members in SHARDS.items():

    rule:
        name:
            f"fetch_image_{_shard}"
        output:
            images=[directory(p) for p in by_class(paths.IMAGES, _members)],
        params:
            classes=class_params(_members),
            image_dir=located(config["image_dir"]),
            download_dir=located(config["download_dir"]),
            tracked_images=tracked_images(_members),
            resize=config["image"]["resize"],
            crop=config["image"]["crop"],
            images_per_class=config["images_per_class"],
            image_seed=config["image_seed"],
            min_images_per_class=config["min_images_per_class"],
            skip_bad_images=config["skip_bad_images"],
        log:
            paths.log(f"fetch_image/{_shard}"),
        conda:
            ENV
        resources:
            **CPU_RES,
        script:
            "../scripts/fetch_image.py"
