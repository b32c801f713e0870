# Shared setup: config validation, class resolution, sharding, resources. Every path comes from
# diffxai.paths; per-class inputs and outputs are declared as paths.flat(...) of the named
# mappings the stages receive (diffxai.smk checks that the two agree).
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir)))  # the diffxai package beside this Snakefile

from diffxai import paths
from diffxai.config import METHODS, plan_shards, validate_config
from diffxai.analysis.metrics import METHOD_JOB_KEYS
from diffxai.errors import DiffxaiError
from diffxai.gpu import gpu_count
from diffxai.paths import figure
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


ANALYSIS = config["analysis"]
# the analysis: keys the per-method analysis jobs read (their params carry only these; diffxai.analysis.metrics)
ANALYSIS_METHOD_KEYS = METHOD_JOB_KEYS
# the method-independent costly check (p_true of band-filtered inputs): one method's jobs compute it
SHARED_CHECKS_METHOD = (
    "integrated_gradients" if "integrated_gradients" in config["methods"] else config["methods"][0]
)


def by_class(family, slugs, method=None):
    """The rule's list of a per-class family's paths: {cls: path} (of ``method``) flattened."""
    return paths.flat(family.mapping(slugs, method=method))


def by_method_class(family, slugs):
    """The rule's list of a per-method family's paths for every method: {method: {cls: path}} flattened."""
    return paths.flat(family.mapping(slugs, methods=config["methods"]))


# A job that may compute on a GPU (classify, attribute_<method>, analyze_<method>) asks for one
# `gpu` (and resources.gpu) unless its device setting is cpu or, for auto, no GPU is visible here;
# it then claims its own device (diffxai.gpu). Attribution always asks.
HAS_GPU = gpu_count() > 0


def device_resources(device):
    return {"gpu": 1, **GPU_RES} if device == "cuda" or (device == "auto" and HAS_GPU) else dict(CPU_RES)


def all_outputs():
    out = [paths.ONSET, paths.ONSET_IMAGES, paths.ONSET_SEEDS, figure("softmax_curves"), paths.REPORT]
    out += [figure(f"{m}_grid") for m in config["methods"]]
    out += by_class(paths.ONSET_PNG, SLUGS)
    out += [paths.summary("onset_by_category.csv")]
    out += [paths.PHASES, paths.VERDICTS, paths.METRICS_BY_CATEGORY]
    out += by_class(paths.ANALYSIS_PNG, SLUGS) + by_class(paths.MASKS_PNG, SLUGS)
    out += by_class(paths.ANIMATION_GIF, SLUGS)
    return out
