"""Training on crops (--resize_op 3): counts, positions, padding, reproducibility and one decode per image."""
import math
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

import data
from data import Preprocessing, SegmentationDataset
from utils.augment import build_augmenter
from utils.crops import auto_crop_count, crop_positions, parse_crops_per_image
from utils.errors import UserError
from utils.image import LETTERBOX_FILL, normalize

NO_COLOUR = dict(brightness=0, contrast=0, saturation=0, hue=0)


# === Helpers ===

def _positional_pairs(folder, sizes, n_classes=3):
    """PNG pairs whose pixel (y, x) holds B=y, G=x, R=0 and label (y // 8 + x // 8) % n_classes, so a crop
    tells where it came from; sizes: [(h, w)] (each < 256)."""
    os.makedirs(folder, exist_ok=True)
    pairs = []
    for n, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[:h, :w]
        image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
        label = ((yy // 8 + xx // 8) % n_classes).astype(np.uint8)
        paths = os.path.join(folder, f"im{n}.png"), os.path.join(folder, f"lb{n}.png")
        cv2.imwrite(paths[0], image)
        cv2.imwrite(paths[1], label)
        pairs.append(paths)
    return pairs


def _epoch(dataset):
    batches = [dataset[b] for b in range(len(dataset))]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _origin(crop):
    """(top, left) a crop of a positional image came from (divide: value * 255 gives the byte back)."""
    return int(round(crop[0, 0, 0] * 255)), int(round(crop[0, 0, 1] * 255))


# === Counts and the flag ===

@pytest.mark.parametrize("height, width, crop_h, crop_w, expected", [
    (64, 64, 32, 32, 4), (100, 70, 32, 32, 6), (20, 20, 32, 32, 1), (31, 64, 32, 32, 1),
    (64, 95, 32, 32, 4), (33, 100, 32, 48, 2), (2336, 3504, 512, 512, 24)])
def test_auto_count_is_the_non_overlapping_windows_at_least_one(height, width, crop_h, crop_w, expected):
    assert auto_crop_count(height, width, crop_h, crop_w) == expected


@pytest.mark.parametrize("value", [0, -1, "0", "abc", "", 1.5, True, None])
def test_bad_crops_per_image_is_a_user_error_naming_the_flag(value):
    with pytest.raises(UserError, match="--crops_per_image"):
        parse_crops_per_image(value)


def test_crops_per_image_accepts_auto_and_whole_numbers(tmp_path):
    assert [parse_crops_per_image(v) for v in ("auto", " AUTO ", "3", 3, np.int64(2))] == ["auto", "auto", 3, 3, 2]
    pairs = _positional_pairs(str(tmp_path), [(40, 40)])
    with pytest.raises(UserError, match="--crops_per_image"):
        SegmentationDataset(pairs, 2, Preprocessing(32, 32, resize_op=3), 3, crops_per_image=0, workers=1)


def test_resize_op_3_only_normalises_and_other_ops_are_refused():
    prep = Preprocessing(8, 8, "sub_and_divide", resize_op=3)
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    np.testing.assert_array_equal(prep.image(image), normalize(image, "sub_and_divide"))
    label = np.zeros((20, 30), np.uint8)
    assert prep.label(label) is label
    with pytest.raises(UserError, match="--resize_op"):
        Preprocessing(8, 8, resize_op=4)


# === Positions, coverage and padding ===

def test_an_epoch_of_auto_crops_tiles_the_image_and_every_crop_is_its_window(tmp_path):
    sizes = [(96, 128), (100, 140)]
    pairs = _positional_pairs(str(tmp_path), sizes)
    dataset = SegmentationDataset(pairs, 5, Preprocessing(32, 32, resize_op=3), 3, seed=1, workers=1)
    assert list(dataset.counts) == [12, 12] and len(dataset) == math.ceil(24 / 5)
    images, labels = _epoch(dataset)
    assert images.shape == (24, 32, 32, 3) and labels.dtype == np.int32
    # Each image's crops are consecutive: the first 12 come from one image, the last 12 from the other.
    for n, part in enumerate((slice(0, 12), slice(12, 24))):
        h, w = sizes[int(dataset._order[n])]
        origins = [_origin(c) for c in images[part]]
        covered = np.zeros((h, w), bool)
        for crop, label, (top, left) in zip(images[part], labels[part], origins):
            assert top + 32 <= h and left + 32 <= w
            yy, xx = np.mgrid[top:top + 32, left:left + 32]
            np.testing.assert_array_equal(np.rint(crop[..., 0] * 255), yy)
            np.testing.assert_array_equal(np.rint(crop[..., 1] * 255), xx)
            np.testing.assert_array_equal(label, (yy // 8 + xx // 8) % 3)
            covered[top:top + 32, left:left + 32] = True
        # No two crops of a round overlap, and the round covers the grid's share of the image.
        assert covered.sum() == 12 * 32 * 32 >= 0.87 * h * w


def test_an_image_smaller_than_the_crop_is_padded_grey_and_ignored(tmp_path):
    pairs = _positional_pairs(str(tmp_path), [(20, 24)], n_classes=2)
    dataset = SegmentationDataset(pairs, 1, Preprocessing(32, 40, resize_op=3, ignore_label=7), 2, workers=1)
    assert len(dataset) == 1
    (image,), (label,) = dataset[0]
    yy, xx = np.mgrid[:20, :24]
    np.testing.assert_array_equal(np.rint(image[:20, :24, 0] * 255), yy)
    np.testing.assert_array_equal(label[:20, :24], (yy // 8 + xx // 8) % 2)
    assert np.all(image[20:] == np.float32(LETTERBOX_FILL / 255)) and np.all(image[:, 24:] == np.float32(128 / 255))
    assert np.all(label[20:] == 7) and np.all(label[:, 24:] == 7)
    assert set(np.unique(label)) == {0, 1, 7}


def test_more_crops_than_a_round_start_a_new_round_and_fewer_take_distinct_cells():
    rng = np.random.default_rng(0)
    many = crop_positions(rng, 64, 64, 32, 32, 10)
    assert len(many) == 10 and len(set(many[:4])) == 4
    assert all(0 <= t <= 32 and 0 <= l <= 32 for t, l in many)
    few = crop_positions(rng, 64, 96, 32, 32, 3)
    assert len(set(few)) == 3
    assert crop_positions(rng, 10, 10, 32, 32, 2) == [(0, 0), (0, 0)]


# === Reproducibility ===

def test_crops_are_reproducible_from_the_seed_and_a_resumed_run_draws_the_same(tmp_path):
    pairs = _positional_pairs(str(tmp_path), [(70, 90), (64, 64), (40, 100)])
    prep = Preprocessing(32, 32, resize_op=3)

    def make(**kwargs):
        return SegmentationDataset(pairs, 3, prep, 3, workers=1, **kwargs)
    first, second = _epoch(make(seed=5)), _epoch(make(seed=5))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    other = _epoch(make(seed=6))
    assert not np.array_equal(first[0], other[0])
    advanced = make(seed=5)
    for _ in range(3):
        _epoch(advanced)
        advanced.on_epoch_end()
    resumed = make(seed=5, start_epoch=3)
    a, b = _epoch(advanced), _epoch(resumed)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], first[0])  # epoch 3 draws other crops than epoch 0


# === One decode per image per epoch ===

def test_each_image_is_decoded_once_per_epoch_under_threads(tmp_path, monkeypatch):
    pairs = _positional_pairs(str(tmp_path), [(64, 96)] * 5 + [(100, 70)] * 3)  # 6 crops each: batches of 4 split them
    calls = []
    real = data.read_image
    monkeypatch.setattr(data, "read_image", lambda path: calls.append(path) or real(path))
    dataset = SegmentationDataset(pairs, 4, Preprocessing(32, 32, resize_op=3), 3, seed=2, workers=1)
    assert len(dataset) == math.ceil(48 / 4)
    for epoch in range(2):
        calls.clear()
        order = np.random.default_rng(epoch).permutation(len(dataset))  # out of order, as threads finish
        with ThreadPoolExecutor(4) as pool:
            batches = dict(zip(order, pool.map(dataset.__getitem__, order)))
        assert sorted(calls) == sorted(p for p, _ in pairs)
        assert len(dataset._cache) == 0  # every crop served: nothing held
        threaded = np.concatenate([batches[b][0] for b in range(len(dataset))])
        np.testing.assert_array_equal(threaded, _epoch(dataset)[0])  # same crops as served in order
        dataset.on_epoch_end()


# === Augmentation on the full image ===

def test_the_full_image_augmenter_keeps_the_scaled_size_and_ignores_rotated_corners():
    image = np.full((40, 48, 3), 90, np.uint8)
    label = np.ones((40, 48), np.uint8)
    rng = np.random.default_rng(0)
    scaled = build_augmenter(32, 32, 255, scale=(2, 2), rotate=0, flip_lr_p=0, full_image=True, **NO_COLOUR)
    out_image, out_label = scaled(image, label, rng)
    assert out_image.shape == (80, 96, 3) and np.all(out_label == 1) and np.all(out_image == 90)
    rotated = build_augmenter(32, 32, 255, scale=(1, 1), rotate=30, rotate_p=1.0, full_image=True, **NO_COLOUR)
    out_image, out_label = rotated(image, label, rng)
    assert out_label.shape[0] > 40 and out_label.shape[1] > 48  # the rotated box holds the whole image
    assert out_label[0, 0] == 255 and out_label[-1, -1] == 255 and set(np.unique(out_label)) == {1, 255}
    assert abs(int((out_label == 1).sum()) - 40 * 48) < 0.05 * 40 * 48  # no pixel lost, none invented


def test_crops_with_augmentation_come_from_the_augmented_full_image(tmp_path):
    pairs = _positional_pairs(str(tmp_path), [(40, 48)])
    prep = Preprocessing(32, 32, resize_op=3)
    with pytest.raises(UserError, match="full_image"):
        SegmentationDataset(pairs, 2, prep, 3, augmenter=build_augmenter(32, 32, 255), workers=1)
    doubled = build_augmenter(32, 32, 255, scale=(2, 2), rotate=0, flip_lr_p=0, full_image=True, **NO_COLOUR)
    dataset = SegmentationDataset(pairs, 2, prep, 3, augmenter=doubled, workers=1)
    assert list(dataset.counts) == [1]  # counted on the file's own size, whatever the scale
    (image,), (label,) = dataset[0]
    # At scale 2 each source pixel becomes about 2x2: a 32-pixel crop spans about 16 source rows and columns.
    assert 14 <= np.ptp(np.rint(image[..., 0] * 255)) <= 17 and 14 <= np.ptp(np.rint(image[..., 1] * 255)) <= 17
    assert set(np.unique(label)) <= {0, 1, 2}


def test_built_ahead_by_the_data_sets_own_threads_each_image_is_still_decoded_once(tmp_path, monkeypatch):
    pairs = _positional_pairs(str(tmp_path), [(64, 96)] * 4 + [(40, 40)] * 2)
    calls = []
    real = data.read_image
    monkeypatch.setattr(data, "read_image", lambda path: calls.append(path) or real(path))
    threaded = SegmentationDataset(pairs, 4, Preprocessing(32, 32, resize_op=3), 3, seed=7, workers=3)
    batches = _epoch(threaded)
    assert sorted(calls) == sorted(p for p, _ in pairs)
    calls.clear()
    single = _epoch(SegmentationDataset(pairs, 4, Preprocessing(32, 32, resize_op=3), 3, seed=7, workers=1))
    np.testing.assert_array_equal(batches[0], single[0])
    np.testing.assert_array_equal(batches[1], single[1])


def test_the_crop_cache_is_bounded_and_an_evicted_image_is_loaded_again():
    from utils.crops import CropCache
    loads = []
    cache = CropCache(max_entries=2)

    def loader(key):
        return lambda: loads.append(key) or [f"{key}-{k}" for k in range(2)]
    for key in ("a", "b", "c"):  # crop 0 of three images: "a" is evicted when "c" comes
        assert cache.get(key, 0, 2, loader(key)) == f"{key}-0"
    assert len(cache) == 2
    assert cache.get("a", 1, 2, loader("a")) == "a-1" and cache.get("c", 1, 2, loader("c")) == "c-1"
    # "a" came back by evicting "b"; "c", all its crops served, left: only "a" (one crop of two served) stays.
    assert loads == ["a", "b", "c", "a"] and len(cache) == 1
