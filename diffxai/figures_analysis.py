"""Figures of the analysis stage: metrics vs step and log-SNR with CI bands and the
onset marked, the masks over the clean image, and an animated GIF across steps (Pillow).

Inputs are the Datasets of :mod:`diffxai.analysis.stage` (one class, dim ``xai_method``, as
:func:`diffxai.analysis.stage.combine` assembles them from the stores) and the stores of
docs/DESIGN.md.
Object-oriented matplotlib only (no pyplot state), fixed sizes in inches.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .figures import ATTR_CMAP, DPI, LOG_SNR_LABEL, STEP_LABEL, method_label
from .analysis.metrics import PANELS
from .registry import METHODS

COLOURS = {m: f"C{i}" for i, m in enumerate(METHODS)}  # in registry order


def _save_png(fig: Figure, out_png) -> Path:
    from .store import atomic_path

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(out_png)


def _band(ax, x, da, colour, label, n_boot, level, seed, ls="-"):
    """Mean over (image, seed) with its hierarchical-bootstrap CI band; NaN steps (outside the
    subset) are left out, a lone finite step is a marker."""
    from .analysis.aligned import metric_vs_step

    r = metric_vs_step(da, n_boot=n_boot, level=level, seed=seed)
    m, lo, hi = (np.asarray(r[k].values, float) for k in ("mean", "lo", "hi"))
    ok = np.isfinite(m)
    if not ok.any():
        return
    ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.2, lw=0)
    ax.plot(x[ok], m[ok], ls, color=colour, label=label, marker="o" if ok.sum() < 12 else None, ms=3, lw=1.2)


def _theory_lines(ax, x, ds):
    """The theory's crossover frequency and kept centroid (image, step), mean over images."""
    for k, ls, label in (("crossover_frequency", "-", "crossover f*"), ("spectral_centroid_theory", "--", None)):
        if k in ds:
            v = np.asarray(ds[k].transpose("image", "step").values, float)
            if np.isfinite(v).any():
                ax.plot(x, np.nanmean(v, 0), ls, color="purple", lw=1, label=label)


