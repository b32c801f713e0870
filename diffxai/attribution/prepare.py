"""The module the engine runs: eval mode, optionally BatchNorm-folded, channels_last and
torch.compile'd, cached per (model, settings) until the model's parameters change."""
from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

from .options import EngineOptions, uses_cudagraphs

#: prepared modules per caller model. An entry may be the model itself, so it lives as long as
#: the process (one model per job); it is rebuilt when the model's parameters change.
_prepared: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def fold_batchnorm(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` with every eval-mode BatchNorm folded into its conv, or None if the
    architecture is not one we know how to fold (a model with ``folded_batchnorm()``, such as
    EfficientNet-Lite0; anything torch.fx can trace)."""
    if hasattr(model, "folded_batchnorm"):
        return model.folded_batchnorm()
    try:  # generic: torch.fx conv+bn fusion for traceable models (e.g. torchvision ResNets)
        from torch.fx.experimental.optimization import fuse

        return fuse(copy.deepcopy(model).eval(), inplace=True)
    except Exception:
        return None


def _param_versions(model):
    return tuple(p._version for p in model.parameters()) + tuple(b._version for b in model.buffers())


def prepare_model(model: nn.Module, options: EngineOptions, *, compile: bool | None = None,
                  fold_bn: bool | None = None, channels_last: bool | None = None):
    """The module the engine runs for ``options`` (``compile``, ``fold_bn``, ``channels_last``
    override the options' choice). Returns (module, info dict with fold_bn, channels_last,
    compiled, compile_mode)."""
    dev = options.torch_device
    if compile is None:
        compile = options.compile
    if fold_bn is None:
        fold_bn = options.fold_bn
    if channels_last is None:
        channels_last = dev.type == "cuda" and (options.compile_channels_last if compile else options.cuda_channels_last)
    mode = options.compile_mode if dev.type == "cuda" or not uses_cudagraphs(options.compile_mode) else None
    key = (str(dev), bool(compile), bool(fold_bn), bool(channels_last), mode)
    versions = _param_versions(model)
    cache = _prepared.setdefault(model, {})
    hit = cache.get(key)
    if hit is not None and hit[0] == versions:
        return hit[1], hit[2]
    info = {"fold_bn": False, "channels_last": bool(channels_last), "compiled": False, "compile_mode": None}
    m = None
    if fold_bn:
        m = fold_batchnorm(model)
        info["fold_bn"] = m is not None
    if m is None:
        ps = list(model.parameters())
        on_dev = all(p.device == dev or (dev.index is None and p.device.type == dev.type) for p in ps)
        # never move or re-layout the caller's module in place: work on a copy then (19 MB)
        m = model if (on_dev and not channels_last) else copy.deepcopy(model)
    m = m.to(dev)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    if compile:
        m = torch.compile(m, mode=mode, dynamic=False)
        info["compiled"] = True
        info["compile_mode"] = mode
    cache[key] = (versions, m, info)
    return m, info
