"""Cross-class summaries of onsets (the 1000-class run): histogram, by category, extremes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import DiffxaiError
from .figures import DPI, STEP_LABEL, SUMMARY_FIGSIZE, save_figure

CATEGORIES = ("animal", "artifact", "food", "geological", "person", "plant_fungus")
CATEGORY_COLUMNS = ["category", "count", "n_valid", "median", "q25", "q75", "iqr"]
EXTREME_COLUMNS = ["extreme", "rank", "cls", "class_index", "synset", "name", "category",
                   "onset", "onset_lo", "onset_hi", "p_clean", "flags"]


def _atomic_csv(df: pd.DataFrame, path) -> Path:
    from .store import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def with_category(onset_df: pd.DataFrame, class_table_df: pd.DataFrame) -> pd.DataFrame:
    """onset_df plus a ``category`` column (joined on class index, else synset; 'unknown' if none)."""
    df = onset_df.copy()
    table = class_table_df
    if "category" not in table.columns:
        raise DiffxaiError("class table has no 'category' column")
    if "class_index" in df.columns and "index" in table.columns and df["class_index"].notna().all():
        key = dict(zip(pd.to_numeric(table["index"]).astype(int), table["category"]))
        cat = pd.to_numeric(df["class_index"]).astype(int).map(key)
    elif "synset" in df.columns and "synset" in table.columns:
        cat = df["synset"].map(dict(zip(table["synset"], table["category"])))
    else:
        raise DiffxaiError("onset table needs a class_index or synset column to find categories")
    df["category"] = cat.fillna("unknown").astype(str)
    return df


def by_category_stats(df: pd.DataFrame, categories=None, value: str = "onset") -> pd.DataFrame:
    """count, n_valid (finite onset), median, quartiles and IQR of the onset per category."""
    cats = list(categories) if categories is not None else sorted(df["category"].unique())
    extra = sorted(set(df["category"]) - set(cats))  # e.g. "unknown"
    rows = []
    for c in cats + extra:
        v = pd.to_numeric(df.loc[df["category"] == c, value], errors="coerce").to_numpy(float)
        ok = v[np.isfinite(v)]
        q25, med, q75 = (np.percentile(ok, [25, 50, 75]) if ok.size else (np.nan,) * 3)
        rows.append(dict(category=c, count=int(v.size), n_valid=int(ok.size), median=med,
                         q25=q25, q75=q75, iqr=q75 - q25))
    return pd.DataFrame(rows, columns=CATEGORY_COLUMNS)


def extremes_table(df: pd.DataFrame, n: int = 10, value: str = "onset") -> pd.DataFrame:
    """The ``n`` earliest and ``n`` latest classes by onset (NaN onsets excluded)."""
    v = pd.to_numeric(df[value], errors="coerce")
    ok = df[np.isfinite(v)].assign(_v=v[np.isfinite(v)]).sort_values(["_v", "cls"], kind="stable")
    early = ok.head(n).assign(extreme="earliest", rank=np.arange(1, min(n, len(ok)) + 1))
    late = ok.iloc[::-1].head(n).assign(extreme="latest", rank=np.arange(1, min(n, len(ok)) + 1))
    out = pd.concat([early, late], ignore_index=True)
    for c in EXTREME_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out[EXTREME_COLUMNS]


def _histogram(df: pd.DataFrame, out_png: Path, value: str, dpi: int, pdf=None):
    v = pd.to_numeric(df[value], errors="coerce").to_numpy(float)
    ok = v[np.isfinite(v)]
    n_nan = int(v.size - ok.size)
    fig = Figure(figsize=SUMMARY_FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    if ok.size:
        lo, hi = np.floor(ok.min()), np.ceil(ok.max())
        width = 1.0 if hi - lo <= 40 else 2.0
        edges = np.arange(lo, hi + width + 1e-9, width)
        ax.hist(ok, bins=edges, color="tab:blue", alpha=0.8, edgecolor="white", linewidth=0.3)
        med = float(np.median(ok))
        ax.axvline(med, color="k", ls="--", lw=1, label=f"median {med:.1f}")
        ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no class has a defined onset", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("number of classes")
    ax.set_title(f"Onset step over {v.size} classes ({n_nan} NaN: never rises, high from the start, "
                 f"or failed; not shown)", fontsize=9)
    return save_figure(fig, out_png, dpi, pdf)


def _category_plot(df: pd.DataFrame, table: pd.DataFrame, out_png: Path, value: str, dpi: int, pdf=None):
    fig = Figure(figsize=SUMMARY_FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    data, labels = [], []
    for _, r in table.iterrows():
        v = pd.to_numeric(df.loc[df["category"] == r["category"], value], errors="coerce")
        v = v[np.isfinite(v)].to_numpy(float)
        if v.size:
            data.append(v)
            labels.append(f"{r['category']}\n({r['n_valid']}/{r['count']})")
    if data:
        pos = np.arange(1, len(data) + 1)
        ax.boxplot(data, positions=pos, orientation="horizontal", widths=0.6, showfliers=False)
        rng = np.random.default_rng(0)  # jitter only: deterministic figure
        for p, v in zip(pos, data):
            ax.scatter(v, p + rng.uniform(-0.18, 0.18, v.size), s=6, alpha=0.5, color="tab:blue",
                       linewidths=0)
        ax.set_yticks(pos, labels, fontsize=8)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no class has a defined onset", transform=ax.transAxes,
                ha="center", va="center")
    ax.set_xlabel(STEP_LABEL)
    ax.set_title("Onset step by ImageNet category (valid/total classes)", fontsize=9)
    return save_figure(fig, out_png, dpi, pdf)


def summarise(onset_df: pd.DataFrame, class_table_df: pd.DataFrame | None, out_dir=None, *,
              value: str = "onset", n_extremes: int = 10, dpi: int = DPI, by_category=None,
              by_category_png=None, by_category_pdf=None, histogram=None, histogram_pdf=None,
              extremes=None) -> dict[str, Path]:
    """Write the cross-class summaries; returns {name: path}.

    Each path is given explicitly (the workflow's declared outputs) or defaults to its name in
    ``out_dir``: onset_histogram.png/.pdf, onset_by_category.csv/.png/.pdf, onset_extremes.csv.
    ``class_table_df`` None: the packaged class table.
    """
    from .classes import class_table_df as packaged

    def at(path, name):
        if path is not None:
            return Path(path)
        if out_dir is None:
            raise DiffxaiError(f"summarise: no path for {name} and no out_dir")
        return Path(out_dir) / name

    if value not in onset_df.columns:
        raise DiffxaiError(f"onset table has no column {value!r}")
    table = packaged() if class_table_df is None else class_table_df
    df = with_category(onset_df, table)
    known = [c for c in CATEGORIES if c in set(table["category"])] + \
        sorted(set(table["category"]) - set(CATEGORIES))
    cat = by_category_stats(df, known, value)
    paths: dict[str, Path] = {}
    paths["onset_histogram.png"], paths["onset_histogram.pdf"] = _histogram(
        df, at(histogram, "onset_histogram.png"), value, dpi, at(histogram_pdf, "onset_histogram.pdf"))
    paths["onset_by_category.csv"] = _atomic_csv(cat, at(by_category, "onset_by_category.csv"))
    paths["onset_by_category.png"], paths["onset_by_category.pdf"] = _category_plot(
        df, cat, at(by_category_png, "onset_by_category.png"), value, dpi,
        at(by_category_pdf, "onset_by_category.pdf"))
    paths["onset_extremes.csv"] = _atomic_csv(extremes_table(df, n_extremes, value),
                                              at(extremes, "onset_extremes.csv"))
    return paths
