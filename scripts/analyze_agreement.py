# Thin Snakemake script: the work happens in diffxai.stages.analyze.analyze_agreement.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from diffxai.smk import run

run(snakemake, "analyze.analyze_agreement")
