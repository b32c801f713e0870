"""Batched deletion/insertion: known orderings, a per-fraction reference loop, Quantus PixelFlipping."""
import numpy as np
import pytest
import torch
from torch import nn

from diffxai.analysis import faithfulness as F


class PixelLinear(nn.Module):
    """logit_0 = sum_pixels w * x (channels summed), logit_1 = 0: p(0) falls as mass is deleted."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        z = (x.sum(1) * self.w).flatten(1).sum(1, keepdim=True)
        return torch.cat([z, torch.zeros_like(z)], 1)


def _tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 5)).eval()


def test_perfect_ordering_beats_random_beats_reversed():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(8, 8, generator=g) * 0.05
    model = PixelLinear(w)
    x = torch.rand(2, 3, 8, 8, generator=g)
    y = torch.zeros(2, dtype=torch.long)
    true = (x.sum(1) * w)                       # each pixel's exact contribution to the logit
    fr = np.linspace(0, 1, 17)
    good = F.deletion_insertion(model, x, y, true, fractions=fr, n_random=4)
    bad = F.deletion_insertion(model, x, y, -true, fractions=fr, n_random=4)  # |.| same: use reversed ranks
    ranks_rev = F.ranks_from_scores(-F.pixel_scores(true)).unsqueeze(1)
    rev_curve = F.perturbation_curves(model, x, y, ranks_rev, fr).numpy()
    rev_auc = F.normalised_auc(rev_curve, fr, good["p_ref"][:, None])[:, 0]
    summ = F.summarise_orders(good["deletion_auc"], 4)
    assert np.all(summ["map"] < summ["random"]) and np.all(summ["random"] < rev_auc)
    ins = F.summarise_orders(good["insertion_auc"], 4)
    assert np.all(ins["map"] > ins["random"])
    np.testing.assert_allclose(bad["deletion_auc"], good["deletion_auc"])  # |a| ordering
    # endpoints: deletion starts at p(x), insertion ends at p(x)
    np.testing.assert_allclose(good["deletion_auc_raw"], good["deletion_auc"] * good["p_ref"][:, None], rtol=1e-6)
    for cur in (good["deletion_curve"][:, :, 0], good["insertion_curve"][:, :, -1]):
        np.testing.assert_allclose(cur, np.broadcast_to(good["p_ref"][:, None], cur.shape), rtol=1e-6)


def _reference_curve(model, x, y, score, fractions, mode, baseline=0.0):
    """Straight loop over fractions for one input (the definition, unbatched)."""
    P = score.numel()
    order = torch.sort(-score.flatten(), stable=True).indices
    out = []
    for f in fractions:
        k = int(round(f * P))
        sel = torch.zeros(P, dtype=torch.bool)
        sel[order[:k]] = True
        sel = sel.view(1, *score.shape)
        inp = torch.where(sel, torch.full_like(x, baseline), x) if mode == "deletion" else \
            torch.where(sel, x, torch.full_like(x, baseline))
        with torch.no_grad():
            out.append(model(inp[None]).softmax(-1)[0, y].item())
    return np.array(out)


@pytest.mark.parametrize("mode", F.MODES)
def test_batched_equals_reference_loop(mode):
    model = _tiny_cnn()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 6, 6, generator=g)
    maps = torch.randn(3, 6, 6, generator=g)
    y = torch.tensor([0, 3, 4])
    fr = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]
    ranks = F.ranks_from_scores(F.pixel_scores(maps)).unsqueeze(1)
    cur = F.perturbation_curves(model, x, y, ranks, fr, 0.0, mode, batch_size=5).numpy()
    for i in range(3):
        ref = _reference_curve(model, x[i], y[i], maps[i].abs(), fr, mode)
        np.testing.assert_allclose(cur[i, 0], ref, rtol=1e-5, atol=1e-6)


def test_bad_fractions_raise():
    from diffxai.errors import DiffxaiError
    with pytest.raises(DiffxaiError):
        F.pixel_counts([0.5, 0.2], 10)


def test_equals_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    model = _tiny_cnn(2)
    g = torch.Generator().manual_seed(3)
    # Quantus checks features_in_step against H*W but flips elements of the (C, H, W) input with the
    # map broadcast over channels: 3 channels x 4 px = 12 elements divide 6*6 = 36, so each of its
    # steps flips exactly 4 whole pixels (the C copies of a pixel's score sort next to each other)
    n, c, h, w = 4, 3, 6, 6
    x = torch.randn(n, c, h, w, generator=g)
    maps = torch.randn(n, h, w, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    step_px = 4
    fr = np.arange(0, h * w + 1, step_px) / (h * w)
    ours = F.deletion_insertion(model, x, y, maps, fractions=fr, n_random=0, modes=("deletion",))
    metric = quantus.PixelFlipping(features_in_step=c * step_px, abs=True, normalise=False,
                                   perturb_baseline=0.0, disable_warnings=True)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                               a_batch=maps[:, None].expand(n, c, h, w).numpy().copy(), softmax=True, device="cpu",
                               channel_first=True))
    np.testing.assert_allclose(ours["deletion_curve"][:, 0, 1:], theirs, rtol=1e-5, atol=1e-6)
