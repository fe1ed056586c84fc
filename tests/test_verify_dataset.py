"""tools/verify_dataset.py: every check names the file; exit codes; the shared set's known quirk."""
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, shared_dataset, write_dataset
import utils.dataset_checks as checks
from tools.verify_dataset import verify
from utils.errors import UserError


def labels_dir(root, split="train"):
    return os.path.join(root, "tiny", f"{split}_label")


def images_dir(root, split="train"):
    return os.path.join(root, "tiny", f"{split}_image")


def test_clean_set_passes_with_hand_counted_shares(tmp_path):
    write_dataset(str(tmp_path), n_train=4, n_test=2)
    report = verify(str(tmp_path), "tiny", 2)
    assert report.ok and not report.warnings, report.format()
    assert report.splits["train"].n_pairs == 4 and report.splits["test"].n_pairs == 2
    # write_dataset draws one 10x10 class-1 square per 40x48 label.
    assert report.class_shares("train")[1] == pytest.approx(100 / (40 * 48))
    assert [os.path.basename(i) for i, _ in report.splits["train"].pairs] == [f"train{i}.png" for i in range(4)]


def test_zero_255_mask_set_is_flagged(tmp_path):
    write_dataset(str(tmp_path), n_train=3, n_test=0, splits=("train",))
    for name in os.listdir(labels_dir(str(tmp_path))):
        path = os.path.join(labels_dir(str(tmp_path)), name)
        cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_GRAYSCALE) * 255)
    report = verify(str(tmp_path), "tiny", 2)
    assert not report.ok
    assert "a 0/255 mask set" in report.errors[0] and "train0.png" in report.errors[0]
    assert "label // 255" in report.errors[0]


def test_single_zero_255_file_in_a_clean_set_is_named(tmp_path):
    write_dataset(str(tmp_path), n_train=3, n_test=0, splits=("train",))
    path = os.path.join(labels_dir(str(tmp_path)), "train1.png")
    cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_GRAYSCALE) * 255)
    report = verify(str(tmp_path), "tiny", 2)
    assert any("train1.png: holds only 0 and 255" in w for w in report.warnings)


def test_missing_label_names_the_image(tmp_path):
    write_dataset(str(tmp_path), n_train=3, n_test=0, splits=("train",))
    os.remove(os.path.join(labels_dir(str(tmp_path)), "train2.png"))
    report = verify(str(tmp_path), "tiny", 2)
    assert any(e.startswith(os.path.join(images_dir(str(tmp_path)), "train2.png") + ": no label")
               for e in report.errors), report.errors


def test_size_mismatch_names_both_files(tmp_path):
    write_dataset(str(tmp_path), n_train=3, n_test=0, splits=("train",))
    cv2.imwrite(os.path.join(labels_dir(str(tmp_path)), "train1.png"), np.zeros((40, 40), np.uint8))
    report = verify(str(tmp_path), "tiny", 2)
    # utils.image.size_mismatch's wording: both files by their full path.
    assert os.path.join(labels_dir(str(tmp_path)), "train1.png") + ": label size 40x40 differs from image " \
        + os.path.join(images_dir(str(tmp_path)), "train1.png") + " size 48x40" in report.errors, report.errors


def test_out_of_range_values_and_jpeg_labels(tmp_path):
    write_dataset(str(tmp_path), n_train=3, n_test=0, splits=("train",))
    cv2.imwrite(os.path.join(labels_dir(str(tmp_path)), "train0.png"), np.full((40, 48), 5, np.uint8))
    os.remove(os.path.join(labels_dir(str(tmp_path)), "train1.png"))
    cv2.imwrite(os.path.join(labels_dir(str(tmp_path)), "train1.jpg"), np.zeros((40, 48), np.uint8))
    for cheap in (False, True):  # 3 labels: a cheap check's sample decodes them all
        report = verify(str(tmp_path), "tiny", 2, cheap=cheap)
        # utils.image.check_label_values's wording (the values present, then the bad ones).
        assert any("train0.png: label values {5} include [5] outside 0..1" in e for e in report.errors)
        assert any("train1.jpg: label saved as JPEG" in e for e in report.errors)
        assert not any("train1.png: no label" in e for e in report.errors)  # one message per problem


