"""Turn a flat ILSVRC2012 validation folder into an OUT/<synset>/ tree of symlinks (no copies).

    python -m diffxai.imagenet_tree VAL_DIR LABELS OUT

VAL_DIR holds the 50,000 ``ILSVRC2012_val_00000001.JPEG`` ... files, flat. LABELS is either

* Kaggle's ``LOC_val_solution.csv``: header ``ImageId,PredictionString``; the first token of the
  prediction string is the image's synset (``n01751748 x y x y ...``), or
* the devkit's ``ILSVRC2012_validation_ground_truth.txt``: one ILSVRC2012_ID (1..1000) per line,
  line n for ``ILSVRC2012_val_{n:08d}``; the ID -> synset (WNID) map is read from the devkit's
  ``meta.mat`` (``--meta``; default: ``meta.mat`` beside the label file).

Every image in VAL_DIR needs exactly one label and every label an image; synsets must be among the
1000 ILSVRC2012 classes. Each ``OUT/<synset>/<file>`` becomes a symlink to the absolute path of
``VAL_DIR/<file>``. Reruns are idempotent: links already pointing there are left alone, links
pointing elsewhere are replaced, and a real file in the way is an error (never overwritten). The
result is the ``<synset>/`` tree that ``images_per_class`` reads. Errors are one line that names the
culprit; the last line is a summary (classes, images, links made).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from pathlib import Path

from .errors import DiffxaiError

IMAGE_EXTS = (".jpeg", ".jpg", ".png")
_VAL_RE = re.compile(r"ILSVRC2012_val_(\d{8})$")
_SYNSET_RE = re.compile(r"n\d{8}$")


def _known_synsets() -> set[str]:
    from .classes import class_table

    return {c.synset for c in class_table()}


def list_images(val_dir: Path) -> dict[str, str]:
    """{ImageId (file stem): file name} of the image files directly in val_dir."""
    if not val_dir.is_dir():
        raise DiffxaiError(f"imagenet_tree: validation folder {val_dir} does not exist or is not a folder")
    out: dict[str, str] = {}
    for f in sorted(os.listdir(val_dir)):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in IMAGE_EXTS or not (val_dir / f).is_file():
            continue
        if stem in out:
            raise DiffxaiError(f"imagenet_tree: {val_dir} has two files for image {stem}: "
                               f"{out[stem]} and {f}")
        out[stem] = f
    if not out:
        raise DiffxaiError(f"imagenet_tree: no .JPEG/.jpg/.png images in {val_dir}")
    return out


def read_loc_csv(path: Path) -> dict[str, str]:
    """{ImageId: synset} from Kaggle's LOC_val_solution.csv."""
    labels: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DiffxaiError(f"imagenet_tree: {path} does not start with the header "
                               f"'ImageId,PredictionString' of LOC_val_solution.csv")
        for n, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2 or not row[1].split():
                raise DiffxaiError(f"imagenet_tree: {path} line {n}: no synset for image "
                                   f"{row[0] if row else '?'}")
            image, synset = row[0].strip(), row[1].split()[0]
            if image in labels:
                raise DiffxaiError(f"imagenet_tree: {path} line {n}: image {image} labelled twice")
            labels[image] = synset
    return labels


def read_meta_mat(path: Path) -> dict[int, str]:
    """{ILSVRC2012_ID: WNID} from the devkit's meta.mat (struct array ``synsets``)."""
    from scipy.io import loadmat

    if not path.is_file():
        raise DiffxaiError(f"imagenet_tree: devkit meta file {path} not found (give it with --meta)")
    try:
        syn = loadmat(path, squeeze_me=True, struct_as_record=True)["synsets"]
        ids, wnids = syn["ILSVRC2012_ID"], syn["WNID"]
    except (KeyError, ValueError, TypeError, OSError, NotImplementedError) as e:
        raise DiffxaiError(f"imagenet_tree: {path} is not a devkit meta.mat with a 'synsets' struct "
                           f"(ILSVRC2012_ID, WNID): {e}") from None
    return {int(i): str(w) for i, w in zip(ids.ravel() if hasattr(ids, "ravel") else [ids],
                                            wnids.ravel() if hasattr(wnids, "ravel") else [wnids])}


