"""What rules read through settings is tracked by content, not by how a path is spelled."""
import os
import shutil

import pytest

from diffxai.classes import resolve_class
from diffxai.inputs import image_sources, mask_sources, normalise_paths, untracked

TIGER = resolve_class("n02129604")


@pytest.fixture(autouse=True)
def _workdir(tmp_path, monkeypatch):
    """The hash cache lives in the working directory's .snakemake/ (the workflow's): a fresh one here."""
    import diffxai.inputs as inputs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inputs, "_cache", None)


def test_path_settings_are_absolute_and_resolved(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    cfg = {"image_dir": "link/../link", "download_dir": None, "analysis": {"masks": {"folder": "masks"}}, "x": "y"}
    normalise_paths(cfg)
    assert cfg == {"image_dir": str(tmp_path / "real"), "download_dir": None,
                   "analysis": {"masks": {"folder": str(tmp_path / "masks")}}, "x": "y"}
    assert normalise_paths({"analysis": {}}) == {"analysis": {}}


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(f"image {i}".encode())
    return folder


def test_image_sources_follow_content_not_location(tmp_path):
    a = _images(tmp_path / "a", ["n02129604_1.jpg", "n02129604_2.jpg", "n02129604_3.jpg", "n01440764_x.jpg"])
    shutil.copy(a / "n02129604_1.jpg", a / "n02129604_1b.jpg")  # an exact duplicate: skipped unread
    b = shutil.copytree(a, tmp_path / "b")
    first = image_sources(TIGER, a, 2)
    assert [n for n, _ in first] == ["n02129604_1.jpg", "n02129604_1b.jpg", "n02129604_2.jpg"]
    assert image_sources(TIGER, b, 2) == first, "the same images elsewhere"
    from diffxai.inputs import _image_sources

    (b / "n02129604_3.jpg").write_bytes(b"changed")
    _image_sources.cache_clear()  # (one planning sees one state of the files)
    assert image_sources(TIGER, b, 2) == first, "an image the job does not read"
    (b / "n02129604_2.jpg").write_bytes(b"changed")
    _image_sources.cache_clear()
    assert image_sources(TIGER, b, 2) != first
    assert len(image_sources(TIGER, a, 2, skip_bad_images=True)) == 4, "candidates for unreadable ones too"
    assert image_sources(TIGER, None, 1) == [[TIGER.url, TIGER.sha256]]
    import diffxai.inputs as inputs

    inputs._save_cache()
    assert str((a / "n02129604_1.jpg").resolve()) in (tmp_path / ".snakemake/diffxai/sha256.json").read_text()
    assert image_sources(TIGER, tmp_path / "missing", 1)[0][0] == "unlisted"


def test_mask_sources_per_class(tmp_path):
    assert mask_sources(None, TIGER) == []
    (tmp_path / "tiger").mkdir()
    (tmp_path / "tiger" / "000_face.png").write_bytes(b"1")
    (tmp_path / "other.png").write_bytes(b"2")
    before = mask_sources(tmp_path, TIGER)
    assert [n for n, _ in before] == ["000_face.png"]
    assert [n for n, _ in mask_sources(tmp_path, resolve_class("n02123394"))] == ["other.png"]
    (tmp_path / "tiger" / "000_face.png").write_bytes(b"edited")
    os.utime(tmp_path / "tiger" / "000_face.png", ns=(1, 1))
    assert mask_sources(tmp_path, TIGER) != before


def test_tracked_params_are_not_passed_to_stages():
    assert untracked({"images": 1, "tracked_images": 2}) == {"images": 1}
