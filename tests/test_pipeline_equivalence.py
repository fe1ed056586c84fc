"""The fast input pipeline gives the batches of the old one (commit 8212845's data.py), reimplemented here.

The reference is the plain path: `cv2.imread` + `cv2.resize` (bilinear; nearest for labels) or a
letterbox, then `astype(float32)` and the normalisation, `np.stack`, in the `(seed, epoch)`
permutation. PNG (and any non-JPEG) batches must match it to float rounding and labels exactly.
JPEGs are decoded at 1/2, 1/4 or 1/8 scale when the input size allows (libjpeg's DCT scaling
averages blocks of pixels); that image then differs from the reference's bilinear sampling of
the full image, which aliases on a large shrink: the difference is bounded below and the reduced
decode is shown to be the closer of the two to an anti-aliased (INTER_AREA) resize. Labels stay
identical in every case (they are PNGs, decoded in full and resized nearest).
"""
import os

import cv2
import numpy as np
import pytest

from conftest import shared_dataset, write_dataset
from data import Preprocessing, SegmentationDataset, load_pair, pair_files, split_dirs
from utils.augment import build_augmenter

MEANS = np.array([103.939, 116.779, 123.68], np.float32)


# === The reference (old) pipeline ===

def _ref_fit(array, height, width, resize_op, fill, interpolation):
    if resize_op == 1:
        return cv2.resize(array, (width, height), interpolation=interpolation)
    src_h, src_w = array.shape[:2]
    scale = min(height / src_h, width / src_w)
    new_h, new_w = max(1, min(height, int(round(src_h * scale)))), max(1, min(width, int(round(src_w * scale))))
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas = np.full((height, width) + array.shape[2:], fill, array.dtype)
    canvas[top:top + new_h, left:left + new_w] = cv2.resize(array, (new_w, new_h), interpolation=interpolation)
    return canvas


def _ref_image(image, height, width, resize_op, image_init, channel_order):
    x = _ref_fit(image, height, width, resize_op, 128, cv2.INTER_LINEAR).astype(np.float32)
    if image_init == "divide":
        x = x / 255.0
    elif image_init == "sub_and_divide":
        x = x / 127.5 - 1.0
    else:
        x = x - MEANS
    return x[..., ::-1] if channel_order == "rgb" else x


def _ref_batches(pairs, batch_size, height, width, resize_op=1, image_init="divide", channel_order="bgr", seed=0,
                 epoch=0, ignore_label=255):
    order = np.random.default_rng([seed, epoch]).permutation(len(pairs))
    for start in range(0, len(pairs), batch_size):
        images, labels = [], []
        for i in order[start:start + batch_size]:
            image_path, label_path = pairs[i]
            images.append(_ref_image(cv2.imread(image_path, cv2.IMREAD_COLOR), height, width, resize_op, image_init,
                                     channel_order))
            label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
            labels.append(_ref_fit(label, height, width, resize_op, ignore_label, cv2.INTER_NEAREST).astype(np.int32))
        yield np.stack(images), np.stack(labels)


def _batches(dataset):
    return [dataset[b] for b in range(len(dataset))]


