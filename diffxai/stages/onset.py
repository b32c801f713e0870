"""rules/onset.smk: the onset tables."""
from __future__ import annotations

import logging

from .. import paths
from .common import open_all

log = logging.getLogger("diffxai.stages.onset")


@paths.files(probs=paths.PROBS)
def onset(probs, per_class, per_image, per_seed, classes, onset):
    """results/onset.csv (per class), onset_images.csv (per image), onset_seeds.csv (per image,
    seed) from the probs stores ({cls: store})."""
    from .. import onset as onset_mod
    from ..store import atomic_path

    dss = open_all({c["slug"]: probs[c["slug"]] for c in classes})
    pc, pi, ps = onset_mod.onset_tables(*onset_mod.curves_from_datasets(dss), **onset)
    for df, dst in ((pc, per_class), (pi, per_image), (ps, per_seed)):
        with atomic_path(dst) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4g")
    for _, r in pc.iterrows():
        log.info("%s: onset %.1f [%.1f, %.1f], %g-crossing %.1f, %d image(s), flags %s", r["cls"], r["onset"],
                 r["onset_lo"], r["onset_hi"], onset["threshold"], r["threshold_cross"], r["n_images"], r["flags"])
    bad = pi[pi["clean_wrong"]]
    for _, r in bad.iterrows():
        log.warning("%s image %d (%s): the classifier never gets it right clean", r["cls"], r["image"], r["image_file"])
