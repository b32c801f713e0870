"""Many images per class: discovery, deterministic choice, duplicates, bad files, the manifest."""
import json

import numpy as np
import pytest
from PIL import Image

from diffxai.classes import resolve_class
from diffxai.errors import DiffxaiError
from diffxai.fetch import fetch_class_images, select_order
from diffxai.images import find_image, list_images

from conftest import build_image_tree, needs_samples

pytestmark = needs_samples
TIGER, PERSIAN = "n02129604", "n02123394"


def _fetch(image_dir, out, syn=TIGER, **kw):
    return fetch_class_images(resolve_class(syn), out, image_dir=image_dir, cache_dir=None, **kw)


def test_list_images_flat_and_tree_sorted_by_name(tmp_path):
    flat = build_image_tree(tmp_path / "flat", [TIGER, PERSIAN])
    names = [p.name for p in list_images(flat, TIGER)]
    assert names == sorted(names) and len(names) == 4
    assert all(n.startswith(TIGER) for n in names)
    tree = build_image_tree(tmp_path / "tree", [TIGER], layout="tree")
    (tree / f"{TIGER}_0_flat.jpg").write_bytes((tree / TIGER / f"{TIGER}_a_orig.JPG").read_bytes())
    (tree / TIGER / "notes.txt").write_text("not an image")
    (tree / TIGER / f"._{TIGER}_a_orig.JPG").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork
    got = [p.relative_to(tree).as_posix() for p in list_images(tree, TIGER)]
    assert got[0] == f"{TIGER}_0_flat.jpg" and len(got) == 5  # flat and subfolder together, by name
    assert got[1:] == [f"{TIGER}/{TIGER}_{v}" for v in ("a_orig.JPG", "b_flip.JPEG", "c_crop.JPG", "d_rot.PNG")]
    assert find_image(tree, TIGER) == tree / got[0]


def test_selection_is_deterministic_and_seeded_order_differs_per_class(tmp_path):
    cands = [tmp_path / f"{i:02d}.jpg" for i in range(20)]
    assert select_order(cands, None, 5) == cands
    a = select_order(cands, 7, 5)
    assert a == select_order(cands, 7, 5) and sorted(a) == cands and a != cands
    assert select_order(cands, 7, 6) != a


def test_fetch_three_images_writes_folder_and_manifest(tmp_path):
    d = build_image_tree(tmp_path / "imgs", [TIGER], layout="tree")
    m = _fetch(d, tmp_path / "out" / "tiger", n=3)
    out = tmp_path / "out" / "tiger"
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "002.png", "manifest.json"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == m
    assert [r["image"] for r in m["images"]] == [0, 1, 2]
    assert [r["file"] for r in m["images"]] == [f"{TIGER}/{TIGER}_{v}" for v in ("a_orig.JPG", "b_flip.JPEG", "c_crop.JPG")]
    for r in m["images"]:
        assert set(r) >= {"image", "file", "source", "sha256_source", "sha256_png", "warnings"}
        with Image.open(out / f"{r['image']:03d}.png") as im:
            assert im.mode == "RGB" and im.size == (224, 224)
    assert m["skipped"] == [] and m["duplicates"] == [] and m["order"] == "sorted by file name"
    assert not list((tmp_path / "out").glob(".*"))


def test_duplicates_count_once_with_a_warning(tmp_path):
    d = build_image_tree(tmp_path / "imgs", [TIGER], duplicate=True)
    m = _fetch(d, tmp_path / "o", n=3)
    assert len({r["sha256_source"] for r in m["images"]}) == 3
    assert [x["file"] for x in m["duplicates"]] == [f"{TIGER}_aa_dup.jpg"]
    assert m["duplicates"][0]["duplicate_of"] == 0
    assert any("duplicate" in w for w in m["warnings"])


