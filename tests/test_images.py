import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from diffxai.classes import resolve_class
from diffxai.errors import DiffxaiError
from diffxai.images import find_image, load_rgb, prepare_image, preprocess

SAMPLES = (Path(__file__).resolve().parent / ".." / ".." / "shared" / "data" / "imagenet-samples").resolve()
PERSIAN = "n02123394"


@pytest.fixture(scope="module")
def sample_path() -> Path:
    path = SAMPLES / f"{PERSIAN}_Persian_cat.jpg"
    if not path.is_file():
        pytest.skip(f"shared ImageNet samples not found at {SAMPLES}")
    return path


@pytest.fixture(scope="module")
def rgb(sample_path) -> np.ndarray:
    with Image.open(sample_path) as im:
        return np.asarray(im.convert("RGB")).copy()


def _png16(path: Path, arr: np.ndarray) -> None:
    """Write a 16-bit PNG by hand (Pillow cannot write 16-bit RGB)."""
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _assert_rgb8(arr, shape):
    assert arr.dtype == np.uint8 and arr.shape == shape


def _assert_one_line_naming(exc_info, path):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert str(path) in msg


# --------------------------------------------------------------------------- load_rgb
def test_clean_rgb_jpeg_loads_unchanged(sample_path, rgb):
    out, warnings = load_rgb(sample_path)
    _assert_rgb8(out, rgb.shape)
    assert np.array_equal(out, rgb)
    assert warnings == []


def test_cmyk_jpeg(tmp_path, rgb):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out, warnings = load_rgb(path)
    _assert_rgb8(out, rgb.shape)
    diff = np.abs(out.astype(int) - rgb)
    assert diff.mean() < 2 and diff.max() <= 24  # JPEG re-encode
    assert any("CMYK" in w for w in warnings)


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path, rgb):
    gray8 = np.asarray(Image.fromarray(rgb).convert("L"))
    # +100 stays below half an 8-bit level: must round back to gray8 (clipping would give white)
    gray16 = gray8.astype(np.uint16) * 257 + 100
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out, warnings = load_rgb(path)
    _assert_rgb8(out, rgb.shape)
    assert np.array_equal(out, np.repeat(gray8[..., None], 3, axis=2))
    assert any("16-bit" in w for w in warnings)


def test_16bit_rgb_png(tmp_path, rgb):
    path = tmp_path / "rgb16.png"
    _png16(path, rgb.astype(np.uint16) * 257)
    out, _ = load_rgb(path)
    _assert_rgb8(out, rgb.shape)
    assert np.array_equal(out, rgb)


def test_32bit_integer_mode_i(tmp_path, rgb):
    gray8 = np.asarray(Image.fromarray(rgb).convert("L"))
    path = tmp_path / "gray32.tif"
    Image.fromarray(gray8.astype(np.int32) * 257).save(path)
    assert Image.open(path).mode == "I"
    out, _ = load_rgb(path)
    assert np.array_equal(out, np.repeat(gray8[..., None], 3, axis=2))


def test_png_with_opaque_alpha_equals_rgb(tmp_path, rgb):
    path = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(path)
    out, warnings = load_rgb(path)
    _assert_rgb8(out, rgb.shape)
    assert np.array_equal(out, rgb)
    assert warnings == []


def test_png_with_alpha_is_composited_over_white(tmp_path, rgb):
    h, w = rgb.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    path = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    out, warnings = load_rgb(path)
    _assert_rgb8(out, rgb.shape)
    a = alpha[..., None] / 255.0
    expected = rgb * a + 255.0 * (1 - a)
    assert np.abs(out - expected).max() <= 0.5 + 1e-9
    assert np.all(out[:, 0] == 255)  # fully transparent column → white
    assert np.array_equal(out[:, -1], rgb[:, -1])  # fully opaque column unchanged
    assert any("composited over white" in w for w in warnings)


