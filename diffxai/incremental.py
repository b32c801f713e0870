"""Exact incremental forward passes for Occlusion on EfficientNet-Lite0.

An occluded copy of an image differs from the image only inside one window. Through the first
layers of a convolutional network the *change* stays local: a k x k convolution with stride s
widens it by k - 1 input pixels and shrinks it by s. EfficientNet-Lite0 spends about two thirds of
its activation traffic in the stem and blocks 0-4 (112, 56 and 28 px maps), where a 15 px window
changes a 9x9 .. 11x11 box out of 112x112 .. 28x28. So, per image, the clean activations of those
layers are computed once; per occluded copy only the changed box is recomputed, layer by layer,
from the new values inside it and the cached clean values around it (the receptive field). At the
*cut* (the end of block 4 for a stride of 8) the box is written into the cached clean map and the
rest of the network runs on full maps as usual.

This is the same function, not an approximation: every recomputed value is the same sum of the same
products as in the full forward (only the summation order inside a convolution may differ, i.e.
float32 rounding), and every value outside the box is *equal* to the clean one because nothing in
its receptive field changed. Zero padding (TensorFlow 'SAME', asymmetric for stride 2) is kept
exact: the cached maps are zero-padded with the model's own padding, and any part of a recomputed
box that lies outside a map is zeroed before it feeds a convolution.

The boxes must move by whole positions from one window to the next at every level up to the cut,
which needs the window stride to be a multiple of the cumulative stride there (2, 4 or 8 for the
cuts after the stem/block 0, block 2, block 4); :func:`plan_for` picks the deepest such cut and
returns None (the engine then runs full forwards) for other models, odd strides or windows so large
that the box would cover most of the map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .models import _LITE0_BLOCKS, EfficientNetLite0

#: deepest cut (block index) tried; past block 4 the stride (16) no longer divides a stride-8
#: window grid and the boxes cover most of the 14 px maps anyway
MAX_CUT_BLOCK = 4
#: use the incremental path only if the box at the cut covers at most this fraction of the map
MAX_BOX_FRACTION = 0.5


def _same_pad_before(n: int, k: int, s: int) -> int:
    """TensorFlow 'SAME' padding before the first element (models._SamePad)."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2


@dataclass(frozen=True)
class _Box:
    """Per-axis box at one level: start ``c + step * q`` for shift index q, length L, map size n."""

    c: int
    L: int
    step: int
    n: int


