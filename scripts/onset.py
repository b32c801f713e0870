# Thin Snakemake script: the work happens in diffxai.stages.onset.onset.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from diffxai.smk import run

run(snakemake, "onset.onset")
