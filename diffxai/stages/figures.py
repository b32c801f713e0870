"""rules/figures.smk: the study's figures."""
from __future__ import annotations

import logging

from .. import paths
from .common import open_all

log = logging.getLogger("diffxai.stages.figures")


def _representatives(onset_images, slugs, attributed: dict, image) -> dict:
    """{cls: (image index, why)}: ``image`` if given, else the attributed image nearest the class
    median of the per-image onsets (see figures.representative_image)."""
    import pandas as pd

    from ..figures import representative_image

    table = pd.read_csv(onset_images)
    return {s: representative_image(table[table["cls"] == s], attributed[s], image) for s in slugs}


@paths.files(probs=paths.PROBS)
def figure_curves(probs, onset, onset_images, png, pdf, classes, threshold):
    """The softmax curves of every class ({cls: probs store}) with the onsets and the study's."""
    import pandas as pd

    from .. import figures
    from ..classes import study_reference

    dss = open_all({c["slug"]: probs[c["slug"]] for c in classes})
    study_threshold, study = study_reference()
    figures.softmax_curves(dss, pd.read_csv(onset), png, study={k: v for k, v in study.items() if k in dss},
                           threshold=threshold, study_threshold=study_threshold, pdf=pdf)


@paths.files(noised=paths.NOISED, attributions=paths.ATTRIBUTIONS)
def figure_grid(noised, attributions, onset_images, png, pdf, method, classes, grid_steps, image=None):
    """One method's maps (``attributions``: {cls: store}) of each class's representative image."""
    from .. import figures

    slugs = [c["slug"] for c in classes]
    nds = open_all({s: noised[s] for s in slugs})
    ads = open_all({s: attributions[s] for s in slugs})
    rep = _representatives(onset_images, slugs, {s: list(ads[s]["image"].values) for s in slugs}, image)
    labels = {s: f"image {rep[s][0]} ({nds[s]['image_file'].values[rep[s][0]]})" for s in slugs}
    steps = figures.pick_steps(ads[slugs[0]]["step"].values, grid_steps)
    figures.method_grid(method, {s: nds[s].sel(image=rep[s][0]) for s in slugs},
                        {s: ads[s].sel(image=rep[s][0]) for s in slugs}, steps, png, pdf=pdf,
                        image_labels=labels,
                        image_note=(f"figures.image = {image}" if image is not None
                                    else "the attributed image nearest its class's median onset"))


@paths.files(noised=paths.NOISED, attributions=paths.ATTRIBUTIONS, png=paths.ONSET_PNG, pdf=paths.ONSET_PDF)
def figure_onset(noised, attributions, onset, onset_images, png, pdf, classes, methods, offsets, image=None):
    """Per class: every method's maps before, at and after the onset (``attributions``:
    {method: {cls: store}}; ``png``/``pdf``: {cls: path})."""
    import pandas as pd

    from .. import figures
    from ..store import open_store

    table = pd.read_csv(onset).set_index("cls")
    per_image = pd.read_csv(onset_images)
    for c in classes:
        slug = c["slug"]
        ads = {m: open_store(attributions[m][slug]) for m in methods}
        nds = open_store(noised[slug])
        cands = list(ads[methods[0]]["image"].values)
        i, why = figures.representative_image(per_image[per_image["cls"] == slug], cands, image)
        label = f"image {i} ({nds['image_file'].values[i]}; {why})"
        figures.onset_panels(slug, nds.sel(image=i), {m: a.sel(image=i) for m, a in ads.items()},
                             table.loc[slug], png[slug], offsets=offsets, pdf=pdf[slug], image_label=label)