def _conv_box(b: _Box, k: int, s: int):
    """Output box of a k/s SAME conv whose input changes in box b, and the input region that output
    box reads: (out box, region start offset relative to b (<= 0), region length)."""
    pb = _same_pad_before(b.n, k, s)
    n_out = -(-b.n // s)
    c_out = -((-(b.c - k + 1 + pb)) // s)  # ceil
    hi = (b.c + b.L - 1 + pb) // s
    out = _Box(c_out, hi - c_out + 1, b.step // s, n_out)
    r0 = c_out * s - pb  # region start at q = 0
    return out, r0, (out.L - 1) * s + k


class _Level:
    """A cached clean map (zero-padded by ``lo``/``hi`` per axis) and the box read from it."""

    def __init__(self, n, lo, hi):
        self.n, self.lo, self.hi = n, lo, hi


class IncrementalOcclusion(nn.Module):
    """Logits of EfficientNet-Lite0 on occluded copies of a few cached images.

    ``load(slot, x)`` caches image x (C, H, W) in slot ``slot``; ``forward(slots, idx)`` returns the
    logits (B, classes) of the copies ``idx`` (Occlusion expansion indices: 0 = unoccluded, p + 1 =
    Captum feature number p) of the images in ``slots``. Build it with :func:`plan_for`.
    """

    def __init__(self, model: EfficientNetLite0, shape, window, stride, baseline: float, cut: int, n_slots: int,
                 channels_last: bool = False):
        super().__init__()
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model
        self.shape = tuple(shape)
        self.window = tuple(window)
        self.stride = tuple(stride)
        self.baseline = float(baseline)
        self.cut = cut
        self.n_slots = n_slots
        C, H, W = self.shape
        self.shift_counts = tuple(int(math.ceil((d - w) / s)) + 1 for d, w, s in zip(self.shape, self.window, self.stride))
        # per axis (H, W): boxes through the levels; level 0 = input, 1 = stem out, b + 2 = block b out
        self.boxes = []  # per spatial conv: (in box y, in box x, out y, out x, r0 y, r0 x, R y, R x)
        by = _Box(0, self.window[1], self.stride[1], H)
        bx = _Box(0, self.window[2], self.stride[2], W)
        convs = [(3, 2)] + [(blk[0], blk[1]) for blk in _LITE0_BLOCKS[: cut + 1]]
        for k, s in convs:
            oy, r0y, Ry = _conv_box(by, k, s)
            ox, r0x, Rx = _conv_box(bx, k, s)
            self.boxes.append((by, bx, oy, ox, r0y, r0x, Ry, Rx))
            by, bx = oy, ox
        self.cut_box = (by, bx)

        # margins of the cached maps: every region/box read from them must lie inside the padded map
        def margins(c0, L, step, q_count, n):
            return max(0, -c0), max(0, c0 + step * (q_count - 1) + L - n)

        Qy, Qx = self.shift_counts[1], self.shift_counts[2]
        self.conv_in = []  # padded conv-input cache per spatial conv (input image, E of each block)
        for (iy, ix, oy, ox, r0y, r0x, Ry, Rx) in self.boxes:
            ly = margins(r0y, Ry, iy.step, Qy, iy.n)
            lx = margins(r0x, Rx, ix.step, Qx, ix.n)
            self.conv_in.append((ly, lx))
        self.res_in = []  # padded block-input cache for residual adds (read at the output box)
        for (iy, ix, oy, ox, *_r) in self.boxes[1:]:
            self.res_in.append((margins(oy.c, oy.L, oy.step, Qy, oy.n), margins(ox.c, ox.L, ox.step, Qx, ox.n)))
        cy, cx = self.cut_box
        self.cut_pad = (margins(cy.c, cy.L, cy.step, Qy, cy.n), margins(cx.c, cx.L, cx.step, Qx, cx.n))
        self._caches: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------- clean caches
    def _store(self, name, slot, t, pads):
        (ylo, yhi), (xlo, xhi) = pads
        buf = self._caches.get(name)
        C, h, w = t.shape
        if buf is None:
            buf = torch.zeros((self.n_slots, C, h + ylo + yhi, w + xlo + xhi), dtype=t.dtype, device=t.device)
            self._caches[name] = buf
        buf[slot, :, ylo:ylo + h, xlo:xlo + w] = t

    @torch.no_grad()
    def load(self, slot: int, x: torch.Tensor) -> None:
        """Cache the clean activations of image x (C, H, W) in ``slot``."""
        m = self.model
        x = x.unsqueeze(0)
        self._store("in0", slot, x[0], self.conv_in[0])
        a = nn.functional.relu6(m._bn0(m._conv_stem(x)))
        for b in range(self.cut + 1):
            blk = m._blocks[b]
            if blk.skip:
                self._store(f"res{b}", slot, a[0], self.res_in[b])
            e = nn.functional.relu6(blk._bn0(blk._expand_conv(a))) if blk.expand else a
            self._store(f"in{b + 1}", slot, e[0], self.conv_in[b + 1])
            a = blk(a)
        self._store("cut", slot, a[0], self.cut_pad)

    # ---------------------------------------------------------------- batched forward
    @staticmethod
    def _gather(buf, slots, y0, x0, Ly, Lx):
        """buf[slots[i], :, y0[i]:y0[i]+Ly, x0[i]:x0[i]+Lx] for every i -> (B, C, Ly, Lx)."""
        dev = buf.device
        rows = y0.view(-1, 1) + torch.arange(Ly, device=dev)
        cols = x0.view(-1, 1) + torch.arange(Lx, device=dev)
        out = buf[slots.view(-1, 1, 1), :, rows[:, :, None], cols[:, None, :]]  # (B, Ly, Lx, C)
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def _inside(box: _Box, q: torch.Tensor):
        """(B, L) bool: which positions of the box lie inside the map."""
        pos = box.c + box.step * q.view(-1, 1) + torch.arange(box.L, device=q.device)
        return (pos >= 0) & (pos < box.n)

    def _mask(self, t, by, bx, qy, qx):
        m = self._inside(by, qy)[:, None, :, None] & self._inside(bx, qx)[:, None, None, :]
        return t * m.to(t.dtype)

    def _region(self, name, pads, t, by, bx, r0y, r0x, Ry, Rx, qy, qx, slots):
        """The conv input over the region (Ry, Rx): cached clean values, the box replaced by t."""
        (ylo, _), (xlo, _) = pads
        R = self._gather(self._caches[name], slots, r0y + by.step * qy + ylo, r0x + bx.step * qx + xlo, Ry, Rx)
        R = R.clone(memory_format=self.fmt)
        oy, ox = by.c - r0y, bx.c - r0x
        R[:, :, oy:oy + by.L, ox:ox + bx.L] = t
        return R

    def forward(self, slots: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        m = self.model
        C = self.shape[0]
        p = (idx - 1).clamp(min=0)
        sc0, sc1 = self.shift_counts[0], self.shift_counts[1]
        c0 = (p % sc0) * self.stride[0]
        qy = (p // sc0) % sc1
        qx = p // (sc0 * sc1) % self.shift_counts[2]
        # level 0: the window box of the input, occluded channels set to the baseline
        by, bx = self.boxes[0][0], self.boxes[0][1]
        (ylo, _), (xlo, _) = self.conv_in[0]
        t = self._gather(self._caches["in0"], slots, by.step * qy + ylo, bx.step * qx + xlo, by.L, bx.L)
        ch = torch.arange(C, device=idx.device).view(1, -1)
        occ = (ch >= c0.view(-1, 1)) & (ch < (c0 + self.window[0]).view(-1, 1)) & (idx > 0).view(-1, 1)
        t = torch.where(occ[:, :, None, None], torch.full_like(t, self.baseline), t)
        t = self._mask(t, by, bx, qy, qx)  # outside the image: zero padding, not the baseline
        # stem
        iy, ix, oy, ox, r0y, r0x, Ry, Rx = self.boxes[0]
        R = self._region("in0", self.conv_in[0], t, iy, ix, r0y, r0x, Ry, Rx, qy, qx, slots)
        a = nn.functional.relu6(m._bn0(m._conv_stem[1](R)))
        for b in range(self.cut + 1):
            blk = m._blocks[b]
            iy, ix, oy, ox, r0y, r0x, Ry, Rx = self.boxes[b + 1]
            e = nn.functional.relu6(blk._bn0(blk._expand_conv(a))) if blk.expand else a
            e = self._mask(e, iy, ix, qy, qx)
            R = self._region(f"in{b + 1}", self.conv_in[b + 1], e, iy, ix, r0y, r0x, Ry, Rx, qy, qx, slots)
            h = nn.functional.relu6(blk._bn1(blk._depthwise_conv[1](R)))
            h = blk._bn2(blk._project_conv(h))
            if blk.skip:  # the block input over the output box: cached, the changed box replaced
                (rylo, _), (rxlo, _) = self.res_in[b]
                X = self._gather(self._caches[f"res{b}"], slots, oy.c + oy.step * qy + rylo,
                                 ox.c + ox.step * qx + rxlo, oy.L, ox.L).clone(memory_format=self.fmt)
                X[:, :, iy.c - oy.c:iy.c - oy.c + iy.L, ix.c - ox.c:ix.c - ox.c + ix.L] = a
                h = h + X
            a = h
        # the cut: write each box into its image's clean map, then the rest of the network
        cy, cx = self.cut_box
        (ylo, yhi), (xlo, xhi) = self.cut_pad
        full = self._caches["cut"][slots]  # (B, C, H + pads, W + pads)
        dev = idx.device
        rows = cy.c + cy.step * qy.view(-1, 1) + ylo + torch.arange(cy.L, device=dev)
        cols = cx.c + cx.step * qx.view(-1, 1) + xlo + torch.arange(cx.L, device=dev)
        bi = torch.arange(full.shape[0], device=dev).view(-1, 1, 1)
        full[bi, :, rows[:, :, None], cols[:, None, :]] = a.permute(0, 2, 3, 1).to(full.dtype)
        x = full[:, :, ylo:ylo + cy.n, xlo:xlo + cx.n].contiguous(memory_format=self.fmt)
        for blk in m._blocks[self.cut + 1:]:
            x = blk(x)
        x = nn.functional.relu6(m._bn1(m._conv_head(x)))
        return m._fc(x.mean((2, 3)))


def plan_for(model: nn.Module, shape, window, stride, baseline: float, n_slots: int,
             channels_last: bool = False) -> IncrementalOcclusion | None:
    """An :class:`IncrementalOcclusion` for ``model`` and these Occlusion settings, or None where the
    incremental path does not apply (not EfficientNet-Lite0, a window stride not divisible by 2,
    boxes that would cover most of the map)."""
    if type(model) is not EfficientNetLite0 or len(shape) != 3:
        return None
    C, H, W = shape
    if window[0] > C or any(w > d for w, d in zip(window, shape)):
        return None
    # cumulative stride after the stem and each block
    cum, S = [], 2
    for b, (k, s, *_rest) in enumerate(_LITE0_BLOCKS):
        S *= s
        cum.append(S)
    cut = None
    for b in range(min(MAX_CUT_BLOCK, len(cum) - 1), -1, -1):
        if stride[1] % cum[b] == 0 and stride[2] % cum[b] == 0:
            cut = b
            break
    if cut is None:
        return None
    inc = IncrementalOcclusion(model, shape, window, stride, baseline, cut, n_slots, channels_last)
    cy, cx = inc.cut_box
    if cy.L * cx.L > MAX_BOX_FRACTION * cy.n * cx.n:
        return None
    return inc
