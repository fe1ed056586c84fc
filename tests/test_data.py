"""data.py: pairing by stem, data checks, and the batch generator's order and contents."""
import os

import cv2
import numpy as np
import pytest

from conftest import shared_dataset, write_dataset
from data import (Preprocessing, SegmentationDataset, find_split, load_pair, pair_files,
                  read_class_names, split_dirs)
from utils.dataset_checks import count_classes
from utils.errors import UserError


def test_pairs_by_stem_not_position(tmp_path):
    base = write_dataset(str(tmp_path), n_train=3)
    image_dir, label_dir = split_dirs(str(tmp_path), "tiny", "train")
    # A JPEG image whose stem sorts differently from its label still pairs with its own label.
    os.rename(os.path.join(image_dir, "train0.png"), os.path.join(image_dir, "train0.jpg"))
    pairs = pair_files(image_dir, label_dir)
    assert [(os.path.basename(i), os.path.basename(l)) for i, l in pairs] == [
        ("train0.jpg", "train0.png"), ("train1.png", "train1.png"), ("train2.png", "train2.png")]
    assert base.endswith("tiny")


def test_unpaired_files_are_listed(tmp_path):
    write_dataset(str(tmp_path), n_train=3)
    image_dir, label_dir = split_dirs(str(tmp_path), "tiny", "train")
    os.remove(os.path.join(label_dir, "train1.png"))
    cv2.imwrite(os.path.join(label_dir, "orphan.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError) as err:
        pair_files(image_dir, label_dir)
    assert "images without a label" in str(err.value) and "train1" in str(err.value)
    assert "labels without an image" in str(err.value) and "orphan" in str(err.value)


def test_duplicate_stem_is_an_error(tmp_path):
    write_dataset(str(tmp_path), n_train=2)
    image_dir, label_dir = split_dirs(str(tmp_path), "tiny", "train")
    cv2.imwrite(os.path.join(image_dir, "train0.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="share the stem 'train0'"):
        pair_files(image_dir, label_dir)


def test_missing_split_is_none_and_empty_folder_is_error(tmp_path):
    write_dataset(str(tmp_path))
    assert find_split(str(tmp_path), "tiny", "val") is None
    os.makedirs(tmp_path / "empty" / "train_image")
    os.makedirs(tmp_path / "empty" / "train_label")
    with pytest.raises(UserError, match="no images"):
        find_split(str(tmp_path), "empty", "train")


def test_load_pair_checks_size_and_values_and_the_generator_keeps_the_error(tmp_path):
    write_dataset(str(tmp_path), n_train=2)
    image_dir, label_dir = split_dirs(str(tmp_path), "tiny", "train")
    pairs = pair_files(image_dir, label_dir)
    cv2.imwrite(os.path.join(label_dir, "train1.png"), np.zeros((10, 48), np.uint8))
    with pytest.raises(UserError) as err:
        load_pair(*pairs[1], Preprocessing(16, 16), 2)
    assert str(err.value) == (f"{os.path.join(label_dir, 'train1.png')}: label size 48x10 differs from image "
                              f"{os.path.join(image_dir, 'train1.png')} size 48x40")
    cv2.imwrite(os.path.join(label_dir, "train1.png"), np.full((40, 48), 3, np.uint8))
    data = SegmentationDataset(pairs, 1, Preprocessing(16, 16), 2, shuffle=False, workers=1)
    data[0]
    assert data.user_error is None
    with pytest.raises(UserError, match=r"train1\.png: label values \{3\} include \[3\]"):
        data[1]
    assert "train1.png: label values {3}" in str(data.user_error)  # what train.py prints when tf.data wraps it


def test_load_pair_resizes_and_normalises(tmp_path):
    write_dataset(str(tmp_path), n_train=1)
    pairs = find_split(str(tmp_path), "tiny", "train")
    prep = Preprocessing(32, 32, "sub_and_divide", resize_op=2, ignore_label=255)
    image, label = load_pair(*pairs[0], prep, n_classes=2)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert -1.0 <= image.min() and image.max() <= 1.0
    assert label.shape == (32, 32) and label.dtype == np.int32
    assert set(np.unique(label)) <= {0, 1, 255} and 255 in label  # 40x48 letterboxed: padded rows


def test_generator_reshuffles_each_epoch_reproducibly(tmp_path):
    write_dataset(str(tmp_path), n_train=10)
    pairs = find_split(str(tmp_path), "tiny", "train")
    prep = Preprocessing(16, 16)
    first = SegmentationDataset(pairs, 4, prep, 2, seed=3, workers=1)
    second = SegmentationDataset(pairs, 4, prep, 2, seed=3, workers=1)
    assert len(first) == 3
    orders = []
    for epoch in range(3):
        assert np.array_equal(first._order, second._order)
        assert sorted(first._order) == list(range(10))  # every sample once per epoch
        orders.append(first._order.copy())
        x_a, y_a = first[0]
        x_b, y_b = second[0]
        np.testing.assert_array_equal(x_a, x_b)
        np.testing.assert_array_equal(y_a, y_b)
        first.on_epoch_end()
        second.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1])
    other_seed = SegmentationDataset(pairs, 4, prep, 2, seed=4, workers=1)
    assert not np.array_equal(other_seed._order, orders[0])
    resumed = SegmentationDataset(pairs, 4, prep, 2, seed=3, workers=1, start_epoch=2)
    assert np.array_equal(resumed._order, orders[2])


def test_generator_batches_cover_dataset_with_partial_last_batch(tmp_path):
    write_dataset(str(tmp_path), n_train=5)
    pairs = find_split(str(tmp_path), "tiny", "train")
    data = SegmentationDataset(pairs, 2, Preprocessing(16, 24), 2, shuffle=False, workers=1)
    shapes = [data[i][0].shape for i in range(len(data))]
    assert shapes == [(2, 16, 24, 3), (2, 16, 24, 3), (1, 16, 24, 3)]
    assert data[0][1].dtype == np.int32


def test_class_names_from_classes_txt(tmp_path):
    write_dataset(str(tmp_path))
    assert read_class_names(str(tmp_path), "tiny", 2) == ["class_0", "class_1"]
    (tmp_path / "tiny" / "classes.txt").write_text("background\npart\n")
    assert read_class_names(str(tmp_path), "tiny", 3) == ["background", "part", "class_2"]
    # utils.dataset_files.read_class_names's rule: more names than classes is an error (it was truncated).
    with pytest.raises(UserError, match=r"classes\.txt: 2 names for 1 classes \(--n_classes\)"):
        read_class_names(str(tmp_path), "tiny", 1)


def test_real_bbufdataset_pairs_and_values():
    root = os.path.dirname(shared_dataset("bbufdataset"))
    pairs = find_split(root, "bbufdataset", "train")
    assert len(pairs) == 96
    counts = count_classes(pairs[:8], 2, 255)
    assert counts[0] > 0 and counts[1] > 0 and counts[2:].sum() == 0


def test_a_bad_label_in_a_batch_built_ahead_is_raised_and_kept(tmp_path):
    write_dataset(str(tmp_path), n_train=4)
    image_dir, label_dir = split_dirs(str(tmp_path), "tiny", "train")
    pairs = pair_files(image_dir, label_dir)
    cv2.imwrite(os.path.join(label_dir, "train2.png"), np.full((40, 48), 5, np.uint8))
    data = SegmentationDataset(pairs, 1, Preprocessing(16, 16), 2, shuffle=False, workers=3)
    data[0]  # builds batches 1..3 ahead, in the data set's threads
    data[1]
    with pytest.raises(UserError, match=r"train2\.png: label values \{5\}"):
        data[2]
    assert "train2.png: label values {5}" in str(data.user_error)


def test_a_jpeg_decoded_at_reduced_scale_is_still_size_checked_against_its_file(tmp_path):
    write_dataset(str(tmp_path), n_train=1, size=(64, 80))
    image_dir, label_dir = split_dirs(str(tmp_path), "tiny", "train")
    image = cv2.imread(os.path.join(image_dir, "train0.png"))
    os.remove(os.path.join(image_dir, "train0.png"))
    cv2.imwrite(os.path.join(image_dir, "train0.jpg"), image[:, :79])  # 1/2 scale: 40 columns, as 80 gives
    pairs = pair_files(image_dir, label_dir)
    data = SegmentationDataset(pairs, 1, Preprocessing(16, 16), 2, workers=1)
    with pytest.raises(UserError, match=r"label size 80x64 differs from image .*train0\.jpg size 79x64"):
        data[0]