def test_grayscale_png_and_jpeg(tmp_path, rgb):
    gray = Image.fromarray(rgb).convert("L")
    expected = np.repeat(np.asarray(gray)[..., None], 3, axis=2)
    gray.save(tmp_path / "gray.png")
    out, warnings = load_rgb(tmp_path / "gray.png")
    _assert_rgb8(out, rgb.shape)
    assert np.array_equal(out, expected)
    assert any("grayscale" in w for w in warnings)
    gray.save(tmp_path / "gray.jpg", quality=95)
    out, _ = load_rgb(tmp_path / "gray.jpg")
    _assert_rgb8(out, rgb.shape)
    assert np.abs(out.astype(int) - expected).mean() < 2


def test_grayscale_alpha_la(tmp_path, rgb):
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), "LA").save(tmp_path / "la.png")
    out, _ = load_rgb(tmp_path / "la.png")
    assert np.array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_palette_png(tmp_path, rgb):
    pal = Image.fromarray(rgb).quantize(64)
    pal.save(tmp_path / "pal.png")
    out, warnings = load_rgb(tmp_path / "pal.png")
    _assert_rgb8(out, rgb.shape)
    assert np.array_equal(out, np.asarray(pal.convert("RGB")))
    assert any("palette" in w for w in warnings)


def test_palette_png_with_transparency(tmp_path, rgb):
    pal = Image.fromarray(rgb).quantize(64)
    index = np.asarray(pal)
    transparent = int(index[0, 0])
    pal.save(tmp_path / "pal_t.png", transparency=transparent)
    out, warnings = load_rgb(tmp_path / "pal_t.png")
    _assert_rgb8(out, rgb.shape)
    mask = index == transparent
    assert np.all(out[mask] == 255)
    assert np.array_equal(out[~mask], np.asarray(pal.convert("RGB"))[~mask])
    assert any("composited over white" in w for w in warnings)


def test_one_bit_png(tmp_path, rgb):
    Image.fromarray(rgb).convert("1").save(tmp_path / "bw.png")
    out, _ = load_rgb(tmp_path / "bw.png")
    _assert_rgb8(out, rgb.shape)
    assert set(np.unique(out)) <= {0, 255}


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, display rotated 90° clockwise
    Image.fromarray(rgb).save(tmp_path / "rot.png", exif=exif)
    out, warnings = load_rgb(tmp_path / "rot.png")
    assert np.array_equal(out, np.rot90(rgb, k=-1))
    assert any("orientation 6" in w for w in warnings)


@pytest.mark.parametrize("ext, fmt", [(".JPEG", "JPEG"), (".JPG", "JPEG"), (".PNG", "PNG"), (".Jpeg", "JPEG")])
def test_upper_case_extensions(tmp_path, rgb, ext, fmt):
    path = tmp_path / f"{PERSIAN}_upper{ext}"
    Image.fromarray(rgb).save(path, format=fmt, quality=95)
    out, _ = load_rgb(path)
    _assert_rgb8(out, rgb.shape)
    tolerance = 0 if fmt == "PNG" else 2
    assert np.abs(out.astype(int) - rgb).mean() <= tolerance
    assert find_image(tmp_path, PERSIAN) == path


def test_tiny_image_is_upscaled_with_a_warning(tmp_path, rgb):
    Image.fromarray(rgb).resize((100, 80), Image.Resampling.BICUBIC).save(tmp_path / "tiny.png")
    small, load_warnings = load_rgb(tmp_path / "tiny.png")
    assert load_warnings == []
    out, warnings = preprocess(small)
    _assert_rgb8(out, (224, 224, 3))
    assert len(warnings) == 1 and "100x80" in warnings[0] and "upscaled" in warnings[0]


