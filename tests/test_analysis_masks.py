"""Masks on constructed images with known answers; the packaged hand masks and the automatic
silhouette's agreement with them on the study images."""
import numpy as np
import pytest
from scipy import ndimage

from diffxai.analysis import hand_masks as HM
from diffxai.analysis import masks as M
from diffxai.analysis import segmentation as SEG
from diffxai.errors import DiffxaiError

from conftest import load_sample, needs_samples

H = W = 64
R = 18


def _disc_scene():
    """An orange disc (radius R) on a green background with coarse texture; a 1-px-noise patch
    (fine texture) inside the disc, away from its rim."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    disc = (yy - H / 2 + 0.5) ** 2 + (xx - W / 2 + 0.5) ** 2 < R * R
    bg_tex = ndimage.gaussian_filter(rng.standard_normal((H, W)), 3.0) * 120
    img = np.zeros((H, W, 3))
    img[...] = (60, 150, 60)
    img += bg_tex[..., None]
    img[disc] = (220, 140, 40)
    patch = np.zeros((H, W), bool)
    patch[26:38, 24:40] = True
    img[patch] += 60 * rng.standard_normal((int(patch.sum()), 1))
    return np.clip(img, 0, 255).astype(np.uint8), disc, patch


def test_grabcut_finds_the_disc_and_is_deterministic():
    img, disc, _ = _disc_scene()
    fg = SEG.grabcut_silhouette(img)
    assert SEG.iou(fg, disc) > 0.95
    np.testing.assert_array_equal(fg, SEG.grabcut_silhouette(img))


def test_outline_band_width_and_the_partition():
    img, disc, patch = _disc_scene()
    ms = M.image_masks(img, {"outline": {"width": 8}}, fg=disc)
    band, inner, back = ms["outline"], ms["interior"], ms["background"]
    # a partition of the image: every pixel in exactly one of outline, interior, background
    np.testing.assert_array_equal(band.astype(int) + inner + back, np.ones((H, W), int))
    np.testing.assert_array_equal(ms["silhouette"], disc)
    assert (inner <= disc).all() and not (back & disc).any()
    # 4 px inside, 4 px outside the boundary: an annulus of area ~ pi ((R+4)^2 - (R-4)^2) = 16 pi R
    assert band.sum() == pytest.approx(16 * np.pi * R, rel=0.08)
    assert (band & disc).sum() == pytest.approx((band & ~disc).sum(), rel=0.25)
    d_in = ndimage.distance_transform_edt(disc)
    assert (d_in[inner] > 4).all() and (d_in[band & disc] <= 4).all()


def test_detail_is_the_fine_texture_inside_the_interior():
    img, disc, patch = _disc_scene()
    ms = M.image_masks(img, {"detail": {"fraction": 0.25}}, fg=disc)
    d, inner = ms["detail"], ms["interior"]
    assert d.sum() == round(0.25 * inner.sum()) and (d <= inner).all()
    assert (d & ndimage.binary_dilation(patch, iterations=3)).sum() > 0.9 * d.sum()


def test_a_silhouette_filling_the_frame_has_no_outline():
    full = np.ones((H, W), bool)
    assert not M.outline_band(full, 8).any() and not M.outline_band(~full, 8).any()


def test_edges_stay_an_edge_band_under_their_own_name():
    img, disc, _ = _disc_scene()
    ms = M.image_masks(img, {"names": ["edges", "outline"]}, fg=disc)
    assert list(ms) == ["edges", "outline"] and ms["edges"].sum() == round(0.1 * H * W)
    with pytest.raises(DiffxaiError, match="names"):
        M.merged_settings({"names": ["contour"]})


def test_masks_png_roundtrip_and_user_override(tmp_path):
    img, disc, _ = _disc_scene()
    imgs = np.stack([img, img[::-1]])
    hand = [{"silhouette": disc}, {"silhouette": disc[::-1]}]
    ms = M.compute_masks(imgs, {"names": ["outline", "detail"]}, hand=hand)
    M.write_masks(ms, tmp_path / "out")
    back = M.load_masks(tmp_path / "out", 2, (H, W))
    assert set(back) == {"outline", "detail"}
    np.testing.assert_array_equal(back["outline"], ms["outline"])
    user = tmp_path / "user"
    M.write_masks({"face": disc[None]}, user)
    (user / "000_face.png").rename(user / "face.png")
    over = M.class_masks(imgs, {"names": ["silhouette"]}, user_folder=user)
    assert set(over) == {"silhouette", "face"} and (over["face"] == disc).all()


def test_hand_masks_only_for_exactly_their_image():
    e = HM.index()
    assert {x["synset"] for x in e} == {"n02123394", "n02123597", "n02124075", "n02129604"}
    img, _, _ = _disc_scene()
    assert HM.hand_masks(img) == {}
    tiger = next(x for x in e if x["synset"] == "n02129604")
    # matched by the source file's sha256 when the caller knows it
    got = HM.hand_masks(np.zeros((224, 224, 3), np.uint8), source_sha256=tiger["source_sha256"])
    assert set(got) == {"silhouette", "face", "stripes"} and got["silhouette"].shape == (224, 224)
    assert (got["face"] <= got["silhouette"]).all() and not (got["stripes"] & got["face"]).any()


@needs_samples
def test_study_images_get_their_hand_masks_and_one_pixel_off_does_not():
    tiger = load_sample("n02129604")
    ms = M.class_masks(np.stack([tiger, tiger]), {"names": ["silhouette", "outline"]})
    assert set(ms) == {"silhouette", "outline", "face", "stripes"}
    hand = HM.hand_masks(tiger)
    np.testing.assert_array_equal(ms["silhouette"][1], hand["silhouette"])
    other = tiger.copy()
    other[0, 0, 0] ^= 1
    assert HM.hand_masks(other) == {}
    mixed = M.class_masks(np.stack([tiger, other]), {"names": ["silhouette"], "silhouette": {"iterations": 1}})
    assert set(mixed) == {"silhouette"}           # face/stripes only when every image has them


# measured on 2026-12-02 (GrabCut, border 0.10, 3 iterations, seeds 0-2); pinned 0.02 below
MEASURED_IOU = {"n02123394": 0.967, "n02123597": 0.572, "n02124075": 0.987, "n02129604": 0.874}


@needs_samples
def test_automatic_silhouette_agrees_with_the_hand_ones():
    images = {s: load_sample(s) for s in MEASURED_IOU}
    got = HM.silhouette_agreement(images)
    assert set(got) == set(MEASURED_IOU)
    for s, v in MEASURED_IOU.items():
        assert got[s] >= v - 0.02, (s, got[s])
    # the mirrored tiger: seed 0 alone fills the frame (IoU 0.24); the restarts keep a real silhouette
    tiger = images["n02129604"]
    flipped = SEG.silhouette(np.ascontiguousarray(tiger[:, ::-1]))
    assert SEG.iou(flipped[:, ::-1], HM.hand_masks(tiger)["silhouette"]) >= 0.85
