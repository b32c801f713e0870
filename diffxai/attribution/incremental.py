"""Exact incremental forward passes for Occlusion on EfficientNet-Lite0.

An occluded copy of an image differs from the image only inside one window. Through the first
layers of a convolutional network the *change* stays local: a k x k convolution with stride s
widens it by k - 1 input pixels and shrinks it by s. EfficientNet-Lite0 spends much of its time in
the stem and the first blocks (112, 56, 28 px maps), where a 15 px window changes a 9x9 .. 11x11
box. So, per image, the clean activations of those layers are computed once; per occluded copy
only the changed box is recomputed, layer by layer, from the new values inside it and the cached
clean values around it (the receptive field). At the *cut* block the box is written into the
cached clean map and the rest of the network runs on full maps as usual.

This is the same function, not an approximation: every recomputed value is the same sum of the same
products as in the full forward (only the summation order inside a convolution may differ, i.e.
float32 rounding), and every value outside the box is *equal* to the clean one because nothing in
its receptive field changed. Zero padding (TensorFlow 'SAME', asymmetric for stride 2) is kept
exact: the cached maps are zero-padded with the model's own padding, and any part of a recomputed
box that lies outside a map is zeroed before it feeds a convolution.

Boxes have one fixed size per level (the largest over all windows) and a start per window
position, tabulated once per setting, so batches keep one shape whatever the window stride.
:func:`plan_for` picks the deepest cut whose box still covers at most ``MAX_BOX_FRACTION`` of its
map and returns None (the engine then runs full forwards) for other models.

This is the one module outside diffxai.models that reads EfficientNet-Lite0's internals.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ..models import _LITE0_BLOCKS, EfficientNetLite0, same_pad
from .methods import shift_counts

#: deepest cut (block index) considered
MAX_CUT_BLOCK = 15
#: the cut is the deepest block whose box covers at most this fraction of its map (area)
MAX_BOX_FRACTION = 0.5


@dataclass(frozen=True)
class _Axis:
    """One axis of a box at one level: start per window position q, fixed length L, map size n."""

    starts: tuple
    L: int
    n: int


@dataclass(frozen=True)
class _Conv:
    """One axis of a spatial conv step: the input box, the output box, and the input region the
    output box reads (start per q, length) with the input box's offset inside it (per q)."""

    inp: _Axis
    out: _Axis
    region: tuple
    R: int
    off: tuple


