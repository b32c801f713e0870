"""Numerical core of the analysis stage: what do the attribution maps show, and can we trust them?

One concern per module; every function takes numpy/torch arrays with arbitrary leading dims
(maps ``(..., H, W)``), so the same code serves one map, a (seed, step) block or a whole class:

- :mod:`.masks`         outline band / detail mask of the clean image, PNG read/write (user override)
- :mod:`.spatial`       enrichment of relevance in a mask (1 = chance) and its circular-shift null
- :mod:`.spectral`      radially averaged power spectrum, spectral centroid, low-frequency share
- :mod:`.faithfulness`  batched deletion / insertion curves with random and |x| orders as nulls
- :mod:`.randomization` cascading model-parameter randomization (Adebayo et al. 2018)
- :mod:`.agreement`     rank correlation and top-k overlap between methods and between seeds
- :mod:`.aligned`       metric vs step with bootstrap CIs; before/around/after-onset table
- :mod:`.verdicts`      rules that turn the table into supported / not supported / undecided
- :mod:`.stage`         the per-class stage function on the xarray stores of CONTRACT.md

Snakemake stays out of this package; the rules call :func:`diffxai.analysis.stage.analyze_class`.
"""
