"""Enrichment on constructed cases with known answers (the masks: test_analysis_masks.py)."""
import numpy as np
import pytest
import torch

from diffxai.analysis import masks as M
from diffxai.analysis import spatial as S


def test_map_equal_to_mask_gives_inverse_area_share():
    m = np.zeros((32, 32), bool)
    m[4:12, 8:24] = True                       # area share 128 / 1024
    e = S.enrichment(m.astype(np.float32)[None], m[None])
    assert e.shape == (1, 1)
    assert e[0, 0] == pytest.approx(1024 / 128)


def test_uniform_map_is_chance_and_empty_map_is_nan():
    m = np.zeros((16, 16), bool)
    m[:4] = True
    e = S.enrichment(np.stack([np.ones((16, 16)), np.zeros((16, 16))]), m)
    assert e[0, 0] == pytest.approx(1.0)
    assert np.isnan(e[1, 0])


def test_positive_part_ignores_negative_relevance():
    a = np.zeros((8, 8), np.float32)
    a[0, 0], a[7, 7] = 1.0, -5.0
    m = np.zeros((8, 8), bool)
    m[0, 0] = True
    assert S.enrichment(a, m, "pos")[0] == pytest.approx(64.0)
    assert S.enrichment(a, m, "abs")[0] == pytest.approx(64.0 / 6)


def test_enrichment_keeps_leading_dims_and_several_masks():
    maps = torch.rand(2, 3, 5, 16, 16)
    ms = np.stack([np.eye(16, dtype=bool), ~np.eye(16, dtype=bool)])
    e = S.enrichment(maps, ms)
    assert e.shape == (2, 3, 5, 2)
    # shares of complementary masks add to 1: q1 E1 + q2 E2 = 1
    q = ms.reshape(2, -1).mean(1)
    np.testing.assert_allclose((e * q).sum(-1), 1.0, rtol=1e-6)


def test_shift_null_near_chance_for_map_equal_to_mask():
    m = np.zeros((32, 32), bool)
    m[10:20, 10:20] = True
    null = S.shift_null(m.astype(np.float32), m, n_shifts=16, seed=1)
    assert null[0] < 0.5 * S.enrichment(m.astype(np.float32), m)[0]
    # a shift of the map by d against the mask == the map against the mask shifted by -d
    d = (5, 7)
    rolled = np.roll(m.astype(np.float32), d, axis=(0, 1))
    direct = S.enrichment(rolled, m)
    via_mask = S.enrichment(m.astype(np.float32), S.shifted_masks(m, np.array([d]))[0])
    np.testing.assert_allclose(direct, via_mask)


def test_shifts_respect_min_distance():
    sh = S.draw_shifts((40, 40), 50, seed=3, min_shift=0.25)
    ok = [(min(dy, 40 - dy) >= 10) or (min(dx, 40 - dx) >= 10) for dy, dx in sh]
    assert all(ok) and len(sh) == 50


def test_bad_settings_raise():
    from diffxai.errors import DiffxaiError
    with pytest.raises(DiffxaiError):
        M.outline_band(np.ones((4, 4), bool), 0)
    with pytest.raises(DiffxaiError):
        M.top_fraction(np.ones((4, 4)), 0)
