# Shared setup: config validation, class resolution, sharding, paths.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir)))  # the diffxai package beside this Snakefile

from diffxai.config import METHODS, plan_shards, validate_config
from diffxai.errors import DiffxaiError
from diffxai.inputs import image_sources, mask_sources, normalise_paths

try:
    validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
    normalise_paths(config)  # absolute, resolved: another spelling of a path is the same value
    from diffxai.classes import resolve_classes

    CLASSES = resolve_classes(config["classes"])
except DiffxaiError as exc:
    raise WorkflowError(f"diffxai: {exc}") from None

CLASS = {c.slug: c for c in CLASSES}
SLUGS = [c.slug for c in CLASSES]
SHARDS = plan_shards(SLUGS, config["shard_size"])
ENV = "../envs/diffxai.yaml"
CPU_RES = dict(config["resources"]["cpu"])
GPU_RES = dict(config["resources"]["gpu"])


def class_params(slugs):
    """Plain, hashable class descriptions for params (so a class change reruns the job)."""
    return [
        {"slug": s, "index": CLASS[s].index, "synset": CLASS[s].synset, "name": CLASS[s].name}
        for s in slugs
    ]


def located(value):
    """A setting that says where to read, not what: a derived param (a function of ``output``),
    passed to the job but left out of Snakemake's params rerun trigger; what is read there is
    tracked by content (tracked_images, tracked_masks)."""
    return lambda wildcards, output: value


def tracked_images(slugs):
    """Names and sha256 of the images the fetch of these classes reads (diffxai.inputs.image_sources);
    evaluated when the job is planned."""
    return lambda wildcards: [
        image_sources(CLASS[s], config["image_dir"], config["images_per_class"], config["image_seed"],
                      config["skip_bad_images"])
        for s in slugs
    ]


def tracked_masks(slugs):
    """Names and sha256 of the user mask PNGs (analysis.masks.folder) these classes' analysis reads."""
    return lambda wildcards: [mask_sources(config["analysis"]["masks"]["folder"], CLASS[s]) for s in slugs]


def image_folder(slug):
    """resources/images/{cls}/: 000.png, 001.png, ... and manifest.json (one directory output)."""
    return f"resources/images/{slug}"


def noised_store(slug):
    return f"results/noised/{slug}.zarr"


def probs_store(slug):
    return f"results/probs/{slug}.zarr"


def attribution_store(method, slug):
    return f"results/attributions/{method}/{slug}.zarr"


def analysis_store(method, slug):
    return f"results/analysis/{method}/{slug}.zarr"


def agreement_store(slug):
    return f"results/analysis/agreement/{slug}.zarr"


ANALYSIS = config["analysis"]
# the analysis: keys the per-method analysis jobs read (their params carry only these)
ANALYSIS_METHOD_KEYS = ("masks", "enrichment", "spectral", "subset", "controls", "faithfulness", "randomization",
                        "theory")
# the method-independent costly check (p_true of band-filtered inputs): one method's jobs compute it
SHARED_CHECKS_METHOD = (
    "integrated_gradients" if "integrated_gradients" in config["methods"] else config["methods"][0]
)


def figure(name):
    return f"results/figures/{name}.png"


def all_outputs():
    out = ["results/onset.csv", "results/onset_images.csv", "results/onset_seeds.csv", figure("softmax_curves"),
           "results/report.md"]
    out += [figure(f"{m}_grid") for m in config["methods"]]
    out += [figure(f"onset_{s}") for s in SLUGS]
    out += ["results/summary/onset_by_category.csv"]
    out += ["results/analysis/phases.csv", "results/analysis/verdicts.csv", "results/analysis/metrics_by_category.csv"]
    out += [figure(f"analysis_{s}") for s in SLUGS] + [figure(f"masks_{s}") for s in SLUGS]
    out += [f"results/figures/animation_{s}.gif" for s in SLUGS]
    return out