def test_duplicates_with_different_labels_and_split_leaks(tmp_path):
    write_dataset(str(tmp_path), n_train=3, n_test=2)
    shutil.copy(os.path.join(images_dir(str(tmp_path)), "train0.png"), os.path.join(images_dir(str(tmp_path)),
                                                                                  "train9.png"))
    label = cv2.imread(os.path.join(labels_dir(str(tmp_path)), "train0.png"), cv2.IMREAD_GRAYSCALE)
    label[:2, :3] = 1 - label[:2, :3]
    cv2.imwrite(os.path.join(labels_dir(str(tmp_path)), "train9.png"), label)
    shutil.copy(os.path.join(images_dir(str(tmp_path)), "train1.png"), os.path.join(images_dir(str(tmp_path), "test"),
                                                                                  "leak.png"))
    shutil.copy(os.path.join(labels_dir(str(tmp_path)), "train1.png"), os.path.join(labels_dir(str(tmp_path), "test"),
                                                                                  "leak.png"))
    report = verify(str(tmp_path), "tiny", 2, cheap=False)
    assert report.ok
    assert any("train9.png and" in w and "train0.png are identical images whose labels differ in 6 pixels" in w
               for w in report.warnings), report.warnings
    assert any("leak.png and" in w and "a leak between splits" in w for w in report.warnings)
    cheap = verify(str(tmp_path), "tiny", 2, cheap=True)  # hashes nothing: duplicates are the full check's
    assert cheap.ok and not any("identical" in w for w in cheap.warnings), cheap.warnings


def test_grey_stored_as_colour_found_by_the_full_check_only(tmp_path):
    write_dataset(str(tmp_path), n_train=2, n_test=0, splits=("train",))
    grey = np.full((40, 48), 77, np.uint8)
    Image.fromarray(grey).save(os.path.join(images_dir(str(tmp_path)), "train0.png"))  # mode L
    # train1 stays a 3-channel PNG with unequal channels: a real colour image.
    cheap = verify(str(tmp_path), "tiny", 2, cheap=True)
    assert cheap.splits["train"].image_modes == {"grayscale": 1, "colour": 1}
    assert any("a mix of grayscale and colour" in w for w in cheap.warnings)
    Image.fromarray(np.repeat(grey[..., None], 3, 2)).save(os.path.join(images_dir(str(tmp_path)), "train1.png"))
    assert verify(str(tmp_path), "tiny", 2, cheap=True).splits["train"].image_modes == {"grayscale": 1, "colour": 1}
    assert verify(str(tmp_path), "tiny", 2, cheap=False).splits["train"].image_modes == {"grayscale": 2}


