"""Hand-drawn masks of the four study images, as the pipeline sees them (Resize 256 + CenterCrop 224).

The polygons below were drawn by reading each 224 x 224 crop on a pixel grid (vertices in crop
pixels, x then y, clockwise) and checked on overlay figures. ``stripes`` (tiger only) is not drawn:
it is the dark-stripe pixels inside the hand silhouette's body (silhouette minus face), i.e. pixels
whose grey level lies more than ``STRIPE_CONTRAST`` below its Gaussian-blurred (sigma 3 px)
neighbourhood. Run from the repository root:

    python bench/masks/make_masks.py ../shared/data/imagenet-samples [--overlay /tmp/overlays]

It writes ``diffxai/data/masks/<synset>/{silhouette,face[,stripes]}.png`` and
``diffxai/data/masks/index.json`` (the sha256 of each source file and of its crop's pixels, so the
package uses a mask only for exactly that image).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from diffxai.images import load_rgb, preprocess, sha256_file  # noqa: E402

OUT = ROOT / "diffxai" / "data" / "masks"
STRIPE_CONTRAST = 0.06   # grey levels (of 1) below the local mean
STRIPE_SIGMA = 3.0

IMAGES = {
    "n02123394": {
        "file": "n02123394_Persian_cat.jpg",
        # the cat fills the frame except the blue background top left and grey background top right
        "silhouette": [(36, 0), (100, 0), (130, 3), (165, 5), (188, 3), (200, 0), (224, 0), (224, 18),
                       (216, 24), (210, 32), (208, 40), (207, 56), (208, 64), (210, 72), (212, 80),
                       (216, 88), (220, 96), (224, 104), (224, 224), (0, 224), (0, 86), (5, 80), (10, 72),
                       (16, 64), (22, 56), (26, 48), (30, 40), (32, 32), (34, 24), (36, 16), (38, 8)],
        # forehead, eyes, nose, muzzle and chin (not the ruff, ears or chest fur)
        "face": [(60, 40), (112, 28), (165, 40), (185, 70), (185, 100), (170, 130), (140, 155),
                 (105, 162), (75, 152), (50, 125), (40, 95), (45, 60)],
    },
    "n02123597": {
        "file": "n02123597_Siamese_cat.jpg",
        # head top left (one ear up, one ear to the left edge), body across to the right edge
        "silhouette": [(37, 55), (45, 65), (55, 75), (62, 83), (70, 88), (80, 94), (96, 96), (128, 96),
                       (160, 97), (176, 100), (192, 108), (224, 114), (224, 206), (216, 200), (206, 190),
                       (196, 182), (184, 178), (170, 174), (156, 170), (146, 166), (138, 166), (132, 170),
                       (130, 176), (136, 182), (134, 188), (126, 190), (118, 186), (110, 183), (96, 179),
                       (80, 173), (64, 165), (50, 155), (38, 145), (28, 137), (20, 130),
                       (10, 124), (0, 118), (0, 97), (20, 97), (32, 98), (38, 90), (38, 78), (36, 66)],
        # the dark point of the face: eyes, nose, muzzle (not the ears)
        "face": [(40, 88), (62, 84), (78, 94), (88, 108), (86, 122), (74, 132), (58, 138), (42, 134),
                 (32, 124), (30, 104)],
    },
    "n02124075": {
        "file": "n02124075_Egyptian_cat.jpg",
        # a face close-up: the cat fills the frame but for the two top corners
        "silhouette": [(24, 0), (198, 0), (214, 8), (224, 18), (224, 224), (0, 224), (0, 44), (8, 26),
                       (16, 10)],
        "face": [(40, 0), (180, 0), (200, 30), (210, 80), (205, 120), (190, 150), (160, 175), (120, 185),
                 (85, 180), (50, 160), (25, 125), (15, 80), (22, 30)],
    },
    "n02129604": {
        "file": "n02129604_tiger.jpg",
        # walking left in grass: head left, back to the tail on the right, legs lost in the grass
        "silhouette": [(33, 40), (38, 31), (48, 31), (57, 29), (62, 27), (64, 31), (80, 32), (96, 33),
                       (110, 31), (120, 32), (128, 34), (136, 38), (144, 42), (152, 46), (160, 52),
                       (165, 58), (168, 64), (172, 72), (176, 78), (180, 84), (188, 90), (196, 98),
                       (204, 104), (207, 110), (205, 122), (203, 138), (199, 140), (197, 128), (197, 114),
                       (188, 106), (178, 104), (170, 104), (164, 110), (160, 122), (156, 132), (148, 138),
                       (136, 144), (126, 150), (118, 144), (108, 134), (98, 124), (90, 116), (80, 110),
                       (74, 100), (68, 88), (62, 80), (54, 76), (44, 74), (34, 76), (28, 72), (22, 68),
                       (20, 60), (22, 52), (26, 44)],
        "face": [(26, 42), (34, 34), (46, 32), (52, 40), (54, 56), (52, 68), (46, 76), (34, 77), (26, 72),
                 (20, 64), (20, 54)],
        "stripes": True,
    },
}


def polygon_mask(vertices, shape=(224, 224)) -> np.ndarray:
    """Rasterise a polygon (x, y vertices in pixels) into a bool (H, W) mask (PIL, outline included)."""
    im = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(im).polygon([tuple(map(float, v)) for v in vertices], fill=255, outline=255)
    return np.asarray(im) > 0


def stripes_mask(rgb: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Dark-stripe pixels of ``body``: grey below its local (Gaussian) mean by STRIPE_CONTRAST."""
    g = (np.asarray(rgb, float) @ np.array([0.299, 0.587, 0.114])) / 255.0
    return body & (g < ndimage.gaussian_filter(g, STRIPE_SIGMA) - STRIPE_CONTRAST)


