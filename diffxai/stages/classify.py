"""rules/classify.smk: the classifier's softmax along every trajectory."""
from __future__ import annotations

import logging

from .. import paths
from .common import class_attrs, job_device, job_torch

log = logging.getLogger("diffxai.stages.classify")


@paths.files(noised=paths.NOISED, probs=paths.PROBS)
def classify(noised, probs, classes, classifier, batch_size, device):
    """p_true, entropy, pred, top5 per (image, seed, step) of each class ({cls: noised store} ->
    {cls: probs store}); one image's tensors in memory at a time."""
    import xarray as xr

    device = job_device(device, log, "classify.device")
    job_torch()
    from ..classify import classify_trajectory
    from ..models import load_classifier
    from ..store import open_store, write_dataset

    model = load_classifier(classifier, device)
    for c in classes:
        src, dst = noised[c["slug"]], probs[c["slug"]]
        nds = open_store(src)
        per_image = [classify_trajectory(model, nds.isel(image=i), int(c["index"]), device, int(batch_size))
                     for i in range(nds.sizes["image"])]
        pds = xr.concat(per_image, dim="image")
        # (concat leaves equal scalar coords scalar: with one image, image_file would lose its dim)
        pds = pds.assign_coords({k: ("image", nds[k].values) for k in ("image", "image_file", "image_sha256")})
        pds.attrs.update(class_attrs(c), classifier=classifier, device=device,
                         alphas_cumprod=nds.attrs["alphas_cumprod"], seeds=nds.attrs["seeds"],
                         schedule=nds.attrs["schedule"])
        write_dataset(pds, dst)
        p = pds["p_true"].values
        log.info("%s: p_true noisiest %.3f, cleanest %.3f (mean over %d images x %d seeds)", c["slug"],
                 p[..., 0].mean(), p[..., -1].mean(), p.shape[0], p.shape[1])
