"""diffxai.attribution.fused_tail (EfficientNet-Lite0's tail, BN folded, epilogue fused, target row
only) against the model's own tail on real activations, and its Triton pointwise GEMM (3xTF32)
under Triton's CPU interpreter."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from diffxai.attribution.fused_tail import FIRST_BLOCK, FusedTail, model_head_input, model_tail, pointwise_torch
from diffxai.errors import DiffxaiError

from test_attribution import PERSIAN, TIGER, _image, _noised


@pytest.fixture(scope="module")
def model():
    from diffxai.models import load_classifier

    return load_classifier("efficientnet_lite0", "cpu")


def _cut_maps(model, size, first=FIRST_BLOCK):
    x = torch.cat([_noised(_image(TIGER[0], size), [40, 99]), _noised(_image(PERSIAN[0], size), [70], seed=1)])
    with torch.no_grad():
        return model_head_input(model, x, first)


def test_folded_tail_equals_the_models_tail_on_real_activations(model):
    cut = _cut_maps(model, 224)  # (3, 80, 14, 14): the incremental Occlusion cut map at the study's setting
    assert cut.shape == (3, 80, 14, 14)
    tail = FusedTail(model)
    with torch.no_grad():
        want = model_tail(model, cut).double()
        got = tail(cut).double()
        target = torch.tensor([TIGER[1], TIGER[1], PERSIAN[1]])
        row = tail(cut, target)
    err = (got - want).abs().max() / want.abs().max()
    assert err < 1e-5, float(err)
    torch.testing.assert_close(row, got[torch.arange(3), target].float(), rtol=1e-5, atol=1e-5)


def test_bad_tail_requests_are_one_line_errors(model):
    with pytest.raises(DiffxaiError, match="first block 17"):
        FusedTail(model, first=17)
    with pytest.raises(DiffxaiError, match="backend 'cuda'"):
        FusedTail(model, pointwise="cuda")


@pytest.fixture()
def triton_pw(monkeypatch):
    """diffxai.attribution.triton_pointwise under Triton's CPU interpreter, or a clean skip."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import diffxai.attribution.triton_pointwise as tp

    tp = importlib.reload(tp)  # re-decorate the kernel under the interpreter
    try:
        tp.pointwise(torch.ones(2, 16), torch.ones(16, 16), torch.zeros(16), False)
    except Exception as exc:  # an interpreter that cannot run here
        pytest.skip(f"Triton's interpreter does not run on this machine: {type(exc).__name__}: {exc}")
    yield tp
    monkeypatch.delenv("TRITON_INTERPRET")
    importlib.reload(tp)


def test_triton_pointwise_3xtf32_is_fp32_accurate_and_plain_tf32_is_not(triton_pw):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(70, 40, generator=g) * 3  # partial tiles on every axis
    w = torch.randn(20, 40, generator=g) * 0.2
    b, r = torch.randn(20, generator=g), torch.randn(70, 20, generator=g)
    ref = pointwise_torch(x.double(), w.double(), b.double(), False, r.double())

    def err(y):
        return float((y.double() - ref).abs().max() / ref.abs().max())

    fp32 = err(pointwise_torch(x, w, b, False, r))
    three = err(triton_pw.pointwise(x, w, b, False, r, split=3))
    one = err(triton_pw.pointwise(x, w, b, False, r, split=1))
    assert three <= 4 * fp32 + 1e-7, (three, fp32)
    assert one > 50 * three, (one, three)  # TF32's 10-bit mantissa, what the split removes
    relu = triton_pw.pointwise(x, w, b - 3.0, True)
    torch.testing.assert_close(relu, pointwise_torch(x, w, b - 3.0, True), rtol=1e-5, atol=1e-5)
    assert float(relu.min()) == 0.0 and float(relu.max()) <= 6.0


def test_fused_tail_with_the_triton_kernel_equals_the_reference(model, triton_pw):
    cut = _cut_maps(model, 64, first=14)[:1]  # blocks 14 (residual), 15 and the head: the interpreter is slow
    with torch.no_grad():
        want = FusedTail(model, first=14).features(cut).double()
        got = FusedTail(model, first=14, pointwise=triton_pw.pointwise).features(cut).double()
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5
    assert np.isfinite(got.numpy()).all()
