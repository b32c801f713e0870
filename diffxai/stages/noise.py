"""rules/noise.smk: the noised trajectories."""
from __future__ import annotations

import logging
from pathlib import Path

from .. import paths
from .common import class_attrs, job_torch, read_manifest, versions

log = logging.getLogger("diffxai.stages.noise")


@paths.files(images=paths.IMAGES, noised=paths.NOISED)
def noise(images, noised, classes, noise):
    """x (image, seed, step, channel, y, x) per class ({cls: folder} -> {cls: store}), written
    image by image (one image's trajectories in memory)."""
    import numpy as np
    import xarray as xr
    from PIL import Image

    job_torch()
    from ..fetch import image_name
    from ..noise import image_to_x0, make_scheduler, noise_trajectory, seed_values, select_steps
    from ..store import StreamingStore, image_coords

    sched = make_scheduler(noise["num_train_timesteps"], noise["beta_schedule"],
                           noise["beta_start"], noise["beta_end"])
    ks = select_steps(noise["num_train_timesteps"], noise.get("steps"), noise.get("timesteps"))
    seeds = seed_values(noise["seeds"], noise.get("base_seed", 0))
    mode = noise.get("mode", "shared")
    for c in classes:
        folder, dst = images[c["slug"]], noised[c["slug"]]
        entries = read_manifest(folder)["images"]
        x0s = []
        for e in entries:
            with Image.open(Path(folder) / image_name(e["image"])) as im:
                x0s.append(image_to_x0(np.asarray(im.convert("RGB"))))
        first = noise_trajectory(x0s[0], sched, ks, seeds, mode, image=0)
        S, K, C, H, W = first["x"].shape
        I = len(entries)
        skeleton = xr.Dataset({"x0": (("image", "channel", "y", "x"), np.stack([x.numpy() for x in x0s]))},
                              coords={**{k: v for k, v in first.coords.items() if set(v.dims) <= {"seed", "step", "channel"}},
                                      **image_coords(entries)},
                              attrs={**first.attrs, **class_attrs(c), **versions()})
        with StreamingStore(dst, skeleton, "x", ("image", "seed", "step", "channel", "y", "x"),
                            (I, S, K, C, H, W), (1, 1, min(K, 10), C, H, W), compressors=None) as st:
            for i in range(I):
                ds = first if i == 0 else noise_trajectory(x0s[i], sched, ks, seeds, mode, image=i)
                for s in range(S):
                    st.write((i, s), ds["x"].values[s])
                del ds
            first = None
        log.info("%s: %d image(s) x %d seeds x %d steps (k=%d..%d) -> %s", c["slug"], I, S, K, ks[0], ks[-1], dst)
