"""All matplotlib figures. Each function writes a PNG and a PDF beside it and returns both paths.

Inputs are xarray Datasets in the layout of docs/DESIGN.md (as opened with ``xr.open_zarr``):
noised ``x`` (seed, step, channel, y, x) in [-1, 1]; probabilities ``p_true`` (seed, step);
attributions ``attribution`` (seed, step, y, x). The ``step`` coordinate is the study's k
(0 = noisiest). Figures use the object-oriented API (no pyplot state, no backend switching) and a
fixed size in inches, so a PNG is exactly ``figsize * dpi`` pixels.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .errors import DiffxaiError
from .registry import LABELS

STEP_LABEL = "diffusion step k (0 = noisiest)"
LOG_SNR_LABEL = r"log-SNR  $\log\,\bar\alpha/(1-\bar\alpha)$"
METHOD_LABELS = LABELS  # the registry's
ATTR_CMAP = "RdBu_r"
DPI = 150
PANEL_IN = 1.7  # inches per image panel


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def pick_steps(available_steps: Sequence[int], n: int) -> list[int]:
    """``n`` steps spread evenly over the available ones (first and last included)."""
    avail = np.unique(np.asarray(available_steps))
    if n <= 0 or avail.size == 0:
        return []
    if n >= avail.size:
        return [int(k) for k in avail]
    idx = np.unique(np.round(np.linspace(0, avail.size - 1, n)).astype(int))
    return [int(k) for k in avail[idx]]


def nearest_steps(available_steps: Sequence[int], targets: Sequence[float], *,
                  unique: bool = True) -> list[int]:
    """The available step nearest to each finite target (ties go to the lower step).

    With ``unique`` a step that is nearest to several targets appears once, in target order.
    """
    avail = np.unique(np.asarray(available_steps))
    out: list[int] = []
    if avail.size == 0:
        return out
    for t in np.atleast_1d(np.asarray(targets, dtype=float)):
        if not np.isfinite(t):
            continue
        k = int(avail[int(np.argmin(np.abs(avail - t)))])
        if not (unique and k in out):
            out.append(k)
    return out


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method.replace("_", " "))


def class_label(ds, cls: str) -> str:
    return str(ds.attrs.get("class_name") or cls)


def grid_figsize(nrows: int, ncols: int) -> tuple[float, float]:
    """Size in inches of an image grid: panels + row labels + colour bar + titles."""
    return (PANEL_IN * ncols + 1.4, PANEL_IN * nrows + 0.9)


SOFTMAX_FIGSIZE = (7.5, 4.6)
SUMMARY_FIGSIZE = (6.5, 4.0)


def save_figure(fig: Figure, out_png, dpi: int = DPI, pdf=None) -> tuple[Path, Path]:
    """Write ``out_png`` and ``pdf`` (default: beside the PNG), each atomically (store.atomic_path)."""
    from .store import atomic_path

    png = Path(out_png)
    if png.suffix.lower() != ".png":
        raise DiffxaiError(f"figure output {png} must end in .png")
    pdf = png.with_suffix(".pdf") if pdf is None else Path(pdf)
    if pdf.suffix.lower() != ".pdf":
        raise DiffxaiError(f"figure output {pdf} must end in .pdf")
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
    return png, pdf


def representative_image(per_image, candidates: Sequence[int], image: int | None = None) -> tuple[int, str]:
    """The image a grid or onset strip shows for one class, and why.

    ``image`` given: that one (it must be among ``candidates``, the attributed images). Otherwise the
    candidate whose per-image onset (``per_image``: that class's rows of onset_images.csv) is nearest
    the median of all its images' onsets; ties and classes without a finite onset: the lowest index.
    """
    cands = sorted(int(c) for c in candidates)
    if not cands:
        raise DiffxaiError("no attributed image to show")
    if image is not None:
        if int(image) not in cands:
            raise DiffxaiError(f"config key figures.image: image {image} is not attributed "
                               f"(attributed: {cands}; raise attribution.images)")
        return int(image), "chosen by figures.image"
    if len(cands) == 1:
        return cands[0], "the only attributed image"
    if per_image is None or len(per_image) == 0:
        return cands[0], "the first image"
    on = dict(zip(per_image["image"].astype(int), per_image["onset"].astype(float)))
    vals = np.array([v for v in on.values() if np.isfinite(v)])
    if vals.size == 0:
        return cands[0], "no image has an onset; the first"
    med = float(np.median(vals))
    ok = [(abs(on[c] - med), c) for c in cands if c in on and np.isfinite(on[c])]
    if not ok:
        return cands[0], f"no attributed image has an onset; the first (class median {med:.1f})"
    if len(on) == 1:
        return ok[0][1], "the only image"
    return min(ok)[1], f"nearest the class median onset {med:.1f}"


def _image_var(ds):
    for name in ("x", "x_t"):
        if name in ds.variables and ds[name].ndim >= 3:
            return ds[name]
    raise DiffxaiError(f"noised dataset of class {ds.attrs.get('cls', '?')!r} has no image "
                       f"variable 'x' (seed, step, channel, y, x)")


def _rgb(ds, seed, step) -> np.ndarray:
    """Noised image at (seed, step) mapped to [0, 1], shape (H, W, 3) or (H, W)."""
    da = _image_var(ds)
    sel = {"step": step}
    if "seed" in da.dims:
        sel["seed"] = seed
    da = da.sel(sel)
    if "channel" in da.dims:
        da = da.transpose("channel", ...)
        img = np.moveaxis(np.asarray(da.values, dtype=float), 0, -1)
    else:
        img = np.asarray(da.values, dtype=float)
    return np.clip((img + 1.0) / 2.0, 0.0, 1.0)


def _gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    return img[..., :3] @ np.array([0.299, 0.587, 0.114])


def _attr(ds, seed, step) -> np.ndarray:
    da = ds["attribution"]
    sel = {"step": step}
    if "seed" in da.dims:
        sel["seed"] = seed
    da = da.sel(sel)
    a = np.asarray(da.values, dtype=float)
    if a.ndim == 3:  # not channel-summed: sum it here
        a = a.sum(axis=da.dims.index("channel") if "channel" in da.dims else 0)
    return a


def _overlay(ax, base: np.ndarray, attr: np.ndarray | None, *, gray=True, alpha_max=0.85):
    """Show ``base`` and blend the signed attribution over it (per-panel 99th-pct |a| scale)."""
    h, w = base.shape[:2]
    extent = (0, w, h, 0)
    if gray or base.ndim == 2:
        ax.imshow(_gray(base), cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    else:
        ax.imshow(base, extent=extent, interpolation="nearest")
    if attr is not None:
        finite = np.abs(attr[np.isfinite(attr)])
        vmax = float(np.percentile(finite, 99)) if finite.size else 0.0
        if vmax > 0:
            an = np.clip(np.nan_to_num(attr / vmax), -1.0, 1.0)
            rgba = colormaps[ATTR_CMAP]((an + 1.0) / 2.0)
            rgba[..., 3] = alpha_max * np.abs(an)
            ax.imshow(rgba, extent=extent, interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "all zero", transform=ax.transAxes, ha="center", va="center",
                    fontsize=7, color="w")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _attr_colorbar(fig, axes):
    sm = ScalarMappable(norm=Normalize(-1, 1), cmap=ATTR_CMAP)
    cb = fig.colorbar(sm, ax=axes, shrink=0.6, pad=0.02, aspect=30)
    cb.set_label("attribution / 99th pct |a| (per panel)", fontsize=8)
    cb.set_ticks([-1, 0, 1])
    cb.ax.tick_params(labelsize=7)
    return cb


def _seed_of(ds, seed):
    seeds = [s.item() if hasattr(s, "item") else s for s in np.asarray(ds["seed"].values)]
    if seed is None:
        return seeds[0]
    if seed not in seeds:
        raise DiffxaiError(f"seed {seed} not in dataset of class {ds.attrs.get('cls', '?')!r} "
                           f"(has {seeds})")
    return seed


def _log_snr_map(ds):
    """(steps, log_snr) along the step axis, or None."""
    steps = np.asarray(ds["step"].values, dtype=float)
    if "log_snr" in ds.coords or "log_snr" in ds.variables:
        l = np.asarray(ds["log_snr"].values, dtype=float)
    elif ds.attrs.get("alphas_cumprod") is not None:
        from .onset import log_snr_at
        l = np.asarray(log_snr_at(steps, ds.attrs["alphas_cumprod"]), dtype=float)
    else:
        return None
    order = np.argsort(steps)
    steps, l = steps[order], l[order]
    ok = np.isfinite(l)
    if ok.sum() < 2 or np.any(np.diff(l[ok]) <= 0):
        return None
    return steps[ok], l[ok]


def _lin_interp(x, xp, fp):
    """np.interp with linear extrapolation (secondary axes must map the whole view)."""
    x = np.asarray(x, dtype=float)
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y = np.where(lo, fp[0] + (x - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0]), y)
    return np.where(hi, fp[-1] + (x - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2]), y)


def _fmt(v, spec=".1f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(float(v), spec)


def _row_for(onset, cls):
    if onset is None or len(onset) == 0 or "cls" not in onset.columns:
        return None
    rows = onset[onset["cls"].astype(str) == str(cls)]
    return None if rows.empty else rows.iloc[0]


# --------------------------------------------------------------------------------------------------
# Fig. 5: softmax of the true class along the trajectory
# --------------------------------------------------------------------------------------------------
def _median_band(curves: np.ndarray, ci: float = 0.95, n_boot: int = 500):
    """Pointwise median over rows and a percentile-bootstrap CI of it (rows resampled; fixed seed)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, curves.shape[0], size=(n_boot, curves.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(curves, 0)
        boot = np.nanmedian(curves[idx], axis=1)
        a = 100 * (1 - ci) / 2
        return med, np.nanpercentile(boot, a, 0), np.nanpercentile(boot, 100 - a, 0)


def _class_curves(ds):
    """Sorted steps k, p_true (image, seed, step), each image's seed mean and the drawn (line, lo,
    hi): one image: seed mean and min-max over seeds; several: median over images and its band."""
    da = ds["p_true"]
    for dim in ("seed", "image"):
        if dim not in da.dims:
            da = da.expand_dims(dim)
    da = da.transpose("image", "seed", "step")
    k = np.asarray(ds["step"].values, dtype=float)
    p = np.asarray(da.values, dtype=float)
    order = np.argsort(k)
    k, p = k[order], p[:, :, order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps stay NaN
        per_image = np.nanmean(p, 1)  # (image, step)
        if p.shape[0] == 1:
            return k, p, per_image, (per_image[0], np.nanmin(p[0], 0), np.nanmax(p[0], 0))
        return k, p, per_image, _median_band(per_image)


def softmax_curves(probs: Mapping[str, Any], onset, out_png,
                   study: Mapping[str, float] | None = None, *, dpi: int = DPI,
                   threshold: float = 0.5, study_threshold: float = 0.5, pdf=None) -> tuple[Path, Path]:
    """p_true over k per class. One image: seed mean and min-max band over seeds. Several images:
    each image's seed mean (thin), the median over images (bold) and its 95 % bootstrap CI (band).
    Onset line + CI per class; the study's crossings of ``study_threshold`` as markers."""
    fig = Figure(figsize=SOFTMAX_FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    colors = colormaps["tab10"].colors
    kmin, kmax, lsnr_map, classifier = np.inf, -np.inf, None, None
    many = False
    for i, (cls, ds) in enumerate(probs.items()):
        c = colors[i % len(colors)]
        k, p, per_image, (line, lo, hi) = _class_curves(ds)
        many = many or p.shape[0] > 1
        kmin, kmax = min(kmin, k.min()), max(kmax, k.max())
        name = class_label(ds, cls)
        row = _row_for(onset, cls)
        label = name + (f" ({p.shape[0]} images)" if p.shape[0] > 1 else "")
        if row is not None:
            on = row.get("onset", np.nan)
            if np.isfinite(on):
                label += f": onset {_fmt(on)} [{_fmt(row.get('onset_lo'))}, {_fmt(row.get('onset_hi'))}]"
            else:
                label += f": onset n/a ({row.get('flags', '')})"
        if p.shape[0] > 1:
            for curve in per_image:
                ax.plot(k, curve, color=c, lw=0.5, alpha=0.35)
        if p.shape[0] > 1 or p.shape[1] > 1:
            ax.fill_between(k, lo, hi, color=c, alpha=0.18, linewidth=0)
        ax.plot(k, line, color=c, lw=1.8, label=label)
        if row is not None and np.isfinite(row.get("onset", np.nan)):
            ax.axvline(row["onset"], color=c, ls=":", lw=1.4)
            lo_, hi_ = row.get("onset_lo", np.nan), row.get("onset_hi", np.nan)
            if np.isfinite(lo_) and np.isfinite(hi_):
                ax.axvspan(lo_, hi_, color=c, alpha=0.10, linewidth=0)
        if study and cls in study and study[cls] is not None and np.isfinite(study[cls]):
            ax.plot([study[cls]], [study_threshold], marker="v", ms=8, mfc="none", mec=c, mew=1.6,
                    ls="none", zorder=5)
        if lsnr_map is None:
            lsnr_map = _log_snr_map(ds)
        classifier = classifier or ds.attrs.get("classifier")
    ax.axhline(threshold, color="0.4", ls="--", lw=1)
    if np.isfinite(kmin):
        ax.set_xlim(kmin, kmax)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("softmax probability of the true class")
    title = "True-class probability along the DDPM forward trajectory"
    ax.set_title(title + (f" ({classifier})" if classifier else ""), fontsize=10)
    band = ("thin: each image's seed mean; bold: median over images, band: its 95% CI" if many
            else "min–max over seeds (line: seed mean)")
    extra = [Patch(color="0.5", alpha=0.3, label=band),
             Line2D([], [], color="0.3", ls=":", label="onset (shaded: 95% CI)"),
             Line2D([], [], color="0.4", ls="--", label=f"p = {threshold:g}")]
    if study:
        extra.append(Line2D([], [], marker="v", mfc="none", mec="0.3", ls="none",
                            label=f"study's {study_threshold:g} crossing"))
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + extra, loc="best", fontsize=7, framealpha=0.85)
    if lsnr_map is not None:
        ks, ls = lsnr_map
        sec = ax.secondary_xaxis("top", functions=(lambda x: _lin_interp(x, ks, ls),
                                                   lambda y: _lin_interp(y, ls, ks)))
        sec.set_xlabel(LOG_SNR_LABEL, fontsize=8)
        sec.tick_params(labelsize=7)
    return save_figure(fig, out_png, dpi, pdf)


# --------------------------------------------------------------------------------------------------
# Figs. 2-4: one method, classes x steps
# --------------------------------------------------------------------------------------------------
def _col_title(ds, k) -> str:
    s = f"k={int(k)}"
    m = _log_snr_map(ds)
    if m is not None:
        s += f"\nlog-SNR {np.interp(k, *m):.2f}"
    return s


def method_grid(method: str, noised: Mapping[str, Any], attributions: Mapping[str, Any],
                steps_to_show: Sequence[int], out_png, seed=None, *, gray: bool = True,
                dpi: int = DPI, pdf=None, image_labels: Mapping[str, str] | None = None,
                image_note: str = "") -> tuple[Path, Path]:
    """Rows = classes, columns = steps (nearest available); attribution over the noised image.

    Datasets hold one image each (the caller selects it); ``image_labels`` names it per row and
    ``image_note`` says how it was chosen (in the title)."""
    classes = [c for c in attributions if c in noised]
    missing = [c for c in attributions if c not in noised]
    if missing:
        raise DiffxaiError(f"method_grid({method}): no noised dataset for class {missing[0]!r}")
    if not classes:
        raise DiffxaiError(f"method_grid({method}): no classes to show")
    ncols = max(len(list(steps_to_show)), 1)
    nrows = len(classes)
    fig = Figure(figsize=grid_figsize(nrows, ncols), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    first_seed, ref_ks = None, None
    for r, cls in enumerate(classes):
        nd, ad = noised[cls], attributions[cls]
        s = _seed_of(ad, seed)
        first_seed = s if first_seed is None else first_seed
        avail = np.intersect1d(np.asarray(ad["step"].values), np.asarray(nd["step"].values))
        ks = nearest_steps(avail, list(steps_to_show), unique=False)
        ref_ks = ks if ref_ks is None else ref_ks
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(ks):
                ax.set_axis_off()
                continue
            k = ks[c]
            _overlay(ax, _rgb(nd, s, k), _attr(ad, s, k), gray=gray)
            if r == 0:
                ax.set_title(_col_title(nd, k), fontsize=8)
            elif c >= len(ref_ks) or k != ref_ks[c]:  # this class lacks the column's step
                ax.text(0.02, 0.98, f"k={k}", transform=ax.transAxes, va="top", fontsize=6,
                        color="w", bbox=dict(fc="k", alpha=0.5, lw=0, pad=1))
            if c == 0:
                extra = f"\n{image_labels[cls]}" if image_labels and cls in image_labels else ""
                ax.set_ylabel(class_label(nd, cls) + extra, fontsize=9 if not extra else 7)
    _attr_colorbar(fig, axes)
    note = f"; one image per class ({image_note})" if image_note else ""
    fig.suptitle(f"{method_label(method)} along the forward trajectory, seed {first_seed}{note}\n"
                 f"columns: {STEP_LABEL}", fontsize=10)
    return save_figure(fig, out_png, dpi, pdf)


# --------------------------------------------------------------------------------------------------
# Figs. 6-7: around the onset of one class
# --------------------------------------------------------------------------------------------------
def _centre_step(onset_row) -> tuple[float, str]:
    """The onset (or a stated fallback) to centre the panels on."""
    for key, what in (("onset", "onset"), ("threshold_cross", "threshold crossing"),
                      ("midpoint", "logistic midpoint"), ("steepest", "steepest rise")):
        v = onset_row.get(key, np.nan) if onset_row is not None else np.nan
        if v is not None and np.isfinite(v):
            return float(v), what
    return np.nan, ""


def onset_panels(cls: str, noised, attributions: Mapping[str, Any], onset_row, out_png,
                 offsets: Sequence[int] = (-20, -10, 0, 10, 20), seed=None, *,
                 dpi: int = DPI, pdf=None, image_label: str = "") -> tuple[Path, Path]:
    """Columns = steps before, at and after the onset; row 1 the noised image, then one per method."""
    methods = list(attributions)
    if not methods:
        raise DiffxaiError(f"onset_panels({cls}): no attribution methods given")
    avail = np.asarray(noised["step"].values)
    for m in methods:
        avail = np.intersect1d(avail, np.asarray(attributions[m]["step"].values))
    if avail.size == 0:
        raise DiffxaiError(f"onset_panels({cls}): the noised and attribution datasets share no step")
    centre, what = _centre_step(onset_row)
    if np.isfinite(centre):
        ks = nearest_steps(avail, [centre + o for o in offsets], unique=True)
        ks = sorted(ks)
    else:
        ks = pick_steps(avail, len(offsets))
    s = _seed_of(attributions[methods[0]], seed)
    nrows, ncols = 1 + len(methods), len(ks)
    fig = Figure(figsize=grid_figsize(nrows, ncols), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    k_at = nearest_steps(avail, [centre])[0] if np.isfinite(centre) else None
    for c, k in enumerate(ks):
        _overlay(axes[0, c], _rgb(noised, s, k), None, gray=False)
        title = f"k={k}"
        if np.isfinite(centre):
            title += f"\nΔk = {k - centre:+.0f}".replace("-", "−") if k != k_at else f"\nat {what}"
        axes[0, c].set_title(title, fontsize=8)
        for r, m in enumerate(methods, start=1):
            _overlay(axes[r, c], _rgb(noised, s, k), _attr(attributions[m], s, k))
        if k == k_at:
            for r in range(nrows):
                for sp in axes[r, c].spines.values():
                    sp.set_edgecolor("crimson")
                    sp.set_linewidth(2)
    axes[0, 0].set_ylabel(r"noised $x_t$", fontsize=9)
    for r, m in enumerate(methods, start=1):
        axes[r, 0].set_ylabel(method_label(m), fontsize=9)
    _attr_colorbar(fig, axes)  # whole grid: keeps the columns aligned
    name = class_label(noised, cls)
    if onset_row is not None and np.isfinite(onset_row.get("onset", np.nan)):
        sub = (f"onset k={_fmt(onset_row['onset'])} (95% CI {_fmt(onset_row.get('onset_lo'))}–"
               f"{_fmt(onset_row.get('onset_hi'))})")
    elif np.isfinite(centre):
        sub = f"onset n/a ({onset_row.get('flags', '')}); centred on the {what} k={centre:.1f}"
    else:
        flags = onset_row.get("flags", "") if onset_row is not None else "no onset row"
        sub = f"onset n/a ({flags}); evenly spaced steps"
    img = f"\n{image_label}" if image_label else ""
    fig.suptitle(f"{name}: attributions around the onset, seed {s}{img}\n{sub}; Δk = k − {what or 'onset'}",
                 fontsize=10 if not img else 8)
    return save_figure(fig, out_png, dpi, pdf)
