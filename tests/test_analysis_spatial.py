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


def _nested(h=48, w=48):
    """silhouette (a 32x32 square), interior (its inner 24x24), a detail checker inside the interior,
    a face (8x8 corner block of the silhouette)."""
    sil = np.zeros((h, w), bool)
    sil[8:40, 8:40] = True
    interior = np.zeros_like(sil)
    interior[12:36, 12:36] = True
    detail = interior & ((np.add.outer(np.arange(h), np.arange(w)) // 3) % 2 == 0)
    detail[24:, :] = False                               # detail texture in the interior's upper half
    face = np.zeros_like(sil)
    face[10:18, 10:18] = True
    return {"silhouette": sil, "interior": interior, "detail": detail, "face": face}


def test_null_placements_lie_in_the_region_and_are_deterministic():
    ms = _nested()
    m, reg = ms["face"], ms["silhouette"]
    nm = S.null_masks(m, reg, n_null=12, seed=3)
    assert nm.shape == (12, 48, 48)
    assert not (nm & ~reg).any(), "every placement inside the region"
    assert (nm.sum((1, 2)) >= 0.5 * m.sum()).all()
    assert ((nm & m).sum((1, 2)) <= 0.5 * nm.sum((1, 2))).all(), "elsewhere, not the mask nudged"
    np.testing.assert_array_equal(nm, S.null_masks(m, reg, n_null=12, seed=3))
    assert not np.array_equal(nm, S.null_masks(m, reg, n_null=12, seed=4))
    # a mask that fills its region has no admissible placement
    assert S.null_masks(reg, reg, n_null=4).shape == (0, 48, 48)


def test_translate_without_wrap():
    m = np.zeros((5, 5), bool)
    m[0, 4] = m[2, 2] = True
    t = S.translate(m, 1, 1)
    assert t.sum() == 1 and t[3, 3]                      # (0, 4) left the frame, no wrap-around
    back = S.translate(t, -1, -1)
    assert back.sum() == 1 and back[2, 2]


def test_relevance_uniform_on_the_region_is_the_null():
    """Relevance spread evenly over the silhouette: the face is enriched against the image (1/area of
    the silhouette) but exactly at its null (1); the same for detail inside a uniform interior. A
    circular shift over the whole image would call both enriched."""
    ms = _nested()
    for mask, region in (("face", "silhouette"), ("detail", "interior")):
        r = S.enrichment_vs_null(ms[region].astype(np.float32), ms, parts=("abs",), n_null=8)
        k = list(ms).index(mask)
        assert r["abs"][k] == pytest.approx(48 * 48 / ms[region].sum())
        assert r["abs_vs_null"][k] == pytest.approx(1.0)


def test_relevance_on_the_mask_is_enriched_against_its_null_and_missing_regions_are_nan():
    ms = _nested()
    maps = np.stack([ms["face"], ms["detail"]]).astype(np.float32)[None].repeat(3, 0)   # (3, 2, H, W)
    r = S.enrichment_vs_null(maps, ms, n_null=8)
    assert r["abs_vs_null"].shape == (3, 2, 4)                                        # vectorised over maps
    k_face, k_detail = list(ms).index("face"), list(ms).index("detail")
    assert (r["abs_vs_null"][:, 0, k_face] > 2).all() and (r["abs_vs_null"][:, 1, k_detail] > 1.5).all()
    no_interior = {k: v for k, v in ms.items() if k != "interior"}
    r2 = S.enrichment_vs_null(maps[0], no_interior, n_null=8)
    j = list(no_interior).index("detail")
    assert np.isnan(r2["abs_vs_null"][:, j]).all() and np.isfinite(r2["abs"][:, j]).all()


def test_every_named_mask_has_a_null_region():
    for name in ("silhouette", "outline", "interior", "background", "detail", "edges", "face", "stripes"):
        assert name in S.NULL_REGIONS
    assert S.NULL_REGIONS["detail"] == "interior" and S.NULL_REGIONS["face"] == "silhouette"
    from diffxai.errors import DiffxaiError
    with pytest.raises(DiffxaiError):
        S.enrichment_vs_null(np.ones((4, 4)), {"face": np.ones((4, 4), bool)}, n_null=0)


def test_bad_settings_raise():
    from diffxai.errors import DiffxaiError
    with pytest.raises(DiffxaiError):
        M.outline_band(np.ones((4, 4), bool), 0)
    with pytest.raises(DiffxaiError):
        M.top_fraction(np.ones((4, 4)), 0)