def test_fewer_images_than_asked_is_one_line_naming_class_and_count(tmp_path):
    d = build_image_tree(tmp_path / "imgs", [TIGER], variants=("orig", "flip"), duplicate=True)
    with pytest.raises(DiffxaiError) as e:
        _fetch(d, tmp_path / "o", n=3)
    msg = str(e.value)
    assert "\n" not in msg and "tiger" in msg and TIGER in msg and "found 2 usable image(s)" in msg
    assert not (tmp_path / "o").exists()
    m = _fetch(d, tmp_path / "o", n=3, min_images=2)  # allowed to run with fewer
    assert len(m["images"]) == 2 and any("only 2 of 3" in w for w in m["warnings"])


def test_unreadable_image_stops_the_class_or_is_skipped_and_recorded(tmp_path):
    d = build_image_tree(tmp_path / "imgs", [TIGER], variants=("orig",), truncated=True)
    (d / f"{TIGER}_b_empty.jpg").write_bytes(b"")
    with pytest.raises(DiffxaiError) as e:
        _fetch(d, tmp_path / "o", n=2)
    msg = str(e.value)
    assert "\n" not in msg and f"{TIGER}_b_empty.jpg" in msg and "skip_bad_images" in msg
    assert not (tmp_path / "o").exists()
    with pytest.raises(DiffxaiError, match="found 1 usable image"):
        _fetch(d, tmp_path / "o", n=2, skip_bad=True)  # both bad ones left out: only 1 remains
    m = _fetch(d, tmp_path / "o", n=2, skip_bad=True, min_images=1)
    assert [s["file"] for s in m["skipped"]] == [f"{TIGER}_b_empty.jpg", f"{TIGER}_zz_trunc.jpg"]
    assert all(s["reason"] for s in m["skipped"]) and len(m["images"]) == 1


def test_a_failed_refetch_keeps_the_finished_folder(tmp_path):
    d = build_image_tree(tmp_path / "imgs", [TIGER], variants=("orig", "flip"))
    out = tmp_path / "o"
    _fetch(d, out, n=2)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(DiffxaiError):
        _fetch(d, out, n=3)
    assert (out / "manifest.json").read_bytes() == before and not list(tmp_path.glob(".o.tmp-*"))


def test_seeded_choice_takes_a_different_but_reproducible_subset(tmp_path):
    d = build_image_tree(tmp_path / "imgs", [TIGER], variants=("orig", "flip", "crop", "png", "gray"))
    a = _fetch(d, tmp_path / "a", n=2, image_seed=3)
    b = _fetch(d, tmp_path / "b", n=2, image_seed=3)
    assert [r["file"] for r in a["images"]] == [r["file"] for r in b["images"]]
    assert "seeded permutation" in a["order"]


def test_pinned_download_gives_one_image(tmp_path, monkeypatch):
    import diffxai.fetch as fetch

    src = build_image_tree(tmp_path / "imgs", [TIGER], variants=("orig",)) / f"{TIGER}_a_orig.jpg"
    monkeypatch.setattr(fetch, "fetch_class_image", lambda info, d, cache, **kw: (src, "https://example.org/t.jpg"))
    m = _fetch(None, tmp_path / "o", n=1)
    assert m["images"][0]["file"] == "t.jpg" and m["images"][0]["source"] == "https://example.org/t.jpg"
    with pytest.raises(DiffxaiError, match="found 1 usable image"):
        _fetch(None, tmp_path / "o2", n=2)


def test_noise_rng_of_image_zero_is_the_one_image_pipelines():
    import torch

    from diffxai.noise import _generator, draw_eps

    shape = (3, 4, 4)
    for seed in (0, 3):
        old_shared = torch.randn(shape, generator=_generator(seed), dtype=torch.float32)
        assert torch.equal(draw_eps(seed, shape), old_shared)
        assert torch.equal(draw_eps(seed, shape, image=0), old_shared)
        old_t = torch.randn(shape, generator=_generator(seed, 7 + 1_000_003), dtype=torch.float32)
        assert torch.equal(draw_eps(seed, shape, 7, image=0), old_t)
        assert not torch.equal(draw_eps(seed, shape, image=1), old_shared)
        assert not torch.equal(draw_eps(seed, shape, image=1), draw_eps(seed, shape, image=2))