def metric_figure(ds, onset_row: Mapping | None, cls: str, out_png, *, n_boot: int = 500, level: float = 0.95,
                  seed: int = 0) -> Path:
    """Per metric (rows) vs step and vs log-SNR (columns): mean over (image, seed) with CI bands per
    method, controls in grey, the class onset (and its CI) marked."""
    rows = [p for p in PANELS if p[0] in ds]
    fig = Figure(figsize=(10, 1.9 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), 2, squeeze=False, sharex="col")
    steps = np.asarray(ds["step"].values, float)
    lsnr = np.asarray(ds["log_snr"].values, float) if "log_snr" in ds.coords else steps
    onset = float(onset_row["onset"]) if onset_row is not None else np.nan
    methods = [str(m) for m in ds["xai_method"].values] if "xai_method" in ds.dims else []
    for r, (name, sel, title, chance) in enumerate(rows):
        da = ds[name].sel(sel) if sel else ds[name]
        for c, x in enumerate((steps, lsnr)):
            ax = axes[r, c]
            if "fill" in da.dims:       # one line style per deletion fill
                for m in methods:
                    for f, ls in zip(da["fill"].values, ("-", "-.", "--")):
                        _band(ax, x, da.sel(xai_method=m, fill=f), COLOURS.get(m, "k"),
                              method_label(m) if ls == "-" else None, n_boot, level, seed, ls=ls)
            elif "pair" in da.dims or "band" in da.dims:
                dim = "pair" if "pair" in da.dims else "band"
                for j, lab in enumerate(da[dim].values):
                    _band(ax, x, da.sel({dim: lab}), f"C{j + 3}", str(lab).replace("~", " ~ "), n_boot, level, seed)
            elif "xai_method" in da.dims:
                for m in methods:
                    _band(ax, x, da.sel(xai_method=m), COLOURS.get(m, "k"), method_label(m), n_boot, level, seed)
            else:
                _band(ax, x, da, "k", name, n_boot, level, seed)
            control = f"{name}_input_abs"
            if control in ds:
                _band(ax, x, ds[control].sel(sel) if sel else ds[control], "0.5", "|x| itself", n_boot, level, seed,
                      ls="--")
            if name == "spectral_centroid":
                _theory_lines(ax, x, ds)
            if name == "deletion_auc_raw" and "order" in ds[name].dims:
                rnd = [o for o in ds["order"].values if str(o).startswith("random")]
                first = {"fill": ds["fill"].values[0]} if "fill" in ds[name].dims else {}
                for m in methods if rnd else ():
                    _band(ax, x, ds[name].sel(xai_method=m, order=rnd, **first).mean("order"), COLOURS.get(m, "k"),
                          None, n_boot, level, seed, ls=":")
            if chance is not None:
                ax.axhline(chance, color="0.6", lw=0.7, ls=":")
            if c == 0 and np.isfinite(onset):
                ax.axvline(onset, color="crimson", lw=1)
                lo, hi = (float(onset_row.get(k, np.nan)) for k in ("onset_lo", "onset_hi"))
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.axvspan(lo, hi, color="crimson", alpha=0.08, lw=0)
            if c == 1 and onset_row is not None and np.isfinite(float(onset_row.get("log_snr_onset", np.nan))):
                ax.axvline(float(onset_row["log_snr_onset"]), color="crimson", lw=1)
            ax.set_title(title, fontsize=8, loc="left")
            ax.tick_params(labelsize=7)
            if r == 0 and c == 0:
                ax.text(0.01, 0.9, "red: onset (band: CI)", transform=ax.transAxes, fontsize=6, color="crimson")
        if r == 1 or "pair" in da.dims or "band" in da.dims:
            h, lab = axes[r, 1].get_legend_handles_labels()
            if h:
                axes[r, 1].legend(h, lab, fontsize=6, loc="best")
    axes[-1, 0].set_xlabel(STEP_LABEL, fontsize=8)
    axes[-1, 1].set_xlabel(LOG_SNR_LABEL, fontsize=8)
    n_i = ds.sizes.get("image", 1)
    n_s = ds.sizes.get("seed", 1)
    fig.suptitle(f"{cls}: what the maps show along the trajectory (mean over {n_i} image(s) x {n_s} seed(s), "
                 f"{int(level * 100)} % hierarchical-bootstrap CI)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save_png(fig, out_png)


#: panels of the masks figure: (title, masks tinted together with their colours); masks not named
#: here (user masks) get a panel each
MASK_PANELS = (
    ("outline / interior / background", {"outline": (1.0, 0.15, 0.1), "interior": (0.1, 0.45, 1.0),
                                         "background": (0.35, 0.35, 0.35)}),
    ("detail (fine texture in the interior)", {"detail": (0.0, 0.9, 0.9)}),
    ("edges (strongest blurred Sobel)", {"edges": (1.0, 0.6, 0.0)}),
    ("face / stripes (hand-drawn)", {"face": (1.0, 0.9, 0.0), "stripes": (0.9, 0.0, 0.9)}),
)


def _mask_panels(names) -> list[tuple[str, dict]]:
    """The panels that have at least one of ``names``, then one panel per remaining mask."""
    out, used = [], {"silhouette"}
    for title, tints in MASK_PANELS:
        have = {k: v for k, v in tints.items() if k in names}
        if have:
            out.append((title, have))
            used |= set(have)
    out += [(n, {n: (0.1, 0.8, 0.2)}) for n in names if n not in used]
    return out


def masks_figure(rgb: np.ndarray, masks: Mapping[str, np.ndarray], cls: str, out_png,
                 image_labels=None) -> Path:
    """Rows: images; columns: the clean image with the silhouette's contour, then the masks tinted
    over it (outline/interior/background together, detail, edges, face/stripes, any user mask),
    each named with its share of the image area; the silhouette's contour (yellow) on every panel."""
    from scipy import ndimage

    panels = _mask_panels(list(masks))
    n = rgb.shape[0]
    fig = Figure(figsize=(2.2 * (1 + len(panels)), 2.2 * n + 0.5))
    axes = fig.subplots(n, 1 + len(panels), squeeze=False)
    for i in range(n):
        img = np.asarray(rgb[i], float) / 255.0
        sil = np.asarray(masks["silhouette"][i], bool) if "silhouette" in masks else None
        contour = sil ^ ndimage.binary_erosion(sil, border_value=1) if sil is not None else None
        for j, (title, tints) in enumerate([("clean image", {})] + panels):
            over = img.copy() if not tints else img * 0.45
            shares = []
            for name, col in tints.items():
                m = np.asarray(masks[name][i], bool)
                over[m] = 0.35 * img[m] + 0.65 * np.asarray(col)
                shares.append(f"{name} {m.mean():.0%}")
            if contour is not None:
                over[contour] = (1.0, 1.0, 0.0)
            axes[i, j].imshow(over)
            label = image_labels[i] if (j == 0 and image_labels) else (f"image {i}" if j == 0 else title)
            axes[i, j].set_title(label + ("\n" + ", ".join(shares) if shares else
                                          (f"\nsilhouette {sil.mean():.0%}" if sil is not None else "")), fontsize=6)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"{cls}: masks of the clean image (yellow: silhouette contour; hand-drawn where packaged for "
                 "that image, else GrabCut; analysis.masks.folder replaces any)", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save_png(fig, out_png)


def _to_rgb01(x: np.ndarray) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, 3) in [0, 1]."""
    return np.clip((np.moveaxis(np.asarray(x, float), 0, -1) + 1.0) / 2.0, 0.0, 1.0)


def animation(noised, attributions: Mapping[str, object], p_true: np.ndarray, onset_row: Mapping | None,
              cls: str, out_gif, *, seed=None, frame_ms: int = 250, label: str = "") -> Path:
    """GIF across steps: the noised image, each method's map (signed, per-frame 99th-percentile
    scale) and p(true) vs step with a moving marker. ``noised``: the image's noised Dataset
    (seed, step, channel, y, x); ``attributions``: {method: (seed, step, y, x) Dataset};
    ``p_true``: (seed, step) of that image."""
    from PIL import Image

    from .store import atomic_path

    methods = list(attributions)
    first = attributions[methods[0]]
    seed = int(first["seed"].values[0]) if seed is None else int(seed)
    steps = [int(k) for k in first["step"].values]
    all_steps = np.asarray(noised["step"].values)
    p = np.asarray(p_true, float)
    p_mean = p.mean(0)
    x = noised["x"].sel(seed=seed).transpose("step", "channel", "y", "x")
    maps = {m: np.asarray(a["attribution"].sel(seed=seed).transpose("step", "y", "x").values, float)
            for m, a in attributions.items()}
    fig = Figure(figsize=(2.0 * (2 + len(methods)), 2.4))
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 + len(methods), gridspec_kw={"width_ratios": [1] * (1 + len(methods)) + [1.5]})
    im0 = axes[0].imshow(_to_rgb01(x.isel(step=0).values))
    ims = [axes[j + 1].imshow(np.zeros(maps[m].shape[1:]), cmap=ATTR_CMAP, vmin=-1, vmax=1)
           for j, m in enumerate(methods)]
    for j, m in enumerate(methods):
        axes[j + 1].set_title(method_label(m), fontsize=7)
    for ax in axes[:-1]:
        ax.set_axis_off()
    ax = axes[-1]
    for s in range(p.shape[0]):
        ax.plot(all_steps, p[s], color="0.75", lw=0.6)
    ax.plot(all_steps, p_mean, color="k", lw=1.2)
    if onset_row is not None and np.isfinite(float(onset_row.get("onset", np.nan))):
        ax.axvline(float(onset_row["onset"]), color="crimson", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step k", fontsize=7)
    ax.set_title("p(true); red: onset", fontsize=7)
    ax.tick_params(labelsize=6)
    (marker,) = ax.plot([], [], "o", color="crimson", ms=6)
    title = fig.suptitle("", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    frames = []
    for i, k in enumerate(steps):
        im0.set_data(_to_rgb01(x.sel(step=k).values))
        for j, m in enumerate(methods):
            a = maps[m][i]
            scale = np.percentile(np.abs(a), 99) or 1.0
            ims[j].set_data(np.clip(a / scale, -1, 1))
        pk = p_mean[int(np.flatnonzero(all_steps == k)[0])]
        marker.set_data([k], [pk])
        title.set_text(f"{cls} {label} seed {seed}: step k = {k}, p(true) = {pk:.2f}")
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]).convert(
            "P", palette=Image.ADAPTIVE, colors=128))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(frame_ms), loop=0,
                   optimize=False)
    with atomic_path(out_gif) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    return Path(out_gif)
