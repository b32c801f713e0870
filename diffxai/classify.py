"""Softmax of the classifier along a noised trajectory."""
from __future__ import annotations

import numpy as np
import torch
import xarray as xr


def resolve_device(prefer: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is an error."""
    from .errors import DiffxaiError

    if prefer == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if prefer == "cuda" and not torch.cuda.is_available():
        raise DiffxaiError("config key classify.device: cuda, but torch sees no GPU")
    return prefer


@torch.no_grad()
def predict(model, x: np.ndarray, device="cpu", batch_size: int = 32) -> np.ndarray:
    """x (N, 3, H, W) in [-1, 1] -> softmax probabilities (N, 1000) float64."""
    outs = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)
        outs.append(torch.softmax(model(xb).double(), dim=1).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 1000))


@torch.no_grad()
def predict_targets(model, x: torch.Tensor, device="cpu", batch_size: int = 64) -> torch.Tensor:
    """The model's top-1 class of every image x (N, 3, H, W) in [-1, 1], as (N,) long on the CPU;
    ``batch_size`` images per forward."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def classify_trajectory(model, noised: xr.Dataset, true_index: int, device="cpu",
                        batch_size: int = 32, top_k: int = 5) -> xr.Dataset:
    S, K = noised.sizes["seed"], noised.sizes["step"]
    x = noised["x"].values.reshape(S * K, *noised["x"].shape[2:])
    p = predict(model, x, device, batch_size)
    top = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
    entropy = -(p * np.log(np.clip(p, 1e-300, None))).sum(1)
    dims = ("seed", "step")
    coords = {k: v for k, v in noised.coords.items() if set(v.dims) <= {"seed", "step"}}
    ds = xr.Dataset(
        {
            "p_true": (dims, p[:, true_index].reshape(S, K).astype(np.float32)),
            "entropy": (dims, entropy.reshape(S, K).astype(np.float32)),
            "pred": (dims, p.argmax(1).reshape(S, K).astype(np.int16)),
            "top5_class": (dims + ("rank",), top.reshape(S, K, top_k).astype(np.int16)),
            "top5_prob": (dims + ("rank",), np.take_along_axis(p, top, 1).reshape(S, K, top_k).astype(np.float32)),
        },
        coords={**coords, "rank": np.arange(top_k)},
    )
    return ds
