"""Agreement between methods and seeds on a common grid."""
import numpy as np
import pytest
import torch

from diffxai.analysis import agreement as A


def test_pooling_to_grid_averages_abs():
    m = torch.zeros(2, 8, 8)
    m[0, :4, :4] = -2.0
    p = A.pool_to_grid(m, (2, 2))
    assert p.shape == (2, 2, 2)
    assert p[0, 0, 0] == 2.0 and p[0].sum() == 2.0 and p[1].sum() == 0


def test_identical_maps_agree_fully_and_independent_maps_at_chance():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(200, 28, 28, generator=g)
    b = torch.rand(200, 28, 28, generator=g)
    same = A.pair_agreement(a, a, 0.1)
    np.testing.assert_allclose(same["spearman"], 1.0, rtol=1e-5)  # float32 products
    np.testing.assert_allclose(same["overlap"], 1.0)
    ind = A.pair_agreement(a, b, 0.1)
    assert abs(ind["spearman"].mean()) < 0.02
    assert ind["overlap"].mean() == pytest.approx(0.1, abs=0.01)   # chance = top_fraction


def test_top_k_overlap_exact_count():
    a = np.arange(10.0)[None]
    b = np.array([[9, 8, 0, 0, 0, 0, 0, 0, 7.5, 7.6]])
    assert A.top_k_overlap(a, b, 0.3)[0] == pytest.approx(1 / 3)   # top3(a)={7,8,9}, top3(b)={0,1,9}


def test_method_and_seed_agreement_shapes_and_values():
    g = torch.Generator().manual_seed(1)
    base = torch.rand(2, 1, 5, 7, 7, generator=g)             # (image, seed, step, gh, gw)
    seeds = base + 0.0 * torch.rand(2, 3, 5, 7, 7, generator=g)  # all seeds identical
    other = torch.rand(2, 3, 5, 7, 7, generator=g)
    pooled = {"ig": seeds, "occ": other}
    ma = A.method_agreement(pooled)
    assert list(ma) == [("ig", "occ")] and ma[("ig", "occ")]["spearman"].shape == (2, 3, 5)
    sa = A.seed_agreement(seeds, seed_axis=1)
    assert sa["spearman"].shape == (2, 5)
    np.testing.assert_allclose(sa["spearman"], 1.0, rtol=1e-5)
    cs = A.cross_seed_method_agreement({"a": seeds, "b": seeds}, seed_axis=1)
    np.testing.assert_allclose(cs[("a", "b")]["spearman"], 1.0, rtol=1e-5)
    one = A.seed_agreement(seeds[:, :1], seed_axis=1)
    assert np.isnan(one["spearman"]).all()