def read_devkit(path: Path, meta: Path) -> dict[str, str]:
    """{ImageId: synset} from ILSVRC2012_validation_ground_truth.txt and meta.mat."""
    id2wnid = read_meta_mat(meta)
    labels: dict[str, str] = {}
    n = 0
    with open(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            s = line.strip()
            if not s:
                continue
            try:
                ilsvrc_id = int(s)
            except ValueError:
                raise DiffxaiError(f"imagenet_tree: {path} line {line_no}: {s!r} is not an "
                                   f"ILSVRC2012_ID") from None
            if ilsvrc_id not in id2wnid:
                raise DiffxaiError(f"imagenet_tree: {path} line {line_no}: ILSVRC2012_ID {ilsvrc_id} "
                                   f"is not in {meta}")
            n += 1
            labels[f"ILSVRC2012_val_{n:08d}"] = id2wnid[ilsvrc_id]
    return labels


def read_labels(labels: Path, meta: Path | None = None) -> dict[str, str]:
    """{ImageId: synset} from either label format (told apart by the first line)."""
    if not labels.is_file():
        raise DiffxaiError(f"imagenet_tree: label file {labels} not found")
    with open(labels) as fh:
        first = fh.readline()
    if first.lstrip("\ufeff").startswith("ImageId"):
        return read_loc_csv(labels)
    if first.strip().isdigit():
        return read_devkit(labels, meta if meta is not None else labels.parent / "meta.mat")
    raise DiffxaiError(f"imagenet_tree: {labels} is neither LOC_val_solution.csv (header "
                       f"'ImageId,PredictionString') nor ILSVRC2012_validation_ground_truth.txt "
                       f"(one ILSVRC2012_ID per line)")


def build_tree(val_dir, labels, out, *, meta=None) -> dict[str, int]:
    """Make OUT/<synset>/<file> symlinks; returns counts (classes, images, linked, kept, replaced)."""
    val_dir, labels, out = Path(val_dir), Path(labels), Path(out)
    images = list_images(val_dir)
    lab = read_labels(labels, Path(meta) if meta is not None else None)
    if len(lab) != len(images):
        missing = sorted(set(images) - set(lab))
        extra = sorted(set(lab) - set(images))
        hint = (f"first unlabelled image: {images[missing[0]]}" if missing
                else f"first label without an image: {extra[0]}" if extra else "")
        raise DiffxaiError(f"imagenet_tree: {labels} has {len(lab)} labels but {val_dir} has "
                           f"{len(images)} images; {hint}")
    missing = sorted(set(images) - set(lab))
    if missing:
        raise DiffxaiError(f"imagenet_tree: image {images[missing[0]]} in {val_dir} has no label in "
                           f"{labels} ({len(missing)} such images)")
    known = _known_synsets()
    for image, synset in lab.items():
        if not _SYNSET_RE.match(synset) or synset not in known:
            raise DiffxaiError(f"imagenet_tree: unknown synset {synset!r} for image {image} in {labels}")
    src_root = Path(os.path.abspath(val_dir))
    counts = dict(classes=len(set(lab.values())), images=len(images), linked=0, kept=0, replaced=0)
    for image in sorted(images):
        f = images[image]
        d = out / lab[image]
        d.mkdir(parents=True, exist_ok=True)
        link, target = d / f, src_root / f
        if link.is_symlink():
            if os.readlink(link) == str(target):
                counts["kept"] += 1
                continue
            link.unlink()
            counts["replaced"] += 1
        elif link.exists():
            raise DiffxaiError(f"imagenet_tree: {link} exists and is not a symlink; not overwriting it")
        os.symlink(target, link)
        counts["linked"] += 1
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffxai.imagenet_tree",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("val_dir", help="flat folder of ILSVRC2012_val_*.JPEG")
    ap.add_argument("labels", help="LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt")
    ap.add_argument("out", help="output folder: OUT/<synset>/<file> symlinks")
    ap.add_argument("--meta", help="devkit meta.mat (default: beside the ground-truth file)")
    a = ap.parse_args(argv)
    try:
        c = build_tree(a.val_dir, a.labels, a.out, meta=a.meta)
    except DiffxaiError as e:
        print(f"diffxai: {e}", file=sys.stderr)
        return 2
    print(f"imagenet_tree: {c['classes']} classes, {c['images']} images -> {a.out} "
          f"({c['linked']} linked, {c['kept']} already there, {c['replaced']} replaced)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
