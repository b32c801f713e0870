"""rules/fetch.smk: the class images."""
from __future__ import annotations

import logging

from .. import paths

log = logging.getLogger("diffxai.stages.fetch")


@paths.files(images=paths.IMAGES)
def fetch_image(images, classes, image_dir, download_dir, resize, crop, images_per_class=1,
                image_seed=None, min_images_per_class=None, skip_bad_images=False):
    """One folder per class (``images``: {cls: folder}): 000.png, 001.png, ... and manifest.json
    (diffxai.fetch)."""
    from ..classes import resolve_class
    from ..fetch import fetch_class_images

    for c in classes:
        out_dir = images[c["slug"]]
        info = resolve_class(c["synset"])
        m = fetch_class_images(info, out_dir, image_dir=image_dir, cache_dir=download_dir,
                               n=images_per_class, image_seed=image_seed,
                               min_images=min_images_per_class, skip_bad=skip_bad_images,
                               resize=resize, crop=crop)
        for w in m["warnings"] + [f"{r['file']}: {w}" for r in m["images"] for w in r["warnings"]]:
            log.warning("%s: %s", c["slug"], w)
        log.info("%s: %d image(s) <- %s (%s)", out_dir, len(m["images"]),
                 ", ".join(r["file"] for r in m["images"][:5]) + (" ..." if len(m["images"]) > 5 else ""),
                 m["order"])