def test_exif_rotation_and_undecodable_files(tmp_path):
    write_dataset(str(tmp_path), n_train=2, n_test=0, splits=("train",))
    image = Image.fromarray(np.zeros((40, 48, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    os.remove(os.path.join(images_dir(str(tmp_path)), "train0.png"))
    image.save(os.path.join(images_dir(str(tmp_path)), "train0.jpg"), exif=exif)
    with open(os.path.join(images_dir(str(tmp_path)), "train1.png"), "wb") as handle:
        handle.write(b"not an image")
    report = verify(str(tmp_path), "tiny", 2)
    assert any("train0.jpg: EXIF orientation 6" in e for e in report.errors)
    assert any("train1.png: cannot be read as an image" in e for e in report.errors)


def test_missing_data_set_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data set folder not found"):
        verify(str(tmp_path), "nope", 2)


def test_cli_exit_codes(tmp_path):
    write_dataset(str(tmp_path), n_train=2, n_test=0, splits=("train",))
    script = os.path.join(ROOT, "tools", "verify_dataset.py")
    base = [sys.executable, script, "--data_root", str(tmp_path), "--dataset_name", "tiny", "--n_classes", "2"]
    ok = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "0 error(s)" in ok.stdout
    os.remove(os.path.join(labels_dir(str(tmp_path)), "train1.png"))
    bad = subprocess.run(base + ["--cheap"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "train1.png: no label" in bad.stdout
    missing = subprocess.run(base[:5] + ["nope"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_bbufdataset_known_duplicate_is_reported():
    root = shared_dataset("bbufdataset")
    report = verify(os.path.dirname(root), "bbufdataset", 2, cheap=False)
    assert report.ok
    assert report.splits["train"].n_pairs == 96 and report.splits["test"].n_pairs == 9
    # The data set's README: train 000016 and 000024 are identical, their labels differ in 4,734 pixels.
    assert any("000024.jpg and" in w and "000016.jpg are identical images whose labels differ in 4734 pixels" in w
               for w in report.warnings), report.warnings
    assert report.class_shares("train")[1] == pytest.approx(0.148, abs=0.001)


# === The cheap check: headers only ===

def test_cheap_check_decodes_no_image_and_only_a_sample_of_labels(tmp_path, monkeypatch):
    write_dataset(str(tmp_path), n_train=20, n_test=0, splits=("train",))
    cv2.imwrite(os.path.join(labels_dir(str(tmp_path)), "train7.png"), np.zeros((30, 48), np.uint8))
    decoded = []
    real_read_label = checks.read_label
    monkeypatch.setattr(checks, "read_label", lambda path: decoded.append(os.path.basename(path))
                        or real_read_label(path))
    monkeypatch.setattr(checks, "read_image", lambda path: pytest.fail(f"cheap check decoded {path}"))
    monkeypatch.setattr(checks.hashlib, "sha1", lambda *a: pytest.fail("cheap check hashed a file"))
    # PIL decodes pixels in ImageFile.load; a PNG's getexif() would call it (the images are PNGs).
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: pytest.fail(f"decoded {self.filename}"))
    monkeypatch.setattr(checks, "CHEAP_LABEL_SAMPLE", 4)
    report = verify(str(tmp_path), "tiny", 2, cheap=True)
    # linspace(0, 19, 4) rounded: indices 0, 6, 13, 19 of the stem-sorted pairs (train0, train1, train10, ...).
    names = [os.path.basename(label) for _, label in report.splits["train"].pairs]
    assert decoded == [names[0], names[6], names[13], names[19]]
    assert "train7.png" not in decoded  # its size comes from its header
    assert any("train7.png: label size 48x30 differs" in e for e in report.errors), report.errors
    assert not report.splits["train"].counted
    assert "class pixel shares not counted (cheap check)" in report.format()


def test_cheap_counts_on_first_access_and_leaves_values_to_the_reader(tmp_path, monkeypatch):
    write_dataset(str(tmp_path), n_train=3, n_test=0, splits=("train",))
    monkeypatch.setattr(checks, "CHEAP_LABEL_SAMPLE", 0)
    report = verify(str(tmp_path), "tiny", 2, cheap=True)
    stats = report.splits["train"]
    assert report.ok and not stats.counted
    counts = stats.class_counts  # write_dataset: one 10x10 class-1 square per 40x48 label
    assert stats.counted and counts[1] == 3 * 100 and counts[0] == 3 * (40 * 48 - 100) and counts[2:].sum() == 0
    cv2.imwrite(os.path.join(labels_dir(str(tmp_path)), "train2.png"), np.full((40, 48), 5, np.uint8))
    report = verify(str(tmp_path), "tiny", 2, cheap=True)
    assert report.ok  # values are not read from headers...
    with pytest.raises(UserError, match=r"train2\.png: label values \{5\} include \[5\]"):
        report.splits["train"].class_counts  # ...but counting reads them, and so does data.load_pair


def test_zero_255_set_found_from_the_sample(tmp_path, monkeypatch):
    write_dataset(str(tmp_path), n_train=5, n_test=0, splits=("train",))
    for name in os.listdir(labels_dir(str(tmp_path))):
        path = os.path.join(labels_dir(str(tmp_path)), name)
        cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_GRAYSCALE) * 255)
    monkeypatch.setattr(checks, "CHEAP_LABEL_SAMPLE", 2)
    report = verify(str(tmp_path), "tiny", 2, cheap=True)
    assert report.errors[0].startswith("train: all 2 sampled labels hold only 0 and 255 (a 0/255 mask set")


def test_repeated_stem_is_an_error_and_the_stem_is_not_paired(tmp_path):
    write_dataset(str(tmp_path), n_train=3, n_test=0, splits=("train",))
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(os.path.join(images_dir(str(tmp_path)), "train1.jpg"))
    report = verify(str(tmp_path), "tiny", 2)
    assert f"{images_dir(str(tmp_path))}: train1.jpg and train1.png share the stem 'train1'; stems must be unique " \
           "(rename or remove one)" in report.errors, report.errors
    assert [os.path.basename(i) for i, _ in report.splits["train"].pairs] == ["train0.png", "train2.png"]
    assert len(report.errors) == 1  # its label is not also "a label without an image"


def test_count_classes_hand_counted_and_bad_values(tmp_path):
    write_dataset(str(tmp_path), n_train=2, n_test=0, splits=("train",))
    pairs = verify(str(tmp_path), "tiny", 2).splits["train"].pairs
    counts = checks.count_classes(pairs, 2, 255)
    assert counts[1] == 2 * 100 and counts[:2].sum() == 2 * 40 * 48
    cv2.imwrite(os.path.join(labels_dir(str(tmp_path)), "train1.png"), np.full((40, 48), 255, np.uint8)
                * (np.arange(48) % 2))
    with pytest.raises(UserError, match=r"train1\.png: .*0/255 mask"):
        checks.count_classes(pairs, 2, ignore_label=254)
