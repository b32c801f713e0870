"""The tail of EfficientNet-Lite0 (blocks ``first``..15 and the head) with BatchNorm folded into the
convolutions, ReLU6 and the residual add applied in each pointwise convolution's epilogue, and
optionally only the target's row of the classifier.

This is what the incremental Occlusion module runs after its cut (:mod:`.incremental`): full maps of
14 px and less, where 1x1 convolutions (GEMMs of (B * H * W) x C_in by C_in x C_out) are most of
the work. The arithmetic is written once here, with the pointwise step as a pluggable function:

* ``pointwise="torch"``: the PyTorch reference (a matmul, bias, ReLU6, residual), which the tests
  compare with the model's own tail;
* ``pointwise="triton"``: :func:`diffxai.attribution.triton_pointwise.pointwise`, the same epilogue
  fused into a tensor-core GEMM with 3xTF32 split products (fp32-level accuracy).

Activations stay NHWC (channels_last) throughout, so a pointwise convolution is a matmul on a
(B * H * W, C) view without copies. BN folding changes rounding only (the folded weights are
computed in float64); :func:`fold` is the one place it happens for this tail.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffxaiError
from ..models import EfficientNetLite0, fold_conv_bn, same_pad

#: first block of the tail when the incremental cut is after block 6 (the study's Occlusion setting)
FIRST_BLOCK = 7


@dataclass(frozen=True)
class _Block:
    """One MBConv block, BN folded: 1x1 expand (w (mid, cin), b), depthwise (w (mid, 1, k, k), b),
    1x1 project (w (cout, mid), b)."""

    expand_w: torch.Tensor | None
    expand_b: torch.Tensor | None
    dw_w: torch.Tensor
    dw_b: torch.Tensor
    kernel: int
    stride: int
    proj_w: torch.Tensor
    proj_b: torch.Tensor
    skip: bool


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    c = fold_conv_bn(conv, bn)
    return c.weight.detach(), c.bias.detach()


def fold(model: EfficientNetLite0, first: int = FIRST_BLOCK) -> tuple[list[_Block], tuple]:
    """The folded blocks ``first``..15 and the head ((w (1280, 320), b), (fc w, fc b))."""
    if type(model) is not EfficientNetLite0:
        raise DiffxaiError(f"the fused Occlusion tail is for EfficientNet-Lite0, got {type(model).__name__}")
    if not 0 <= int(first) <= len(model._blocks):
        raise DiffxaiError(f"fused tail: first block {first} is outside 0..{len(model._blocks)}")
    blocks = []
    for blk in model._blocks[int(first):]:
        ew, eb = _folded(blk._expand_conv, blk._bn0) if blk.expand else (None, None)
        dconv = blk._depthwise_conv[1]
        dw, db = _folded(dconv, blk._bn1)
        pw, pb = _folded(blk._project_conv, blk._bn2)
        blocks.append(_Block(None if ew is None else ew.flatten(1), eb, dw, db, dconv.kernel_size[0],
                             dconv.stride[0], pw.flatten(1), pb, blk.skip))
    hw, hb = _folded(model._conv_head, model._bn1)
    return blocks, ((hw.flatten(1), hb), (model._fc.weight.detach(), model._fc.bias.detach()))


def pointwise_torch(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu6: bool,
                    residual: torch.Tensor | None = None) -> torch.Tensor:
    """The reference epilogue: x (M, C_in) @ w.T + b, then ReLU6, then + residual (M, C_out)."""
    y = torch.addmm(b, x, w.t())
    if relu6:
        y = y.clamp(0.0, 6.0)
    return y if residual is None else y + residual


def _pointwise_fn(name: str | Callable) -> Callable:
    if callable(name):
        return name
    if name == "torch":
        return pointwise_torch
    if name == "triton":
        from .triton_pointwise import pointwise

        return pointwise
    raise DiffxaiError(f"attribution.occlusion_tail pointwise backend {name!r} is not 'torch' or 'triton'")


def _depthwise(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Depthwise k x k conv with TensorFlow 'SAME' padding on NHWC data (returned NHWC)."""
    (top, bottom), (left, right) = (same_pad(n, k, s) for n in x.shape[-2:])
    if top or bottom or left or right:
        x = F.pad(x, [left, right, top, bottom])
    return F.conv2d(x, w, b, stride=s, groups=w.shape[0]).contiguous(memory_format=torch.channels_last)


class FusedTail(nn.Module):
    """``forward(x, target=None)``: the logits (B, classes) of the cut map x (B, C, H, W), or with
    ``target`` (B,) only the target's logit (B,)."""

    def __init__(self, model: EfficientNetLite0, first: int = FIRST_BLOCK, pointwise: str | Callable = "torch"):
        super().__init__()
        self.first = int(first)
        self.blocks, (self.head, self.fc) = fold(model, self.first)
        self.pw = _pointwise_fn(pointwise)

    def _mm(self, x4: torch.Tensor, w, b, relu6: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
        """A 1x1 conv of NHWC x4 (B, C, H, W) as a matmul on its (B*H*W, C) view."""
        B, _, H, W = x4.shape
        flat = x4.permute(0, 2, 3, 1).reshape(B * H * W, -1)
        res = None if residual is None else residual.permute(0, 2, 3, 1).reshape(B * H * W, -1)
        y = self.pw(flat, w, b, relu6, res)
        return y.view(B, H, W, -1).permute(0, 3, 1, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's pooled features (B, 1280)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for blk in self.blocks:
            h = self._mm(x, blk.expand_w, blk.expand_b, True) if blk.expand_w is not None else x
            h = _depthwise(h, blk.dw_w, blk.dw_b, blk.kernel, blk.stride).clamp(0.0, 6.0)
            x = self._mm(h, blk.proj_w, blk.proj_b, False, x if blk.skip else None)
        x = self._mm(x, *self.head, True)
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(x)
        w, b = self.fc
        if target is None:
            return torch.addmm(b, f, w.t())
        return (f * w[target]).sum(1) + b[target]  # only the target's row of the classifier


def model_tail(model: EfficientNetLite0, x: torch.Tensor, first: int = FIRST_BLOCK) -> torch.Tensor:
    """The model's own tail (unfolded, as in its forward) on the cut map x: logits (B, classes)."""
    for blk in model._blocks[int(first):]:
        x = blk(x)
    x = F.relu6(model._bn1(model._conv_head(x)))
    return model._fc(x.mean((2, 3)))


def model_head_input(model: EfficientNetLite0, x: torch.Tensor, first: int = FIRST_BLOCK) -> torch.Tensor:
    """The input of block ``first`` for images x (B, 3, H, W): the cut map the tail starts from."""
    x = F.relu6(model._bn0(model._conv_stem(x)))
    for blk in model._blocks[:int(first)]:
        x = blk(x)
    return x