def _as_jpeg(pairs, folder, quality=92):
    """Copies of the pairs' images as JPEGs (labels unchanged)."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for image_path, label_path in pairs:
        path = os.path.join(folder, os.path.splitext(os.path.basename(image_path))[0] + ".jpg")
        cv2.imwrite(path, cv2.imread(image_path), [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append((path, label_path))
    return out


# === Lossless images: equal to float rounding ===

@pytest.mark.parametrize("resize_op, image_init, channel_order, threads", [
    (1, "divide", "bgr", 1), (2, "sub_and_divide", "rgb", 2), (1, "sub_mean", "rgb", 3), (2, "sub_mean", "bgr", 1)])
def test_png_batches_equal_the_old_pipeline(tmp_path, resize_op, image_init, channel_order, threads):
    write_dataset(str(tmp_path), n_train=7, size=(50, 70), n_classes=3)
    pairs = pair_files(*split_dirs(str(tmp_path), "tiny", "train"))
    prep = Preprocessing(32, 40, image_init, resize_op, 255, channel_order)
    dataset = SegmentationDataset(pairs, 3, prep, 3, seed=4, workers=threads, start_epoch=1)
    for epoch in (1, 2):
        new = _batches(dataset)
        ref = list(_ref_batches(pairs, 3, 32, 40, resize_op, image_init, channel_order, seed=4, epoch=epoch))
        assert len(new) == len(ref) == 3
        for (x, y), (rx, ry) in zip(new, ref):
            assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == rx.shape
            np.testing.assert_allclose(x, rx, rtol=0, atol=1e-5)
            np.testing.assert_array_equal(y, ry)
        dataset.on_epoch_end()


def test_augmented_batches_equal_load_pair_with_the_per_sample_rng(tmp_path):
    write_dataset(str(tmp_path), n_train=5, size=(40, 48))
    pairs = pair_files(*split_dirs(str(tmp_path), "tiny", "train"))
    prep = Preprocessing(32, 32)
    augment = build_augmenter(32, 32, 255, rotate_p=1.0)
    dataset = SegmentationDataset(pairs, 5, prep, 2, seed=9, augmenter=augment, workers=2, start_epoch=3)
    (x, y), = _batches(dataset)
    order = np.random.default_rng([9, 3]).permutation(5)
    for j, i in enumerate(order):
        image, label = load_pair(*pairs[i], prep, 2, augment, np.random.default_rng([9, 3, int(i)]))
        np.testing.assert_array_equal(x[j], image)
        np.testing.assert_array_equal(y[j], label)


def test_batches_built_ahead_by_threads_equal_batches_built_in_order(tmp_path):
    write_dataset(str(tmp_path), n_train=11, size=(40, 48))
    pairs = pair_files(*split_dirs(str(tmp_path), "tiny", "train"))
    one = SegmentationDataset(pairs, 2, Preprocessing(24, 24), 2, seed=1, workers=1)
    three = SegmentationDataset(pairs, 2, Preprocessing(24, 24), 2, seed=1, workers=3)
    for order in (range(len(one)), [3, 0, 5, 1, 2, 4]):  # in order (built ahead), then out of order
        for b in order:
            np.testing.assert_array_equal(one[b][0], three[b][0])
            np.testing.assert_array_equal(one[b][1], three[b][1])
    assert three.workers == 1 and three.threads == 3  # Keras' own enqueuer stays off


# === JPEG: reduced decoding, explained and bounded ===

def _compare_jpeg(pairs, height, width, resize_op):
    """Per-image mean abs differences (grey levels) of the pipeline against the reference and, for
    resize_op 1, of both against INTER_AREA; labels must be identical."""
    prep = Preprocessing(height, width, "divide", resize_op)
    dataset = SegmentationDataset(pairs, len(pairs), prep, 256, shuffle=False, workers=1)
    (x, y), = _batches(dataset)
    to_ref, new_area, ref_area = [], [], []
    for j, (image_path, label_path) in enumerate(pairs):
        full = cv2.imread(image_path, cv2.IMREAD_COLOR)
        ref = _ref_fit(full, height, width, resize_op, 128, cv2.INTER_LINEAR).astype(np.float64)
        new = x[j].astype(np.float64) * 255
        to_ref.append(np.abs(new - ref).mean())
        label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(y[j], _ref_fit(label, height, width, resize_op, 255, cv2.INTER_NEAREST))
        if resize_op == 1:
            area = cv2.resize(full, (width, height), interpolation=cv2.INTER_AREA).astype(np.float64)
            new_area.append(np.abs(new - area).mean())
            ref_area.append(np.abs(ref - area).mean())
        else:  # the letterbox layout is the file's: the padding is exactly the reference's
            pad = _ref_fit(np.ones(full.shape[:2], np.uint8), height, width, 2, 0, cv2.INTER_NEAREST) == 0
            assert pad.any() and np.all(np.rint(new[pad]) == 128)
    return np.array(to_ref), np.array(new_area), np.array(ref_area)


def test_jpeg_decoded_at_full_scale_when_the_input_is_larger_than_half_equals_the_reference(tmp_path):
    write_dataset(str(tmp_path), n_train=4, size=(60, 80))
    pairs = _as_jpeg(pair_files(*split_dirs(str(tmp_path), "tiny", "train")), str(tmp_path / "jpg"))
    to_ref, _, _ = _compare_jpeg(pairs, 32, 41, 1)  # 80 / 2 = 40 < 41: no reduction possible
    assert to_ref.max() < 1e-4


def test_reduced_jpeg_decode_of_a_smooth_image_is_within_a_grey_level(tmp_path):
    folder = tmp_path / "smooth"
    os.makedirs(folder)
    yy, xx = np.mgrid[:256, :320].astype(np.float32)
    pairs = []
    for n in range(3):
        image = np.stack([yy * 0.7 + 20 * n, xx * 0.6, 128 + 60 * np.sin((xx + yy) / 40 + n)], -1)
        cv2.imwrite(str(folder / f"{n}.jpg"), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(folder / f"{n}.png"), ((xx // 32 + yy // 32) % 3).astype(np.uint8))
        pairs.append((str(folder / f"{n}.jpg"), str(folder / f"{n}.png")))
    for resize_op in (1, 2):
        to_ref, _, _ = _compare_jpeg(pairs, 60, 64, resize_op)  # 320 / 4 = 80 >= 64: decoded at 1/4
        assert to_ref.max() < 1.0, to_ref


def test_reduced_jpeg_decode_on_bbufdataset_is_bounded_and_less_aliased():
    base = shared_dataset("bbufdataset")
    pairs = pair_files(os.path.join(base, "train_image"), os.path.join(base, "train_label"))[:24]
    to_ref, new_area, ref_area = _compare_jpeg(pairs, 224, 224, 1)  # 512 -> decoded at 256 -> 224
    # Thin bright parts on black: bilinear sampling of the full image skips pixels (aliasing);
    # measured on all 96 images: 2.6 grey levels mean (4.3 at most), closer to INTER_AREA (1.3 vs 1.8).
    assert to_ref.mean() < 3.5 and to_ref.max() < 6.0, to_ref
    assert new_area.mean() < ref_area.mean()
    to_ref, _, _ = _compare_jpeg(pairs[:8], 200, 160, 2)
    assert to_ref.max() < 6.0


# === Files the reduced decode must leave alone, and prediction's reader ===

def test_a_jpeg_with_exif_orientation_is_decoded_in_full_as_opencv_turns_it(tmp_path):
    from PIL import Image
    from utils.crops import image_size
    from utils.image import read_image_for
    rng = np.random.default_rng(0)
    path = str(tmp_path / "turned.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(rng.integers(0, 256, (64, 96, 3)).astype(np.uint8)).save(path, exif=exif.tobytes())
    full = cv2.imread(path, cv2.IMREAD_COLOR)
    assert full.shape[:2] == (96, 64) == image_size(path)
    image, source_size = read_image_for(path, 16, 16, 1)
    assert source_size == (96, 64)
    np.testing.assert_array_equal(image, full)


def test_prediction_reads_the_pixels_training_sees(tmp_path):
    write_dataset(str(tmp_path), n_train=2, size=(96, 128))
    pairs = _as_jpeg(pair_files(*split_dirs(str(tmp_path), "tiny", "train")), str(tmp_path / "jpg"))
    for resize_op in (1, 2):
        prep = Preprocessing(40, 48, "sub_and_divide", resize_op)
        (x, _), = _batches(SegmentationDataset(pairs, 2, prep, 2, shuffle=False, workers=1))
        for j, (image_path, _) in enumerate(pairs):
            image, size = prep.load_image(image_path)
            assert size == (96, 128)
            np.testing.assert_allclose(image, x[j], rtol=0, atol=1e-6)