def _conv_axis(a: _Axis, k: int, s: int) -> _Conv:
    pb = same_pad(a.n, k, s)[0]
    lo = [-((-(b - k + 1 + pb)) // s) for b in a.starts]  # first output reading the box (ceil)
    hi = [(b + a.L - 1 + pb) // s for b in a.starts]  # last one
    L = max(h - l + 1 for l, h in zip(lo, hi))
    out = _Axis(tuple(lo), L, -(-a.n // s))
    region = tuple(l * s - pb for l in lo)
    return _Conv(a, out, region, (L - 1) * s + k, tuple(b - r for b, r in zip(a.starts, region)))


def _margins(starts, L, n):
    """Zero padding (before, after) so that every [start, start + L) lies inside the padded map."""
    return max(0, -min(starts)), max(0, max(starts) + L - n)


class IncrementalOcclusion(nn.Module):
    """Logits of EfficientNet-Lite0 on occluded copies of a few cached images.

    ``load(slot, x)`` caches image x (C, H, W) in slot ``slot``; ``forward(slots, idx)`` returns the
    logits (B, classes) of the copies ``idx`` (Occlusion expansion indices: 0 = unoccluded, p + 1 =
    Captum feature number p) of the images in ``slots``. Build it with :func:`plan_for`.
    """

    def __init__(self, model: EfficientNetLite0, shape, window, stride, baseline: float, cut: int, n_slots: int,
                 channels_last: bool = False):
        super().__init__()
        self.model = model
        self.shape = tuple(shape)
        self.window = tuple(window)
        self.stride = tuple(stride)
        self.baseline = float(baseline)
        self.cut = cut
        self.n_slots = n_slots
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.shift_counts = shift_counts(self.shape, self.window, self.stride)
        self.convs = plan_axes(self.shape, self.window, self.stride, cut)  # [(y, x)] per spatial conv
        self.cut_box = (self.convs[-1][0].out, self.convs[-1][1].out)
        # padding of the cached conv inputs (input image, then each block's depthwise input), of the
        # cached block inputs for residual adds (read over the output box), and of the cut map
        self.pad_in = [tuple(_margins(c.region, c.R, c.inp.n) for c in yx) for yx in self.convs]
        self.pad_res = [tuple(_margins(c.out.starts, c.out.L, c.out.n) for c in yx) for yx in self.convs[1:]]
        self.pad_cut = tuple(_margins(a.starts, a.L, a.n) for a in self.cut_box)
        # the per-q tables as tensors on the model's device, indexed by each copy's window position
        dev = next(model.parameters()).device
        for j, (cy, cx) in enumerate(self.convs):
            for ax, c, (plo, _) in (("y", cy, self.pad_in[j][0]), ("x", cx, self.pad_in[j][1])):
                for name, v in (("region", [r + plo for r in c.region]), ("off", c.off),
                                ("start", c.inp.starts), ("ostart", c.out.starts)):
                    self.register_buffer(f"{name}{j}{ax}", torch.tensor(v, device=dev), persistent=False)
        self._caches: dict[str, torch.Tensor] = {}
        self.tail = None  # set by use_tail

    def use_tail(self, kind: str) -> None:
        """Run blocks cut+1.. and the head as the model does ("model"), or BN-folded with fused
        epilogues (:mod:`.fused_tail`): "folded" (its PyTorch reference), "fused" (the Triton
        3xTF32 kernel on CUDA; the PyTorch reference elsewhere)."""
        if kind == "model":
            self.tail = None
            return
        from .fused_tail import FusedTail

        dev = next(self.model.parameters()).device
        pw = "triton" if kind == "fused" and dev.type == "cuda" else "torch"
        self.tail = FusedTail(self.model, first=self.cut + 1, pointwise=pw)

    # ---------------------------------------------------------------- clean caches
    def _store(self, name, slot, t, pads):
        (ylo, yhi), (xlo, xhi) = pads
        buf = self._caches.get(name)
        C, h, w = t.shape
        if buf is None or buf.device != t.device:
            buf = torch.zeros((self.n_slots, C, h + ylo + yhi, w + xlo + xhi), dtype=t.dtype, device=t.device)
            self._caches[name] = buf
        buf[slot, :, ylo:ylo + h, xlo:xlo + w] = t

    @torch.no_grad()
    def load(self, slot: int, x: torch.Tensor) -> None:
        """Cache the clean activations of image x (C, H, W) in ``slot``."""
        m = self.model
        x = x.unsqueeze(0)
        self._store("in0", slot, x[0], self.pad_in[0])
        a = nn.functional.relu6(m._bn0(m._conv_stem(x)))
        for b in range(self.cut + 1):
            blk = m._blocks[b]
            if blk.skip:
                self._store(f"res{b}", slot, a[0], self.pad_res[b])
            e = nn.functional.relu6(blk._bn0(blk._expand_conv(a))) if blk.expand else a
            self._store(f"in{b + 1}", slot, e[0], self.pad_in[b + 1])
            a = blk(a)
        self._store("cut", slot, a[0], self.pad_cut)

    # ---------------------------------------------------------------- batched forward
    @staticmethod
    def _grid(y0, x0, Ly, Lx):
        dev = y0.device
        rows = y0.view(-1, 1) + torch.arange(Ly, device=dev)
        cols = x0.view(-1, 1) + torch.arange(Lx, device=dev)
        return rows[:, :, None], cols[:, None, :]

    def _gather(self, buf, slots, y0, x0, Ly, Lx):
        """buf[slots[i], :, y0[i]:y0[i]+Ly, x0[i]:x0[i]+Lx] for every i -> (B, C, Ly, Lx), a copy."""
        r, c = self._grid(y0, x0, Ly, Lx)
        return buf[slots.view(-1, 1, 1), :, r, c].permute(0, 3, 1, 2).contiguous(memory_format=self.fmt)

    def _put(self, dst, t, y0, x0):
        """dst[i, :, y0[i]:y0[i]+h, x0[i]:x0[i]+w] = t[i] for every i (in place)."""
        r, c = self._grid(y0, x0, t.shape[2], t.shape[3])
        bi = torch.arange(dst.shape[0], device=dst.device).view(-1, 1, 1)
        dst[bi, :, r, c] = t.permute(0, 2, 3, 1).to(dst.dtype)
        return dst

    @staticmethod
    def _mask(t, y0, x0, ny, nx):
        """Zero the positions of boxes (B, C, h, w) starting at (y0, x0) that lie outside the map."""
        dev = t.device
        py = y0.view(-1, 1) + torch.arange(t.shape[2], device=dev)
        px = x0.view(-1, 1) + torch.arange(t.shape[3], device=dev)
        m = ((py >= 0) & (py < ny))[:, None, :, None] & ((px >= 0) & (px < nx))[:, None, None, :]
        return t * m.to(t.dtype)

    def _conv_input(self, j, name, t, qy, qx, slots):
        """The conv input over conv j's region: cached clean values with the box replaced by t
        (t already zero outside the map)."""
        cy, cx = self.convs[j]
        R = self._gather(self._caches[name], slots, getattr(self, f"region{j}y")[qy],
                         getattr(self, f"region{j}x")[qx], cy.R, cx.R)
        return self._put(R, t, getattr(self, f"off{j}y")[qy], getattr(self, f"off{j}x")[qx])

    def forward(self, slots: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        m = self.model
        C = self.shape[0]
        p = (idx - 1).clamp(min=0)
        sc0, sc1, sc2 = self.shift_counts
        c0 = (p % sc0) * self.stride[0]
        qy = (p // sc0) % sc1
        qx = p // (sc0 * sc1) % sc2
        # level 0: the window box of the input, occluded channels set to the baseline
        cy, cx = self.convs[0]
        (ylo, _), (xlo, _) = self.pad_in[0]
        y0, x0 = self.start0y[qy], self.start0x[qx]
        t = self._gather(self._caches["in0"], slots, y0 + ylo, x0 + xlo, cy.inp.L, cx.inp.L)
        ch = torch.arange(C, device=idx.device).view(1, -1)
        occ = (ch >= c0.view(-1, 1)) & (ch < (c0 + self.window[0]).view(-1, 1)) & (idx > 0).view(-1, 1)
        t = torch.where(occ[:, :, None, None], torch.full_like(t, self.baseline), t)
        t = self._mask(t, y0, x0, cy.inp.n, cx.inp.n)  # outside the image: zero padding, not the baseline
        a = nn.functional.relu6(m._bn0(m._conv_stem[1](self._conv_input(0, "in0", t, qy, qx, slots))))
        for b in range(self.cut + 1):
            blk = m._blocks[b]
            j = b + 1
            cy, cx = self.convs[j]
            y0, x0 = getattr(self, f"start{j}y")[qy], getattr(self, f"start{j}x")[qx]
            e = nn.functional.relu6(blk._bn0(blk._expand_conv(a))) if blk.expand else a
            e = self._mask(e, y0, x0, cy.inp.n, cx.inp.n)
            h = nn.functional.relu6(blk._bn1(blk._depthwise_conv[1](self._conv_input(j, f"in{j}", e, qy, qx, slots))))
            h = blk._bn2(blk._project_conv(h))
            if blk.skip:  # the block input over the output box: cached, the changed box replaced
                (rylo, _), (rxlo, _) = self.pad_res[b]
                oy0, ox0 = getattr(self, f"ostart{j}y")[qy], getattr(self, f"ostart{j}x")[qx]
                X = self._gather(self._caches[f"res{b}"], slots, oy0 + rylo, ox0 + rxlo, cy.out.L, cx.out.L)
                h = h + self._put(X, a, y0 - oy0, x0 - ox0)
            a = h
        # the cut: write each box into its image's clean map, then the rest of the network
        ay, ax = self.cut_box
        (ylo, _), (xlo, _) = self.pad_cut
        j = self.cut + 1
        full = self._caches["cut"][slots]  # (B, C, H + pads, W + pads), a copy
        full = self._put(full, a, getattr(self, f"ostart{j}y")[qy] + ylo, getattr(self, f"ostart{j}x")[qx] + xlo)
        x = full[:, :, ylo:ylo + ay.n, xlo:xlo + ax.n].contiguous(memory_format=self.fmt)
        if self.tail is not None:  # BN folded, epilogues fused (opt-in: EngineOptions.occlusion_tail)
            return self.tail(x)
        for blk in m._blocks[self.cut + 1:]:
            x = blk(x)
        x = nn.functional.relu6(m._bn1(m._conv_head(x)))
        return m._fc(x.mean((2, 3)))


def plan_axes(shape, window, stride, cut: int):
    """Box geometry per spatial conv (stem, then the depthwise conv of blocks 0..cut): [(y, x)]."""
    _, H, W = shape
    out = []
    axes = []
    for d, w, s, Q in zip((H, W), window[1:], stride[1:], shift_counts(shape, window, stride)[1:]):
        axes.append(_Axis(tuple(q * s for q in range(Q)), w, d))
    convs = [(3, 2)] + [(k, s) for (k, s, *_r) in _LITE0_BLOCKS[: cut + 1]]
    for k, s in convs:
        cy, cx = _conv_axis(axes[0], k, s), _conv_axis(axes[1], k, s)
        out.append((cy, cx))
        axes = [cy.out, cx.out]
    return out


def plan_for(model: nn.Module, shape, window, stride, baseline: float, n_slots: int,
             channels_last: bool = False, max_cut: int | None = None) -> IncrementalOcclusion | None:
    """An :class:`IncrementalOcclusion` for ``model`` and these Occlusion settings, or None where the
    incremental path does not apply (not EfficientNet-Lite0, or a box that covers more than
    ``MAX_BOX_FRACTION`` of the map already after block 0). ``max_cut``: deepest block to cut
    at (default ``MAX_CUT_BLOCK``)."""
    if type(model) is not EfficientNetLite0 or len(shape) != 3:
        return None
    if window[0] > shape[0] or any(w > d for w, d in zip(window, shape)):
        return None
    limit = MAX_CUT_BLOCK if max_cut is None else max_cut
    geo = plan_axes(shape, window, stride, min(limit, len(_LITE0_BLOCKS) - 1))
    cut = None
    for b in range(len(geo) - 1):  # geo[b + 1]: block b's depthwise conv
        oy, ox = geo[b + 1][0].out, geo[b + 1][1].out
        if oy.L * ox.L <= MAX_BOX_FRACTION * oy.n * ox.n:
            cut = b
        else:
            break
    if cut is None:
        return None
    return IncrementalOcclusion(model, shape, window, stride, baseline, cut, n_slots, channels_last)


#: plans per base model. A plan holds its model, so (as with prepare._prepared, whose entry may be
#: the model itself) an entry lives as long as the process: one model per job.
_plans: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def cached_plan(model: nn.Module, shape, window, stride, baseline: float, n_slots: int, *,
                channels_last: bool = False, max_cut: int | None = None, compile: bool = False,
                compile_mode: str | None = None, tail: str = "model"):
    """(plan, module to run) for these settings, built once per setting and model (so a compiled
    module is never recompiled), or (None, None) where :func:`plan_for` refuses. ``tail``: see
    :meth:`IncrementalOcclusion.use_tail`."""
    key = (tuple(shape), tuple(window), tuple(stride), baseline, n_slots, bool(compile), compile_mode,
           channels_last, max_cut, tail)
    cache = _plans.setdefault(model, {})
    if key not in cache:
        plan = plan_for(model, shape, window, stride, baseline, n_slots=n_slots, channels_last=channels_last,
                        max_cut=max_cut)
        if plan is not None:
            plan.use_tail(tail)
        run = plan if plan is None or not compile else torch.compile(plan, mode=compile_mode, dynamic=False)
        cache[key] = (plan, run)
    return cache[key]
