"""Cascading randomization: block structure, similarity functions, Quantus MPRT, failing cases."""
import numpy as np
import pytest
import torch
from torch import nn

from diffxai.analysis import randomization as R
from diffxai.models import EfficientNetLite0


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4)).eval()


def saliency(model, x, targets):
    """Plain input gradient of the target logit, channel-summed."""
    x = x.clone().requires_grad_(True)
    model(x).gather(1, targets.view(-1, 1)).sum().backward()
    return x.grad.sum(1).detach()


def test_lite0_groups_cover_every_block_top_down():
    m = EfficientNetLite0(num_classes=10)
    g = R.efficientnet_lite0_groups(m)
    assert [n for n, _ in g][:3] == ["fc", "head", "block15"] and g[-1][0] == "stem"
    assert len(g) == 2 + 16 + 1
    assert R.default_groups(m) == g
    before = m._blocks[15]._project_conv.weight.clone()
    stem = m._conv_stem[1].weight.clone()
    R.randomize_(m, ["_blocks.15"], seed=3)
    assert not torch.equal(before, m._blocks[15]._project_conv.weight)
    assert torch.equal(stem, m._conv_stem[1].weight)


def test_spearman_and_ssim_known_values():
    rng = np.random.default_rng(0)
    a = rng.random((3, 16, 16))
    np.testing.assert_allclose(R.spearman_rows(a, 2 * a + 1), 1.0)
    np.testing.assert_allclose(R.spearman_rows(a, -a), -1.0)
    assert np.isnan(R.spearman_rows(np.ones((1, 4)), a[:1, 0, :4]))[0]
    np.testing.assert_allclose(R.ssim_maps(a, a), 1.0)
    assert np.all(R.ssim_maps(a, rng.random((3, 16, 16))) < 0.3)


def test_ssim_equals_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 20, 24)), rng.random((2, 20, 24))
    b[1] = a[1] + 0.1 * b[1]
    ours = R.ssim_maps(a, b)
    for i in range(2):
        dr = max(a[i].max(), b[i].max()) - min(a[i].min(), b[i].min())
        ref = skm.structural_similarity(a[i], b[i], data_range=dr)
        assert ours[i] == pytest.approx(ref, rel=1e-6)


def test_gradient_decays_under_cascading_randomization():
    model = _cnn()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 10, 10, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    res = R.cascading_randomization(model, x, y, saliency, R.leaf_groups(model), seed=5)
    assert res["depth"][0] == "original" and len(res["depth"]) == 1 + 3
    np.testing.assert_allclose(res["spearman"][:, 0], 1.0)
    assert res["spearman"].shape == res["ssim"].shape == (4, 4)
    assert np.nanmean(res["spearman"][:, -1]) < 0.5
    assert R.passes(res)
    # the model itself is untouched
    assert torch.equal(model[0].weight, _cnn()[0].weight)


class ParamBlind(nn.Module):
    """'Constant' model: its input gradient does not depend on any parameter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2, 4)
        self.register_buffer("w", torch.randn(4, 3, 10, 10))

    def forward(self, x):
        side = self.fc(self.conv(x).mean((2, 3)))
        return torch.einsum("nchw,kchw->nk", x, self.w) + 0.0 * side


def test_constant_model_and_model_blind_map_fail():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 10, 10, generator=g)
    y = torch.tensor([0, 1, 2])
    model = ParamBlind().eval()
    res = R.cascading_randomization(model, x, y, saliency, R.leaf_groups(model))
    np.testing.assert_allclose(res["spearman"], 1.0)
    assert not R.passes(res)
    blind = lambda m, xx, t: xx.abs().sum(1)   # an "edge detector" that never looks at the model
    res2 = R.cascading_randomization(_cnn(), x, y, blind)
    assert not R.passes(res2) and not R.passes(res2, "ssim")


def test_equals_quantus_mprt():
    quantus = pytest.importorskip("quantus")
    model = _cnn(2)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 10, 10, generator=g)
    y = torch.tensor([0, 1, 3])
    a = saliency(model, x, y)

    def explain(model, inputs, targets, **kw):
        return saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets))[:, None].numpy()

    metric = quantus.MPRT(layer_order="top_down", seed=42, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(),
                    explain_func=explain, device="cpu", channel_first=True)
    ours = R.cascading_randomization(model, x, y, saliency, R.leaf_groups(model), seed=42, original_maps=a)
    assert ours["depth"][1:] == list(theirs)[1:]
    ref = np.array([theirs[k] for k in theirs]).T
    np.testing.assert_allclose(ours["spearman"], ref, rtol=1e-6, atol=1e-9)
