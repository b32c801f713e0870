"""Numerical core of the analysis stage: what do the attribution maps show, and can we trust them?

One concern per module; every function takes numpy/torch arrays with arbitrary leading dims
(maps ``(..., H, W)``), so the same code serves one map, a (seed, step) block or a whole class:

- :mod:`.masks`         the named regions of the clean image (silhouette, outline band, interior,
                        background, detail, edges; hand and user masks), PNG read/write
- :mod:`.segmentation`  the automatic silhouette (GrabCut) and IoU; :mod:`.hand_masks` the packaged masks
- :mod:`.spatial`       enrichment of relevance in a mask (1 = chance) and its region-constrained null
- :mod:`.spectral`      windowed radial power spectrum of |map|, spectral centroid, low-frequency share
- :mod:`.theory`        what forward noising predicts: crossover frequency, band-filtered inputs
- :mod:`.controls`      the x-factor controls (gradient-only maps, |x|) and the theory as stage blocks
- :mod:`.faithfulness`  batched deletion / insertion curves with random and |x| orders as nulls
- :mod:`.randomization` cascading model-parameter randomization (Adebayo et al. 2018)
- :mod:`.agreement`     rank correlation and top-k overlap between methods and between seeds
- :mod:`.aligned`       metric vs step with CIs; before/around/after-onset table
- :mod:`.verdicts`      the claims' registry and rules: supported / not supported / undecided
- :mod:`.control_verdicts` what carries a trend: the gradient, the input, or more than noising predicts
- :mod:`.stage`         the per-class stage on the stores of docs/DESIGN.md: per method, agreement, combine

Snakemake stays out of this package: the workflow's stage functions (:mod:`diffxai.stages.analyze`) call
:func:`.stage.analyze_method`, :func:`.stage.analyze_agreement` and :func:`.stage.combine`, the
composition that :func:`.stage.analyze_class` is for tests and notebooks.
"""
