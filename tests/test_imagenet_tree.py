"""imagenet_tree: a flat ILSVRC2012 validation folder + labels -> OUT/<synset>/ symlinks."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffxai import imagenet_tree as it
from diffxai.errors import DiffxaiError

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-samples"
# (synset, sample file) of the fake images ILSVRC2012_val_00000001 ... 6, in order
SYNSETS = ["n01440764", "n01443537", "n01440764", "n01484850", "n01443537", "n01440764"]


@pytest.fixture()
def val_dir(tmp_path):
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} not present")
    d = tmp_path / "val"
    d.mkdir()
    for n, syn in enumerate(SYNSETS, start=1):
        src = next(SAMPLES.glob(f"{syn}_*.jpg"))
        shutil.copyfile(src, d / f"ILSVRC2012_val_{n:08d}.JPEG")
    (d / "README.txt").write_text("not an image")
    return d


def _loc_csv(path, rows):
    path.write_text("ImageId,PredictionString\n"
                    + "".join(f"{img},{syn} 10 20 200 220 {syn} 5 5 100 100\n" for img, syn in rows))
    return path


def _loc_rows():
    return [(f"ILSVRC2012_val_{n:08d}", s) for n, s in enumerate(SYNSETS, start=1)][::-1]


def _meta(path, ids_wnids):
    from scipy.io import savemat

    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
          ("num_children", "O"), ("children", "O"), ("wordnet_height", "O"),
          ("num_train_images", "O")]
    syn = np.zeros((len(ids_wnids), 1), dtype=dt)
    for i, (iid, wnid) in enumerate(ids_wnids):
        syn[i, 0] = (np.array([[iid]], dtype=np.uint16), np.array([wnid]), np.array([f"words {wnid}"]),
                     np.array(["gloss"]), np.array([[0]], dtype=np.uint8), np.zeros((1, 0)),
                     np.array([[0]], dtype=np.uint8), np.array([[1300]], dtype=np.uint16))
    savemat(path, {"synsets": syn})
    return path


def _devkit(tmp_path, ids=None):
    wnids = {1: "n01440764", 2: "n01443537", 3: "n01484850", 1001: "n00001740"}  # 1001: an inner node
    _meta(tmp_path / "meta.mat", list(wnids.items()))
    inv = {w: i for i, w in wnids.items() if i <= 1000}
    ids = ids if ids is not None else [inv[s] for s in SYNSETS]
    gt = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("".join(f"{i}\n" for i in ids))
    return gt


def _check_tree(out, val_dir):
    got = {}
    for syn_dir in sorted(out.iterdir()):
        for link in sorted(syn_dir.iterdir()):
            assert link.is_symlink()
            assert Path(os.readlink(link)) == Path(os.path.abspath(val_dir)) / link.name
            assert link.resolve().read_bytes() == (val_dir / link.name).read_bytes()
            got[link.name] = syn_dir.name
    assert got == {f"ILSVRC2012_val_{n:08d}.JPEG": s for n, s in enumerate(SYNSETS, start=1)}


def test_loc_csv_tree_and_idempotent_rerun(val_dir, tmp_path, capsys):
    labels = _loc_csv(tmp_path / "LOC_val_solution.csv", _loc_rows())
    out = tmp_path / "tree"
    assert it.main([str(val_dir), str(labels), str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("imagenet_tree: 3 classes, 6 images") and "6 linked" in line
    _check_tree(out, val_dir)
    assert sorted(p.name for p in out.iterdir()) == ["n01440764", "n01443537", "n01484850"]
    assert not any(p.is_file() and not p.is_symlink() for p in out.rglob("*"))  # no copies
    # rerun: nothing changes
    assert it.main([str(val_dir), str(labels), str(out)]) == 0
    assert "0 linked, 6 already there" in capsys.readouterr().out
    _check_tree(out, val_dir)


def test_devkit_ground_truth_with_meta(val_dir, tmp_path):
    gt = _devkit(tmp_path)
    out = tmp_path / "tree"
    c = it.build_tree(val_dir, gt, out)  # meta.mat found beside the ground truth
    assert c["classes"] == 3 and c["images"] == 6 and c["linked"] == 6
    _check_tree(out, val_dir)
    # an explicit --meta elsewhere
    other = tmp_path / "devkit"
    other.mkdir()
    (tmp_path / "meta.mat").rename(other / "meta.mat")
    with pytest.raises(DiffxaiError, match="meta.mat not found"):
        it.build_tree(val_dir, gt, out)
    assert it.main([str(val_dir), str(gt), str(out), "--meta", str(other / "meta.mat")]) == 0


def test_stale_links_are_replaced_real_files_kept(val_dir, tmp_path):
    labels = _loc_csv(tmp_path / "LOC_val_solution.csv", _loc_rows())
    out = tmp_path / "tree"
    it.build_tree(val_dir, labels, out)
    moved = tmp_path / "val2"
    shutil.copytree(val_dir, moved)
    c = it.build_tree(moved, labels, out)
    assert c["replaced"] == 6
    _check_tree(out, moved)
    link = out / "n01440764" / "ILSVRC2012_val_00000001.JPEG"
    link.unlink()
    link.write_bytes(b"a real file")
    with pytest.raises(DiffxaiError, match="ILSVRC2012_val_00000001.JPEG exists and is not a symlink"):
        it.build_tree(moved, labels, out)
    assert link.read_bytes() == b"a real file"


@pytest.mark.parametrize("case,match", [
    ("missing_labels", "label file .*nope.csv not found"),
    ("missing_dir", "validation folder .* does not exist"),
    ("unknown_synset", "unknown synset 'n99999999' for image ILSVRC2012_val_00000002"),
    ("bad_synset", "unknown synset 'cat' for image ILSVRC2012_val_00000002"),
    ("fewer_labels", "has 5 labels but .* has 6 images; first unlabelled image: ILSVRC2012_val_00000006.JPEG"),
    ("more_labels", "has 7 labels but .* has 6 images; first label without an image: ILSVRC2012_val_00000007"),
    ("wrong_label", "image ILSVRC2012_val_00000006.JPEG in .* has no label"),
    ("bad_header", "neither LOC_val_solution.csv"),
    ("dev_count", "has 5 labels but .* has 6 images"),
    ("dev_unknown_id", "line 3: ILSVRC2012_ID 7 is not in .*meta.mat"),
])
def test_errors_name_the_culprit(val_dir, tmp_path, case, match, capsys):
    rows = _loc_rows()[::-1]
    labels = tmp_path / "LOC_val_solution.csv"
    vd = val_dir
    if case == "missing_labels":
        labels = tmp_path / "nope.csv"
    elif case == "missing_dir":
        vd = tmp_path / "absent"
        _loc_csv(labels, rows)
    elif case in ("unknown_synset", "bad_synset"):
        rows[1] = (rows[1][0], "n99999999" if case == "unknown_synset" else "cat")
        _loc_csv(labels, rows)
    elif case == "fewer_labels":
        _loc_csv(labels, rows[:5])
    elif case == "more_labels":
        _loc_csv(labels, rows + [("ILSVRC2012_val_00000007", "n01440764")])
    elif case == "wrong_label":
        _loc_csv(labels, rows[:5] + [("ILSVRC2012_val_00000009", "n01440764")])
    elif case == "bad_header":
        labels.write_text("image,label\nx,y\n")
    elif case == "dev_count":
        labels = _devkit(tmp_path, [1, 2, 1, 3, 2])
    elif case == "dev_unknown_id":
        labels = _devkit(tmp_path, [1, 2, 7, 3, 2, 1])
    out = tmp_path / "tree"
    with pytest.raises(DiffxaiError, match=match):
        it.build_tree(vd, labels, out)
    assert it.main([str(vd), str(labels), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("diffxai: imagenet_tree: ")
    assert not out.exists() or not any(out.rglob("*.JPEG"))  # nothing half-built
