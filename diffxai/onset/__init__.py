"""Onset detection along a diffusion trajectory: logistic fit, steepest rise, threshold crossing.

Axis convention (docs/DESIGN.md): ``step`` is the study's index k, 0 = noisiest ... T-1 = cleanest;
the DDPM timestep is t = T - 1 - k. Steps may be a non-uniform subset of 0..T-1 (a preview).

Three per-curve estimates of "where the classifier starts to see the class" (:mod:`.detection`):

* logistic: fit p(k) = L + (U - L) / (1 + exp(-s (k - k0))) with 0 <= L <= U <= 1, s > 0
  (:mod:`.fitting`). ``midpoint`` = k0; ``onset`` = k0 - 1.317/s, the point of fastest acceleration
  (third derivative zero), where the curve has covered 21 % of its own rise from L to U. Being
  relative to the curve's own floor and plateau, it exists for curves that never reach p = 0.5.
* steepest: argmax of a Savitzky-Golay first derivative (sub-step by a parabola through the peak).
* threshold: first k with p >= threshold, linearly interpolated between the two bracketing steps.

Curves that cannot give an answer get NaN and a flag, never an exception:
``never_rises`` (fitted rise U-L < min_rise or max p < min_rise), ``high_from_start`` (p at the first
step >= threshold, or fitted midpoint before the first step), ``fit_failed``, ``never_crosses``
(threshold never reached), ``too_few_points``, ``nan_dropped``. Informational flags keep the value:
``onset_before_first_step`` (extrapolated 21 % point), ``midpoint_after_last_step`` (the plateau is
extrapolated), ``poor_fit`` (R^2 < 0.5). Per class and per image also ``single_seed`` (CI NaN),
``ci_few_seeds`` (2-3 seeds: few distinct resamples), ``ci_partial``/``ci_unavailable`` (some/most
resamples NaN); per class with 2-9 images ``ci_few_images`` (simulated coverage of the nominal
95 % class CI: 73-80 % with 3 images, 89-90 % with 10, 93-96 % with 50; one image: the CI is that
image's seed CI, not the class's); per image ``clean_wrong`` (the
classifier's top-1 is not the class at the cleanest step for any seed). Flags are joined with ";";
"ok" when there are none.

Curves are (image, seed, step); a (seed, step) array is one image. Three tables
(:func:`onset_tables`, :mod:`.tables`): per (image, seed) curve; per image, from the seed-mean curve
of that image with a percentile bootstrap over its seeds; per class, from the mean curve over
images and seeds with a hierarchical percentile bootstrap (draw images with replacement, then
seeds with replacement within each drawn image, refit the mean curve; :mod:`.bootstrap`). Fits of
identical resamples are done once. The method and its coverage on synthetic classes:
:mod:`diffxai.onset_coverage`, bench/onset_coverage/README.md. The hierarchical percentile interval
covered at least as often as resampling images only and as BCa (own, or
``scipy.stats.bootstrap`` over images) in every cell, so it is the only method; none of them fixes
the under-coverage with few images.

Modules: :mod:`.fitting` (the logistic and its least-squares fit), :mod:`.detection` (the three
estimates and their rules), :mod:`.bootstrap` (resampling and CIs), :mod:`.schedule` (step k to
DDPM t and log-SNR), :mod:`.tables` (the tables and their input from the probability stores).
"""
from __future__ import annotations

from .bootstrap import (FEW_IMAGES, class_estimate, hierarchical_draws, image_estimates, mean_curve,
                        percentile_cis, resample_estimates)
from .detection import (BOOT_KEYS, detect_batch, detect_curve, steepest_rise, steepest_rise_batch,
                        threshold_crossing, threshold_crossing_batch)
from .fitting import (MIN_POINTS, ONSET_OFFSET, SOLVERS, fit_logistic, fit_logistic_batch,
                      grid_starts, logistic)
from .schedule import log_snr_at, step_to_t, t_and_log_snr
from .tables import (METHODS, PER_CLASS_COLUMNS, PER_IMAGE_COLUMNS, PER_SEED_COLUMNS,
                     PER_SEED_COLUMNS_FILES, curves_from_datasets, onset_tables, per_image_columns,
                     per_seed_columns)

__all__ = [
    "BOOT_KEYS", "FEW_IMAGES", "METHODS", "MIN_POINTS", "ONSET_OFFSET", "PER_CLASS_COLUMNS",
    "PER_IMAGE_COLUMNS", "PER_SEED_COLUMNS", "PER_SEED_COLUMNS_FILES", "SOLVERS", "class_estimate",
    "curves_from_datasets", "detect_batch", "detect_curve", "fit_logistic", "fit_logistic_batch",
    "grid_starts", "hierarchical_draws", "image_estimates", "log_snr_at", "logistic", "mean_curve",
    "onset_tables", "per_image_columns", "per_seed_columns", "percentile_cis", "resample_estimates",
    "steepest_rise", "steepest_rise_batch", "step_to_t", "t_and_log_snr", "threshold_crossing",
    "threshold_crossing_batch",
]