def test_truncated_jpeg_is_an_error_not_gray(tmp_path, sample_path):
    data = sample_path.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DiffxaiError, match="truncated") as exc:
        load_rgb(path)
    _assert_one_line_naming(exc, path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg_fails_even_if_someone_enabled_truncated_loading(tmp_path, sample_path, monkeypatch):
    data = sample_path.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) * 3 // 4])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DiffxaiError) as exc:
        load_rgb(path)
    _assert_one_line_naming(exc, path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


@pytest.mark.parametrize("name,content,match", [
    ("notes.jpg", "this is not a picture\nsecond line\n", "not a recognised image"),  # non-image, .jpg name
    ("empty.png", "", "empty"),
])
def test_non_image_or_empty_file(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DiffxaiError, match=match) as exc:
        load_rgb(path)
    _assert_one_line_naming(exc, path)


def test_directory_and_missing_file(tmp_path):
    folder = tmp_path / "dir.jpg"
    folder.mkdir()
    with pytest.raises(DiffxaiError, match="folder") as exc:
        load_rgb(folder)
    _assert_one_line_naming(exc, folder)
    with pytest.raises(DiffxaiError) as exc:
        load_rgb(tmp_path / "missing.jpg")
    _assert_one_line_naming(exc, tmp_path / "missing.jpg")


def test_float_image_is_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    with pytest.raises(DiffxaiError, match="mode F") as exc:
        load_rgb(path)
    _assert_one_line_naming(exc, path)


# --------------------------------------------------------------------------- preprocess
def test_preprocess_center_crop_rounding():
    h, w = 301, 256  # short side already 256: no resampling, pure crop
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.dstack([yy % 256, xx % 256, (yy // 256) * 100]).astype(np.uint8)
    out, warnings = preprocess(arr)
    top = int(round((h - 224) / 2))  # round(38.5) == 38, torchvision's rounding
    assert top == 38
    assert np.array_equal(out, arr[top:top + 224, 16:240])
    assert warnings == []


@pytest.mark.parametrize("size", [(256, 300), (300, 256), (333, 517), (100, 50), (225, 1000), (1, 1)])
def test_preprocess_matches_torchvision(rgb, size):
    transforms = pytest.importorskip("torchvision.transforms")
    image = Image.fromarray(rgb).resize(size)
    expected = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.CenterCrop(224)])(image)
    out, _ = preprocess(np.asarray(image))
    assert np.array_equal(out, np.asarray(expected))


def test_preprocess_rejects_bad_arguments(rgb):
    with pytest.raises(DiffxaiError, match="resize"):
        preprocess(rgb, resize=200, crop=224)
    with pytest.raises(DiffxaiError, match="uint8"):
        preprocess(rgb.astype(np.float32))
    with pytest.raises(DiffxaiError, match="uint8"):
        preprocess(rgb[..., 0])


# --------------------------------------------------------------------------- prepare_image
def test_prepare_image_writes_png_and_json(tmp_path, sample_path):
    info = resolve_class(PERSIAN)
    out_png, out_json = tmp_path / "out" / "persian_cat.png", tmp_path / "out" / "persian_cat.json"
    warnings = prepare_image(sample_path, out_png, out_json, info, 256, 224, source="https://example.org/cat.jpg")
    assert warnings == []
    with Image.open(out_png) as im:
        assert im.mode == "RGB" and im.size == (224, 224)
        png = np.asarray(im)
    expected, _ = preprocess(load_rgb(sample_path)[0])
    assert np.array_equal(png, expected)
    meta = json.loads(out_json.read_text())
    assert set(meta) >= {"source", "source_sha256", "png_sha256", "class_index", "synset", "class_name",
                         "original_size", "warnings"}
    assert meta["source"] == "https://example.org/cat.jpg"
    assert meta["source_sha256"] == hashlib.sha256(sample_path.read_bytes()).hexdigest()
    assert meta["png_sha256"] == hashlib.sha256(out_png.read_bytes()).hexdigest()
    assert (meta["class_index"], meta["synset"], meta["class_name"]) == (283, PERSIAN, "Persian cat")
    assert meta["original_size"] == [256, 300]
    assert meta["warnings"] == []
    assert sorted(p.name for p in out_png.parent.iterdir()) == ["persian_cat.json", "persian_cat.png"]
    # deterministic: a rerun gives the same bytes; without source the local path is recorded
    prepare_image(sample_path, out_png, out_json, info, 256, 224)
    again = json.loads(out_json.read_text())
    assert again["png_sha256"] == meta["png_sha256"]
    assert again["source"] == str(sample_path)


def test_prepare_image_returns_and_records_warnings(tmp_path, rgb):
    src = tmp_path / "tiny_gray.png"
    Image.fromarray(rgb).convert("L").resize((120, 90)).save(src)
    warnings = prepare_image(src, tmp_path / "t.png", tmp_path / "t.json", resolve_class(0), 256, 224)
    assert len(warnings) == 2 and "grayscale" in warnings[0] and "120x90" in warnings[1]
    meta = json.loads((tmp_path / "t.json").read_text())
    assert meta["warnings"] == warnings and meta["original_size"] == [120, 90]


def test_prepare_image_broken_source_writes_nothing(tmp_path):
    src = tmp_path / "broken.jpg"
    src.write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = tmp_path / "out"
    with pytest.raises(DiffxaiError):
        prepare_image(src, out / "x.png", out / "x.json", resolve_class(0), 256, 224)
    assert not out.exists() or list(out.iterdir()) == []


# --------------------------------------------------------------------------- find_image
def test_find_image_in_shared_flat_folder(sample_path):
    assert find_image(SAMPLES, PERSIAN) == sample_path


def test_find_image_flat_folder_is_deterministic(tmp_path):
    for name in [f"{PERSIAN}_b.png", f"{PERSIAN}_a.JPEG", f"{PERSIAN}.txt", f"{PERSIAN}0_x.jpg",
                 "n01440764_tench.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f"{PERSIAN}_dir.jpg").mkdir()  # a folder with an image name is not a candidate
    assert find_image(tmp_path, PERSIAN) == tmp_path / f"{PERSIAN}_a.JPEG"
    assert find_image(str(tmp_path), "n01440764") == tmp_path / "n01440764_tench.jpg"


def test_find_image_imagenet_tree(tmp_path):
    sub = tmp_path / PERSIAN
    sub.mkdir()
    for name in ["n02123394_9.JPEG", "n02123394_10.JPEG", "readme.txt"]:
        (sub / name).write_bytes(b"x")
    assert find_image(tmp_path, PERSIAN) == sub / "n02123394_10.JPEG"


def test_find_image_missing_synset(tmp_path):
    (tmp_path / "n01440764_tench.jpg").write_bytes(b"x")
    (tmp_path / PERSIAN).mkdir()  # an empty class folder does not count
    with pytest.raises(DiffxaiError) as exc:
        find_image(tmp_path, PERSIAN)
    msg = str(exc.value)
    assert "\n" not in msg and PERSIAN in msg and str(tmp_path) in msg
    assert "--config image_dir=PATH" in msg


def test_find_image_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DiffxaiError, match="does not exist") as exc:
        find_image(missing, PERSIAN)
    _assert_one_line_naming(exc, missing)
    assert "image_dir" in str(exc.value)
    afile = tmp_path / "file.jpg"
    afile.write_bytes(b"x")
    with pytest.raises(DiffxaiError, match="not a folder"):
        find_image(afile, PERSIAN)


def _png_header_only(path, width, height):
    """A PNG of a few hundred bytes that claims width x height RGB (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("pillow_limit", ["default", None])
def test_a_decompression_bomb_fails_its_class_in_one_line_without_decoding(tmp_path, monkeypatch, pillow_limit):
    import resource

    from PIL import Image

    from diffxai.classes import resolve_class
    from diffxai.fetch import fetch_class_images

    if pillow_limit is None:  # even with Pillow's own check switched off
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    bomb = _png_header_only(tmp_path / "n02129604_bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 1000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DiffxaiError) as e:
        fetch_class_images(resolve_class("n02129604"), tmp_path / "out", image_dir=tmp_path, cache_dir=None)
    msg = str(e.value)
    assert "\n" not in msg and str(bomb) in msg and "tiger" in msg and ("bomb" in msg or "pixels" in msg), msg
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000, "no 2.7 GB decode"
    assert not (tmp_path / "out").exists()
