"""Coverage of the CI of a mean paired change over (image, seed) units, at the unit counts the study uses.

    OMP_NUM_THREADS=1 python bench/verdict_coverage/coverage.py --out bench/verdict_coverage --reps 1000

Model (one simulated row of the phase table): unit (i, j) has the paired change
``v_ij = a_i + e_ij``, image effect ``a_i = tau * z``, seed noise ``e_ij = sigma * z'`` (sigma = 1),
``z, z'`` standardised draws from ``normal``, ``skewed`` (centred log-normal, sdlog 1: skewness 6.2)
or ``heavy`` (Student t with 3 df, scaled to sd 1). Estimand: with one image, that image's
expectation ``a_1`` (the verdict's scope is the image); with several images, the class mean 0 (the
scope is the class). Nominal level 95 %.

Intervals compared (all from diffxai.analysis.aligned where the pipeline has them):

* ``t``: Student-t on unit means (aligned.t_interval: image means when >= 2 images, else seeds);
* ``percentile``: the hierarchical percentile bootstrap (aligned.mean_ci(ci="percentile"), 999 draws);
* ``bca``: scipy.stats.bootstrap(method="BCa", 999 resamples) over the same units as ``t``
  (no two-level BCa exists in scipy); an interval scipy cannot form (NaN) counts as a miss and in
  ``no_interval``.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # this checkout's diffxai
from diffxai.analysis import aligned as AL  # noqa: E402

CELLS = ((1, 2), (1, 4), (1, 8), (1, 20), (2, 4), (3, 2), (3, 4), (4, 4), (10, 2), (10, 4))
DISTS = ("normal", "skewed", "heavy")
METHODS = ("t", "percentile", "bca")


def standard(rng, dist: str, shape) -> np.ndarray:
    if dist == "normal":
        return rng.standard_normal(shape)
    if dist == "skewed":
        return (rng.lognormal(0.0, 1.0, shape) - np.exp(0.5)) / np.sqrt((np.e - 1) * np.e)
    if dist == "heavy":
        return rng.standard_t(3, shape) / np.sqrt(3.0)
    raise ValueError(dist)


def draw(rng, reps: int, n_i: int, n_s: int, dist: str, tau: float):
    """values (image, seed, rep) and the estimand per rep."""
    a = tau * standard(rng, dist, (n_i, 1, reps))
    v = a + standard(rng, dist, (n_i, n_s, reps))
    truth = a[0, 0] if n_i == 1 else np.zeros(reps)
    return v, truth


def intervals(v: np.ndarray, method: str, n_boot: int, seed: int):
    if method == "t":
        return AL.mean_ci(v, ci="t")[1:]
    if method == "percentile":
        out = [AL.mean_ci(v[..., c:c + 100], n_boot, 0.95, seed, ci="percentile")[1:]
               for c in range(0, v.shape[-1], 100)]
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])
    units = AL._nanmean(v, 1) if v.shape[0] >= 2 else v[0]     # (unit, rep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.bootstrap((units.T,), np.mean, axis=-1, vectorized=True, n_resamples=n_boot,
                            method="BCa", confidence_level=0.95, random_state=seed)
    return r.confidence_interval.low, r.confidence_interval.high


def run(reps: int, n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(seed)
    for n_i, n_s in CELLS:
        for dist in DISTS:
            for tau in ((0.0,) if n_i == 1 else (0.0, 1.0)):
                v, truth = draw(rng, reps, n_i, n_s, dist, tau)
                for method in METHODS:
                    lo, hi = (np.asarray(x, float) for x in intervals(v, method, n_boot, seed))
                    ok = np.isfinite(lo) & np.isfinite(hi)
                    cover = ok & (lo <= truth) & (truth <= hi)
                    rows.append({"images": n_i, "seeds": n_s, "dist": dist, "tau": tau, "method": method,
                                 "reps": reps, "coverage": cover.mean(), "mean_width": np.nanmean(hi - lo),
                                 "no_interval": 1 - ok.mean(),
                                 "scope": "image" if n_i == 1 else "class"})
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> str:
    """Markdown: coverage % (mean width) per cell and method, the three distributions side by side."""
    out = ["| images | seeds | tau | " + " | ".join(f"{d}: {m}" for d in DISTS for m in METHODS) + " |",
           "|---|---|---|" + "---|" * (len(DISTS) * len(METHODS))]
    for (n_i, n_s, tau), g in df.groupby(["images", "seeds", "tau"], sort=True):
        g = g.set_index(["dist", "method"])
        cells = [f"{100 * g.loc[(d, m), 'coverage']:.1f} ({g.loc[(d, m), 'mean_width']:.2f})"
                 for d in DISTS for m in METHODS]
        out.append(f"| {n_i} | {n_s} | {tau:g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/verdict_coverage")
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--n-boot", type=int, default=999)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    df = run(a.reps, a.n_boot, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "coverage.csv", index=False, float_format="%.4f")
    (out / "coverage.md").write_text(table(df) + f"\n\n{a.reps} reps per cell, {a.n_boot} bootstrap draws, "
                                     f"{time.perf_counter() - t0:.0f} s\n")
    print(table(df))


if __name__ == "__main__":
    main()