def overlay(rgb: np.ndarray, masks: dict, path: Path) -> None:
    """Each mask tinted over the crop (x3), side by side, to check the polygons by eye."""
    tiles = []
    for name, m in masks.items():
        img = np.asarray(rgb, float)
        edge = m ^ ndimage.binary_erosion(m)
        img[m] = 0.6 * img[m] + 0.4 * np.array([255, 0, 255])
        img[edge] = (255, 255, 0)
        tiles.append(np.kron(img.astype(np.uint8), np.ones((3, 3, 1), np.uint8)))
    Image.fromarray(np.concatenate(tiles, 1)).save(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image_dir")
    ap.add_argument("--overlay", default=None, help="folder for overlay PNGs (checking by eye)")
    a = ap.parse_args(argv)
    index = []
    for synset, spec in IMAGES.items():
        src = Path(a.image_dir) / spec["file"]
        rgb, _ = load_rgb(src)
        crop, _ = preprocess(rgb, resize=256, crop=224)
        masks = {"silhouette": polygon_mask(spec["silhouette"]), "face": polygon_mask(spec["face"])}
        masks["face"] &= masks["silhouette"]
        if spec.get("stripes"):
            masks["stripes"] = stripes_mask(crop, masks["silhouette"] & ~masks["face"])
        folder = OUT / synset
        folder.mkdir(parents=True, exist_ok=True)
        for name, m in masks.items():
            Image.fromarray((m * 255).astype(np.uint8), "L").save(folder / f"{name}.png", optimize=True)
        index.append({"synset": synset, "file": spec["file"], "source_sha256": sha256_file(src),
                      "pixels_sha256": hashlib.sha256(np.ascontiguousarray(crop).tobytes()).hexdigest(),
                      "resize": 256, "crop": 224, "masks": sorted(masks)})
        if a.overlay:
            Path(a.overlay).mkdir(parents=True, exist_ok=True)
            overlay(crop, masks, Path(a.overlay) / f"{synset}.png")
        print(synset, {k: round(float(v.mean()), 3) for k, v in masks.items()})
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
