"""A 1x1 convolution as a Triton GEMM on tensor cores at fp32-level accuracy, with the epilogue of
an EfficientNet-Lite0 pointwise step fused in: y = x @ w.T + b, then ReLU6 (optional), then
+ residual (optional).

Accuracy, 3xTF32: a TF32 tensor-core product reads only 10 of fp32's 23 mantissa bits (relative
error ~5e-4 per product; ~1e-3 on the network's attributions). Each operand is split as
a = a_hi + a_lo with a_hi = a with the low 13 mantissa bits cleared (exactly a TF32 number) and
a_lo = a - a_hi (exact in fp32); the product is accumulated as lo*hi + hi*lo + hi*hi in fp32
(lo*lo, ~2^-22 of it, is dropped): three tensor-core products, error near fp32's own.

``split``: 3 (3xTF32, the default), 1 (plain TF32: faster, less accurate; opt-in), 0 (IEEE fp32
FMA, no tensor cores). Under Triton's CPU interpreter (``TRITON_INTERPRET=1``) ``tl.dot`` multiplies
in full fp32, so the kernel itself clears the low bits every tensor-core operand would lose
(``emulate_tf32``): the CPU test then sees TF32's error and what the split removes.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..errors import DiffxaiError

#: tile sizes (rows of x, output channels, reduction); multiples of 16 as tl.dot requires. Not
#: tuned yet (to be timed on a GPU); the CPU interpreter runs larger tiles (fewer, numpy-wide steps).
BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32
INTERPRET_BLOCKS = (64, 128, 128)


@triton.jit
def _tf32_hi(a):
    """a with the 13 low mantissa bits cleared: exactly representable in TF32."""
    return (a.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _pointwise_kernel(x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, M, N, K,
                      sxm, sxk, swn, swk, srm, srn, sym, syn,
                      RELU6: tl.constexpr, RESIDUAL: tl.constexpr, SPLIT: tl.constexpr, EMULATE: tl.constexpr,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.full((BM, BN), 0.0, tl.float32)  # (not tl.zeros: see the ReLU6 note)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        a = tl.load(x_ptr + rm[:, None] * sxm + kk[None, :] * sxk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        b = tl.load(w_ptr + rn[None, :] * swn + kk[:, None] * swk,
                    mask=(rn[None, :] < N) & (kk[:, None] < K), other=0.0)  # b[k, n] = w[n, k]
        if SPLIT == 3:
            a_hi = _tf32_hi(a)
            b_hi = _tf32_hi(b)
            a_lo = a - a_hi
            b_lo = b - b_hi
            if EMULATE:
                a_lo = _tf32_hi(a_lo)
                b_lo = _tf32_hi(b_lo)
            acc = tl.dot(a_lo, b_hi, acc, input_precision="tf32")  # the small terms first
            acc = tl.dot(a_hi, b_lo, acc, input_precision="tf32")
            acc = tl.dot(a_hi, b_hi, acc, input_precision="tf32")
        elif SPLIT == 1:
            if EMULATE:
                a = _tf32_hi(a)
                b = _tf32_hi(b)
            acc = tl.dot(a, b, acc, input_precision="tf32")
        else:
            acc = tl.dot(a, b, acc, input_precision="ieee")
    acc = acc + tl.load(b_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if RELU6:
        # (tl.where, not tl.minimum/maximum: triton.language's own jit functions, which its
        # interpreter cannot call when TRITON_INTERPRET was set after triton's import)
        acc = tl.where(acc < 0.0, 0.0, tl.where(acc > 6.0, 6.0, acc))
    out = (rm[:, None] < M) & (rn[None, :] < N)
    if RESIDUAL:
        acc = acc + tl.load(r_ptr + rm[:, None] * srm + rn[None, :] * srn, mask=out, other=0.0)
    tl.store(y_ptr + rm[:, None] * sym + rn[None, :] * syn, acc, mask=out)


def interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pointwise(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu6: bool,
              residual: torch.Tensor | None = None, split: int = 3, emulate_tf32: bool | None = None) -> torch.Tensor:
    """x (M, K) @ w.T (w: (N, K)) + b (N,), ReLU6 if ``relu6``, + residual (M, N): (M, N) float32.
    The same arithmetic as :func:`diffxai.attribution.fused_tail.pointwise_torch`."""
    if split not in (0, 1, 3):
        raise DiffxaiError(f"pointwise: split must be 0, 1 or 3, got {split}")
    if x.dtype != torch.float32 or w.dtype != torch.float32:
        raise DiffxaiError(f"pointwise: float32 operands only, got {x.dtype} and {w.dtype}")
    M, K = x.shape
    N = w.shape[0]
    if w.shape[1] != K or b.shape != (N,):
        raise DiffxaiError(f"pointwise: x {tuple(x.shape)}, w {tuple(w.shape)}, b {tuple(b.shape)} do not fit")
    y = torch.empty((M, N), dtype=torch.float32, device=x.device)
    r = y if residual is None else residual
    emulate = interpreting() if emulate_tf32 is None else bool(emulate_tf32)
    bm, bn, bk = INTERPRET_BLOCKS if interpreting() else (BLOCK_M, BLOCK_N, BLOCK_K)
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    _pointwise_kernel[grid](x, w, b, r, y, M, N, K, x.stride(0), x.stride(1), w.stride(0), w.stride(1),
                            r.stride(0), r.stride(1), y.stride(0), y.stride(1),
                            RELU6=bool(relu6), RESIDUAL=residual is not None, SPLIT=int(split), EMULATE=emulate,
                            BM=bm, BN=bn, BK=bk)
    return y
