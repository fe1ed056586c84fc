"""tools/voc_to_dataset.py: a VOC segmentation layout becomes the toolkit layout, labels untouched."""
import os
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import run_script
from data import Preprocessing, find_split, load_pair
from tools import voc_to_dataset
from tools.verify_dataset import verify
from utils.errors import UserError
from utils.image import read_label, voc_palette


def make_voc(root, train=("2007_000001", "2007_000002"), val=("2007_000003",), size=(30, 40)):
    """A tiny VOCdevkit/VOC2007: each label a person (15) box with a 255 border."""
    voc = os.path.join(root, "VOCdevkit", "VOC2007")
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(voc, sub))
    for split, ids in (("train", train), ("val", val)):
        with open(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"), "w") as handle:
            handle.write("".join(f"{i}\n" for i in ids))
        for k, image_id in enumerate(ids):
            label = np.zeros(size, np.uint8)
            label[5:15, 5 + k:20 + k] = 255
            label[6:14, 6 + k:19 + k] = 15
            img = Image.frombytes("P", (size[1], size[0]), label.tobytes())
            img.putpalette(voc_palette().reshape(-1).tolist())
            img.save(os.path.join(voc, "SegmentationClass", f"{image_id}.png"))
            cv2.imwrite(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"),
                        np.full(size + (3,), 40 * k, np.uint8))
    return voc


def test_converts_splits_byte_for_byte(tmp_path):
    voc = make_voc(str(tmp_path))
    out = str(tmp_path / "data" / "voc2007")
    assert voc_to_dataset.main(["--voc_root", voc, "--out", out]) == 0
    assert sorted(os.listdir(os.path.join(out, "train_image"))) == ["2007_000001.jpg", "2007_000002.jpg"]
    assert sorted(os.listdir(os.path.join(out, "val_label"))) == ["2007_000003.png"]
    for split, image_id in (("train", "2007_000002"), ("val", "2007_000003")):
        for sub, folder, ext in (("JPEGImages", "image", ".jpg"), ("SegmentationClass", "label", ".png")):
            with open(os.path.join(voc, sub, image_id + ext), "rb") as a, \
                    open(os.path.join(out, f"{split}_{folder}", image_id + ext), "rb") as b:
                assert a.read() == b.read()
    with Image.open(os.path.join(out, "val_label", "2007_000003.png")) as img:
        assert img.mode == "P"
    names = open(os.path.join(out, "classes.txt")).read().split()
    assert len(names) == 21 and names[0] == "background" and names[15] == "person"


def test_converted_set_trains_with_255_ignored(tmp_path):
    voc = make_voc(str(tmp_path))
    out = str(tmp_path / "voc2007")
    voc_to_dataset.main(["--voc_root", voc, "--out", out])
    report = verify(str(tmp_path), "voc2007", 21)
    assert report.ok, report.format()
    pairs = find_split(str(tmp_path), "voc2007", "val")
    _, label = load_pair(*pairs[0], Preprocessing(30, 40), 21)
    # Hand count: a 10x15 box whose 1-pixel rim is 255 and whose 8x13 inside is person.
    assert np.count_nonzero(label == 15) == 8 * 13 and np.count_nonzero(label == 255) == 10 * 15 - 8 * 13
    assert read_label(pairs[0][1])[6, 6] == 15


def test_vocdevkit_folder_is_accepted(tmp_path):
    make_voc(str(tmp_path))
    out = str(tmp_path / "out")
    assert voc_to_dataset.main(["--voc_root", str(tmp_path / "VOCdevkit"), "--out", out, "--splits", "val"]) == 0
    assert os.listdir(os.path.join(out, "val_image")) == ["2007_000003.jpg"]
    assert not os.path.exists(os.path.join(out, "train_image"))


@pytest.mark.parametrize("problem, fragment", [
    ("missing", "2007_000002.jpg: listed but missing"),
    ("value", "2007_000001.png: label values {40} include [40] outside 0..20"),  # utils.image.check_label_values
    ("size", "2007_000003.png: label size 10x10 differs from image"),  # utils.image.size_mismatch
    ("split", "--splits trainval"),
])
def test_problems_are_listed_and_nothing_is_written(tmp_path, problem, fragment):
    voc = make_voc(str(tmp_path))
    splits = "train,val"
    if problem == "missing":
        os.remove(os.path.join(voc, "JPEGImages", "2007_000002.jpg"))
    elif problem == "value":
        cv2.imwrite(os.path.join(voc, "SegmentationClass", "2007_000001.png"), np.full((30, 40), 40, np.uint8))
    elif problem == "size":
        cv2.imwrite(os.path.join(voc, "SegmentationClass", "2007_000003.png"), np.zeros((10, 10), np.uint8))
    else:
        splits = "trainval"
    out = str(tmp_path / "out")
    with pytest.raises(UserError, match=re.escape(fragment)):
        voc_to_dataset.main(["--voc_root", voc, "--out", out, "--splits", splits])
    assert not os.path.exists(out)


def test_cli_one_line_error(tmp_path):
    proc = run_script("tools/voc_to_dataset.py", "--voc_root", tmp_path, "--out", tmp_path / "o", timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --voc_root") and "Traceback" not in proc.stderr
