"""Masks and enrichment on constructed cases with known answers."""
import numpy as np
import pytest
import torch

from diffxai.analysis import masks as M
from diffxai.analysis import spatial as S


def _disc_image(h=64, w=64, r=16):
    """A bright disc with a soft (blurred) rim and fine texture inside, on a flat background."""
    from scipy import ndimage
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < r * r
    rng = np.random.default_rng(0)
    inner = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (r - 4) ** 2
    img = 30 + 150 * ndimage.gaussian_filter(disc.astype(float), 2.0) + inner * 40 * rng.standard_normal((h, w))
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, -1), disc


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


def test_masks_exact_area_disjoint_and_on_the_object():
    img, disc = _disc_image()
    ms = M.compute_masks(img, {"outline": {"fraction": 0.1}, "detail": {"fraction": 0.1}})
    o, d = ms["outline"][0], ms["detail"][0]
    n = round(0.1 * 64 * 64)
    assert o.sum() == n and d.sum() == n
    assert not (o & d).any()
    # the outline band sits on the disc's boundary; detail energy sits inside the textured disc
    edge = disc ^ np.pad(disc[1:-1, 1:-1] & disc[:-2, 1:-1] & disc[2:, 1:-1] & disc[1:-1, :-2] & disc[1:-1, 2:], 1)
    from scipy import ndimage
    near_edge = ndimage.distance_transform_edt(~edge) <= 4
    assert (o & near_edge).sum() > 0.8 * n
    assert (d & disc).sum() > 0.9 * n


def test_silhouette_finds_the_disc_and_band_has_area():
    img, disc = _disc_image()
    fg = M.silhouette(img)
    iou = (fg & disc).sum() / (fg | disc).sum()
    assert iou > 0.8
    band = M.outline_mask(img, method="silhouette", fraction=0.05)
    assert band.sum() == round(0.05 * 64 * 64)


def test_masks_png_roundtrip_and_user_override(tmp_path):
    img, disc = _disc_image()
    imgs = np.stack([img, img[::-1]])
    ms = M.compute_masks(imgs)
    M.write_masks(ms, tmp_path / "out")
    back = M.load_masks(tmp_path / "out", 2, (64, 64))
    assert set(back) == {"outline", "detail"}
    np.testing.assert_array_equal(back["outline"], ms["outline"])
    # a user folder with a shared face mask and one per-image outline override
    user = tmp_path / "user"
    M.write_masks({"face": disc[None]}, user)
    (user / "000_face.png").rename(user / "face.png")
    over = M.class_masks(imgs, user_folder=user)
    assert over["face"].shape == (2, 64, 64) and (over["face"] == disc).all()
    assert set(over) == {"outline", "detail", "face"}


def test_bad_settings_raise():
    from diffxai.errors import DiffxaiError
    img, _ = _disc_image()
    with pytest.raises(DiffxaiError):
        M.outline_mask(img, method="nope")
    with pytest.raises(DiffxaiError):
        M.top_fraction(np.ones((4, 4)), 0)
