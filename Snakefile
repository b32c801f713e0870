# diffxai: along a diffusion trajectory, at which step does an ImageNet classifier start to see
# the class, and where in the image does it look?
#
#   snakemake --cores all                                  # the CPU preview (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml   # the study's full settings (GPU)
#
# DAG: fetch_image -> noise -> classify -> attribute_<method> -> onset -> figures -> report
#      attribute_<method> -> analyze_<method>, analyze_agreement -> analysis_summary -> report
import os

from snakemake.utils import min_version

min_version("9.0")


# the preview defaults; --configfile FILE and --config KEY=VALUE extend (deep-merge) them
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/noise.smk"
include: "rules/classify.smk"
include: "rules/attribute.smk"
include: "rules/onset.smk"
include: "rules/analyze.smk"
include: "rules/figures.smk"
include: "rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
