"""Coverage of the class-onset confidence intervals on synthetic p(true) curves with known onsets.

``python -m diffxai.onset_coverage --out bench/onset_coverage`` writes ``coverage.csv`` and
``coverage.md``: the fraction of simulated classes whose nominal 95 % CI holds the true class onset
(and midpoint), per number of images x seeds and per CI method.

Generative model (per simulated class; all parameters are CLI options):

* the class has a true midpoint ``k0`` and slope ``s`` on the study's step axis (0 = noisiest);
* image i: midpoint k0 + N(0, image_sd), slope s * exp(N(0, slope_sd)), floor U(0, floor_max),
  plateau U(plateau_lo, plateau_hi) (real curves: floor ~0-0.05, plateau 0.45-1);
* seed j of image i: midpoint jittered again by N(0, seed_sd) (the shared-eps noise draw moves the
  whole curve), then every step gets Beta noise with mean p and concentration ``conc``
  (variance p(1-p)/(conc+1): largest mid-rise, like softmax outputs of noisy images).

The estimand is what the estimator targets: the onset (and midpoint) of the logistic fitted to the
POPULATION mean curve E[p(k)] over images and seeds (computed from 200,000 noise-free draws; Beta
noise is mean-preserving). With image-level spread the mean of logistics is flatter than each
image's curve, so this is not k0 - 1.317/s.

CI methods compared (all from the same point estimate: the fit of the mean curve over images and
seeds):

* ``hier_percentile``: the pipeline's default (diffxai.onset): draw images with replacement, then
  seeds with replacement within each drawn image, refit, 2.5/97.5 % percentiles. One image: the
  seed bootstrap.
* ``images_percentile``: resample images only (seeds kept as they are). One image: seeds.
* ``hier_bca``: BCa on the hierarchical draws: bias correction from the draws, acceleration from the
  leave-one-image-out jackknife (one image: leave-one-seed-out).
* ``scipy_bca``: ``scipy.stats.bootstrap(method="BCa")`` with images as the units (their seed-mean
  curves); one image: seeds as the units.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, norm

from . import onset as on

METHODS = ("hier_percentile", "images_percentile", "hier_bca", "scipy_bca")
TARGETS = ("onset", "midpoint")


def image_params(rng, n, *, k0, slope, image_sd, slope_sd, floor_max, plateau_lo, plateau_hi):
    return dict(k0=k0 + rng.normal(0, image_sd, n), s=slope * np.exp(rng.normal(0, slope_sd, n)),
                L=rng.uniform(0, floor_max, n), U=rng.uniform(plateau_lo, plateau_hi, n))


def simulate_class(rng, steps, n_images, n_seeds, *, k0=45.0, slope=0.3, image_sd=3.0,
                   slope_sd=0.2, seed_sd=1.5, conc=30.0, floor_max=0.05, plateau_lo=0.5,
                   plateau_hi=1.0) -> np.ndarray:
    """p(true) curves (image, seed, step) of one synthetic class."""
    k = np.asarray(steps, dtype=float)
    ip = image_params(rng, n_images, k0=k0, slope=slope, image_sd=image_sd, slope_sd=slope_sd,
                      floor_max=floor_max, plateau_lo=plateau_lo, plateau_hi=plateau_hi)
    mid = ip["k0"][:, None] + rng.normal(0, seed_sd, (n_images, n_seeds))
    p = on.logistic(k[None, None, :], ip["L"][:, None, None], ip["U"][:, None, None],
                    mid[:, :, None], ip["s"][:, None, None])
    if conc and np.isfinite(conc):
        eps = 1e-6
        pc = np.clip(p, eps, 1 - eps)
        p = rng.beta(pc * conc, (1 - pc) * conc)
    return p


def truth(steps, *, n=200_000, seed=12345, **model) -> dict[str, float]:
    """Onset and midpoint of the logistic fitted to the population mean curve."""
    rng = np.random.default_rng(seed)
    model = {k: v for k, v in model.items() if k != "conc"}
    k = np.asarray(steps, dtype=float)
    acc = np.zeros(k.size)
    for _ in range(n // 10_000):
        acc += simulate_class(rng, k, 10_000, 1, conc=0, **model)[:, 0].sum(0)
    mean = acc / (10_000 * (n // 10_000))
    r = on.detect_curve(k, mean)
    return {"onset": r["onset"], "midpoint": r["midpoint"]}


def _fit_index_sets(steps, curves, counts):
    """Estimates for mean curves given as count rows over ``curves`` (N, K)."""
    return on.resample_estimates(steps, curves, counts, {})


def _bca(theta_hat, boot, jack, alpha):
    boot = boot[np.isfinite(boot)]
    jack = jack[np.isfinite(jack)]
    if not np.isfinite(theta_hat) or boot.size < 10 or jack.size < 2:
        return (np.nan, np.nan)
    prop = (np.sum(boot < theta_hat) + 0.5 * np.sum(boot == theta_hat)) / boot.size
    if prop <= 0 or prop >= 1:
        return (np.nan, np.nan)
    z0 = norm.ppf(prop)
    d = jack.mean() - jack
    den = 6.0 * np.sum(d**2) ** 1.5
    a = np.sum(d**3) / den if den > 0 else 0.0
    out = []
    for q in (alpha, 1 - alpha):
        zq = norm.ppf(q)
        out.append(float(np.percentile(boot, 100 * norm.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq))))))
    return tuple(out)


def intervals(steps, p, *, n_boot=999, ci=0.95, rng=None, methods=METHODS):
    """{method: {target: (lo, hi)}} and the point estimates for one simulated class p (I, S, K)."""
    rng = rng if rng is not None else np.random.default_rng()
    steps = np.asarray(steps, dtype=float)
    I, S, K = p.shape
    alpha = (1 - ci) / 2
    kw = {}
    P = p.reshape(I * S, K)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    # the pipeline's own class estimate and CI
    seed = int(rng.integers(2**31))
    full, cis, hier_vals, _ = on.class_estimate(steps, p, "onset", kw, alpha, n_boot,
                                                np.random.default_rng(seed))
    point = {t: full[t] for t in TARGETS}
    if "hier_percentile" in methods:
        out["hier_percentile"] = {t: cis[t] for t in TARGETS}
    units = p.mean(1) if I > 1 else p[0]  # (units, K): image seed-means, or the seeds of one image
    n_u = units.shape[0]
    if "images_percentile" in methods:
        if n_u < 2:
            out["images_percentile"] = {t: (np.nan, np.nan) for t in TARGETS}
        else:
            cnt = np.zeros((n_boot, n_u), np.int32)
            np.add.at(cnt, (np.arange(n_boot)[:, None], rng.integers(0, n_u, (n_boot, n_u))), 1)
            v = _fit_index_sets(steps, units, cnt)
            out["images_percentile"] = on.percentile_cis({t: v[t] for t in TARGETS}, alpha)
    if n_u >= 2 and ("hier_bca" in methods or "scipy_bca" in methods):
        jack_counts = 1 - np.eye(n_u, dtype=np.int32)
        jack = _fit_index_sets(steps, units, jack_counts)
    if "hier_bca" in methods:
        if n_u < 2 or hier_vals is None:
            out["hier_bca"] = {t: (np.nan, np.nan) for t in TARGETS}
        else:
            out["hier_bca"] = {t: _bca(point[t], hier_vals[t], jack[t], alpha) for t in TARGETS}
    if "scipy_bca" in methods:
        res = {}
        for t in TARGETS:
            if n_u < 2 or not np.isfinite(point[t]):
                res[t] = (np.nan, np.nan)
                continue

            def stat(idx, axis=-1, _t=t):
                idx = np.asarray(idx, dtype=int)
                flat = idx.reshape(-1, idx.shape[-1])
                cnt = np.zeros((flat.shape[0], n_u), np.int32)
                np.add.at(cnt, (np.arange(flat.shape[0])[:, None], flat), 1)
                return _fit_index_sets(steps, units, cnt)[_t].reshape(idx.shape[:-1])

            with np.errstate(all="ignore"):
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    b = bootstrap((np.arange(n_u),), stat, vectorized=True, n_resamples=n_boot,
                                  confidence_level=ci, method="BCa", rng=rng)
            res[t] = (float(b.confidence_interval.low), float(b.confidence_interval.high))
        out["scipy_bca"] = res
    return point, out


def coverage(steps, cells, *, n_rep=200, n_boot=999, ci=0.95, seed=0, methods=METHODS,
             log=print, **model) -> pd.DataFrame:
    """One row per (n_images, n_seeds, method, target): coverage, its binomial SE, mean width, and
    the fraction of reps with no interval (NaN)."""
    tru = truth(steps, **model)
    rows = []
    for n_images, n_seeds in cells:
        t0 = time.perf_counter()
        hits = {(m, t): [] for m in methods for t in TARGETS}
        widths = {(m, t): [] for m in methods for t in TARGETS}
        for rep in range(n_rep):
            rng = np.random.default_rng([seed, n_images, n_seeds, rep])
            p = simulate_class(rng, steps, n_images, n_seeds, **model)
            _, ints = intervals(steps, p, n_boot=n_boot, ci=ci, rng=rng, methods=methods)
            for m in methods:
                for t in TARGETS:
                    lo, hi = ints[m][t]
                    ok = np.isfinite(lo) and np.isfinite(hi)
                    hits[(m, t)].append(bool(ok and lo <= tru[t] <= hi))
                    widths[(m, t)].append(hi - lo if ok else np.nan)
        for m in methods:
            for t in TARGETS:
                h = np.array(hits[(m, t)])
                w = np.array(widths[(m, t)])
                cov = h.mean()
                rows.append(dict(n_images=n_images, n_seeds=n_seeds, method=m, target=t,
                                 coverage=cov, se=math.sqrt(cov * (1 - cov) / len(h)),
                                 mean_width=float(np.nanmean(w)) if np.isfinite(w).any() else np.nan,
                                 no_interval=float(np.mean(~np.isfinite(w))), n_rep=len(h),
                                 truth=tru[t]))
        log(f"{n_images} images x {n_seeds} seeds: {n_rep} reps in {time.perf_counter() - t0:.0f} s")
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, target="onset") -> str:
    d = df[df.target == target]
    cov = d.pivot_table(index=["n_images", "n_seeds"], columns="method", values="coverage")
    wid = d.pivot_table(index=["n_images", "n_seeds"], columns="method", values="mean_width")
    cols = [m for m in METHODS if m in cov.columns]
    head = "| images | seeds | " + " | ".join(f"{m} cov (width)" for m in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for (i, s), r in cov.iterrows():
        cells = [f"{100 * r[m]:.1f} % ({wid.loc[(i, s), m]:.2f})" for m in cols]
        lines.append(f"| {i} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/onset_coverage")
    ap.add_argument("--images", type=int, nargs="+", default=[1, 3, 10, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--steps", type=int, default=100, help="study steps, evenly spaced in 0..99")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k0", type=float, default=45.0)
    ap.add_argument("--slope", type=float, default=0.3)
    ap.add_argument("--image-sd", type=float, default=3.0)
    ap.add_argument("--slope-sd", type=float, default=0.2)
    ap.add_argument("--seed-sd", type=float, default=1.5)
    ap.add_argument("--conc", type=float, default=30.0)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    a = ap.parse_args(argv)
    steps = np.round(np.linspace(0, 99, a.steps)).astype(int)
    model = dict(k0=a.k0, slope=a.slope, image_sd=a.image_sd, slope_sd=a.slope_sd,
                 seed_sd=a.seed_sd, conc=a.conc)
    cells = [(i, s) for i in a.images for s in a.seeds]
    df = coverage(steps, cells, n_rep=a.reps, n_boot=a.n_boot, seed=a.seed,
                  methods=tuple(a.methods), **model)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "coverage.csv", index=False, float_format="%.4g")
    params = ", ".join(f"{k}={v}" for k, v in model.items())
    text = (f"# Onset CI coverage (nominal 95 %)\n\n{a.reps} simulated classes per cell, "
            f"{a.steps} steps, n_boot={a.n_boot}, seed={a.seed}; model: {params}.\n"
            f"True class onset {df[df.target == 'onset'].truth.iloc[0]:.2f}, midpoint "
            f"{df[df.target == 'midpoint'].truth.iloc[0]:.2f}.\n\n## onset (logistic 21 % point)\n\n"
            f"{to_markdown(df, 'onset')}\n\n## midpoint\n\n{to_markdown(df, 'midpoint')}\n")
    (out / "coverage.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
