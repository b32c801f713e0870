# Thin Snakemake script: the work happens in diffxai.pipeline.report (report_md plus the analysis verdicts).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from diffxai.smk import run

run(snakemake, "report")
