"""utils/image.py: reading labels, resizing without inventing class ids, normalisation constants."""
import numpy as np
import pytest
from PIL import Image

from utils.errors import UserError
from utils.image import (check_label_values, check_same_size, fit_label, letterbox_geometry, letterbox_label,
                         normalize, read_image, read_label, resize_label, restore_probabilities, size_mismatch,
                         voc_palette, write_png)


# === Normalisation ===

def test_normalize_constants():
    pixel = np.array([[[0, 128, 255]]], dtype=np.uint8)  # B=0, G=128, R=255
    np.testing.assert_allclose(normalize(pixel, "divide"), [[[0.0, 128 / 255, 1.0]]], rtol=1e-6)
    np.testing.assert_allclose(normalize(pixel, "sub_and_divide"), [[[-1.0, 128 / 127.5 - 1, 1.0]]], atol=1e-6)
    np.testing.assert_allclose(normalize(pixel, "sub_mean"),
                               [[[0 - 103.939, 128 - 116.779, 255 - 123.68]]], rtol=1e-6)
    assert normalize(pixel, "divide").dtype == np.float32
    with pytest.raises(UserError, match="image_init"):
        normalize(pixel, "zscore")


# === Label integrity under resizing ===

@pytest.mark.parametrize("size", [(17, 23), (64, 64), (100, 37)])
def test_resized_labels_keep_only_original_values(size):
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 3, 7], dtype=np.uint8), size=(41, 53))
    for out in (resize_label(label, *size), fit_label(label, *size, resize_op=2, ignore_label=255)):
        assert set(np.unique(out)) <= {0, 3, 7, 255}
    assert set(np.unique(resize_label(label, *size))) <= {0, 3, 7}


def test_letterbox_pads_labels_with_ignore_label():
    label = np.ones((20, 40), np.uint8)
    boxed = letterbox_label(label, 40, 40, ignore_label=255)
    top, left, new_h, new_w = letterbox_geometry(20, 40, 40, 40)
    assert (top, left, new_h, new_w) == (10, 0, 20, 40)
    assert np.all(boxed[:10] == 255) and np.all(boxed[30:] == 255)
    assert np.all(boxed[10:30] == 1)


def test_restore_probabilities_undoes_letterbox():
    # A 20x40 image letterboxed into 40x40: the network sees rows 10..29.
    probs = np.zeros((40, 40, 2), np.float32)
    probs[..., 0] = 1.0
    probs[10:30, :20, :] = (0.0, 1.0)  # the left half of the real image is class 1
    mask = restore_probabilities(probs, 20, 40, resize_op=2).argmax(-1)
    assert mask.shape == (20, 40)
    assert np.all(mask[:, :20] == 1) and np.all(mask[:, 20:] == 0)


def test_restore_probabilities_single_channel_and_plain_resize():
    probs = np.random.default_rng(0).random((8, 8, 1)).astype(np.float32)
    assert restore_probabilities(probs, 16, 12, resize_op=1).shape == (16, 12, 1)


# === Reading labels ===

def test_read_label_palette_png_gives_indices(tmp_path):
    label = np.array([[0, 1], [2, 255]], np.uint8)
    path = str(tmp_path / "p.png")
    write_png(path, label, voc_palette())
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_label(path), label)


def test_read_label_equal_rgb_accepted_colour_rejected(tmp_path):
    grey = np.array([[0, 1], [1, 0]], np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_label(str(tmp_path / "grey.png")), grey)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (128, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(UserError, match="colour.png: colour-coded label"):
        read_label(str(tmp_path / "colour.png"))


def test_read_image_expands_grayscale_and_rejects_garbage(tmp_path):
    Image.fromarray(np.full((3, 4), 9, np.uint8)).save(tmp_path / "g.png")
    image = read_image(str(tmp_path / "g.png"))
    assert image.shape == (3, 4, 3) and np.all(image == 9)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.jpg: cannot be decoded"):
        read_image(str(tmp_path / "bad.jpg"))


def test_check_label_values_names_file_and_hints_0_255():
    counts = check_label_values(np.array([[0, 1, 255]], np.uint8), "a.png", 2, 255)
    assert counts[0] == 1 and counts[1] == 1 and counts[255] == 1
    with pytest.raises(UserError, match=r"m\.png: label values \{0, 255\}.*0/255 mask"):
        check_label_values(np.array([[0, 255]], np.uint8), "m.png", 2, ignore_label=254)
    with pytest.raises(UserError, match=r"x\.png: .*include \[5\] outside 0\.\.2"):
        check_label_values(np.array([[0, 5]], np.uint8), "x.png", 3, 255)


def test_voc_palette_first_colours():
    palette = voc_palette()
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[15].tolist() == [192, 128, 128]


# shape, reference shape, what, ref_what -> message (None: same size); messages give width x height
SIZES = [
    ((40, 48), (40, 48, 3), "label", "image", None),  # channels are not a size
    ((40, 40), (40, 48, 3), "label", "image", "L.png: label size 40x40 differs from image I.jpg size 48x40"),
    ((48, 40), (40, 48), "label", "image", "L.png: label size 40x48 differs from image I.jpg size 48x40"),  # transposed
    ((17, 22), (17, 23), "prediction", "label", "L.png: prediction size 22x17 differs from label I.jpg size 23x17"),
    ((10, 10), (48, 64), "mask", "image", "L.png: mask size 10x10 differs from image I.jpg size 64x48"),
]


@pytest.mark.parametrize("shape, ref_shape, what, ref_what, message", SIZES)
def test_size_mismatch_wording(shape, ref_shape, what, ref_what, message):
    assert size_mismatch(shape, "L.png", ref_shape, "I.jpg", what, ref_what) == message
    if message is None:
        check_same_size(shape, "L.png", ref_shape, "I.jpg", what, ref_what)
    else:
        with pytest.raises(UserError) as err:
            check_same_size(shape, "L.png", ref_shape, "I.jpg", what, ref_what)
        assert str(err.value) == message
