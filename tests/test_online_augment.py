"""utils/augment.py: online augmentation geometry, label integrity, padding, determinism."""
import numpy as np
import pytest

from data import Preprocessing, load_pair
from utils.augment import build_augmenter
from utils.errors import UserError

NO_COLOUR = dict(brightness=0, contrast=0, saturation=0)


def sample(h=40, w=48, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (h, w), dtype=np.uint8)
    return image, label


def blocks(h, w, cell, values, seed=0):
    """A label of `cell`-sized constant blocks and an image whose channels encode it."""
    rng = np.random.default_rng(seed)
    grid = rng.choice(values, size=(h // cell + 1, w // cell + 1)).astype(np.uint8)
    label = np.kron(grid, np.ones((cell, cell), np.uint8))[:h, :w]
    image = np.repeat((label * 30)[..., None], 3, axis=2).astype(np.uint8)
    return image, label


def test_identity_settings_return_the_sample_unchanged():
    image, label = sample()
    augment = build_augmenter(40, 48, 255, scale=(1, 1), rotate=0, flip_lr_p=0, **NO_COLOUR)
    out_image, out_label = augment(image, label, np.random.default_rng(3))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_label, label)


def test_flip_is_an_exact_mirror_of_image_and_label():
    image, label = sample()
    augment = build_augmenter(40, 48, 255, scale=(1, 1), rotate=0, flip_lr_p=1, flip_ud_p=1, **NO_COLOUR)
    out_image, out_label = augment(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image[::-1, ::-1])
    np.testing.assert_array_equal(out_label, label[::-1, ::-1])


def test_half_scale_pads_exactly_three_quarters_with_ignore():
    image, label = blocks(40, 48, 2, [0, 1, 2])  # 2x2 blocks: the half-size label is unambiguous
    augment = build_augmenter(40, 48, 200, scale=(0.5, 0.5), rotate=0, flip_lr_p=0, **NO_COLOUR)
    _, out = augment(image, label, np.random.default_rng(1))
    # A 20x24 sample inside a 40x48 window: 40*48 - 20*24 padded pixels.
    assert np.count_nonzero(out == 200) == 40 * 48 - 20 * 24
    ys, xs = np.nonzero(out != 200)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (20, 24)
    kept = out[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    np.testing.assert_array_equal(kept, label[::2, ::2])


def test_stretch_to_input_size_matches_nearest_resize():
    # A 80x96 sample fitted to 40x48 at scale 1: the label equals the 2x nearest downsample.
    image, label = blocks(80, 96, 2, [0, 1, 2])
    augment = build_augmenter(40, 48, 255, scale=(1, 1), rotate=0, flip_lr_p=0, **NO_COLOUR)
    out_image, out_label = augment(image, label, np.random.default_rng(0))
    assert out_image.shape == (40, 48, 3) and out_label.shape == (40, 48)
    np.testing.assert_array_equal(out_label, label[::2, ::2])
    np.testing.assert_array_equal(out_image[..., 0], label[::2, ::2] * 30)


def test_labels_keep_only_input_values_and_stay_aligned_with_the_image():
    import cv2
    image, label = blocks(96, 120, 12, [0, 3, 7])
    augment = build_augmenter(48, 64, 255, rotate=30, rotate_p=1.0, **NO_COLOUR)
    checked = 0
    for seed in range(20):
        out_image, out_label = augment(image, label, np.random.default_rng(seed))
        assert set(np.unique(out_label).tolist()) <= {0, 3, 7, 255}
        # Away from block edges (label constant in a 5x5 neighbourhood) the image's
        # value must be the label's: image and label underwent the same geometry.
        lo = cv2.erode(out_label, np.ones((5, 5), np.uint8))
        # Outside the window counts as ignore: there the image blends with the padding fill.
        hi = cv2.dilate(out_label, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=255)
        interior = (lo == hi) & (out_label != 255)
        checked += interior.sum()
        np.testing.assert_allclose(out_image[..., 0][interior], out_label[interior] * 30.0, atol=2)
    assert checked > 5000  # not vacuous


def test_rotation_corners_become_ignore_never_background():
    image, label = blocks(40, 40, 40, [5])  # one class everywhere
    augment = build_augmenter(40, 40, 255, scale=(1, 1), rotate=45, rotate_p=1.0, flip_lr_p=0, **NO_COLOUR)
    _, out = augment(image, label, np.random.default_rng(0))
    assert set(np.unique(out).tolist()) == {5, 255}
    assert out[0, 0] == 255 and out[20, 20] == 5


def test_same_rng_seed_same_output_and_different_seed_differs():
    image, label = sample(60, 70)
    augment = build_augmenter(32, 32, 255, hue=10)
    a = augment(image, label, np.random.default_rng(7))
    b = augment(image, label, np.random.default_rng(7))
    c = augment(image, label, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_colour_jitter_changes_the_image_only_and_keeps_grey_grey():
    grey = np.repeat(np.random.default_rng(0).integers(30, 200, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    label = np.ones((32, 32), np.uint8)
    augment = build_augmenter(32, 32, 255, scale=(1, 1), rotate=0, flip_lr_p=0, brightness=0.5,
                              contrast=0.5, saturation=0.5, hue=0)
    changed = 0
    for seed in range(5):
        out_image, out_label = augment(grey, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_label, label)
        assert np.array_equal(out_image[..., 0], out_image[..., 1]) and np.array_equal(out_image[..., 1],
                                                                                        out_image[..., 2])
        changed += not np.array_equal(out_image, grey)
    assert changed == 5


def test_keep_aspect_scales_both_sides_equally():
    image, label = blocks(20, 80, 4, [1])
    augment = build_augmenter(40, 40, 255, scale=(1, 1), rotate=0, flip_lr_p=0, keep_aspect=True, **NO_COLOUR)
    _, out = augment(image, label, np.random.default_rng(0))
    ys, xs = np.nonzero(out == 1)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (10, 40)


def test_load_pair_uses_the_augmenter_before_resizing(tmp_path):
    import cv2
    image, label = blocks(64, 64, 8, [0, 1])
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "a_label.png"), label)
    prep = Preprocessing(32, 32, ignore_label=255)
    augment = build_augmenter(32, 32, 255, scale=(0.5, 0.5), rotate=0, flip_lr_p=0, **NO_COLOUR)
    x, y = load_pair(str(tmp_path / "a.png"), str(tmp_path / "a_label.png"), prep, 2, augment,
                     np.random.default_rng(0))
    assert x.shape == (32, 32, 3) and y.shape == (32, 32)
    assert np.count_nonzero(y == 255) == 32 * 32 - 16 * 16


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(scale=(2, 1)), "scale"), (dict(scale=(0, 1)), "scale"), (dict(rotate_p=1.5), "rotate_p"),
    (dict(brightness=1.0), "brightness"), (dict(rotate=-1), "rotate"),
])
def test_bad_settings_are_user_errors(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        build_augmenter(32, 32, 255, **kwargs)


def test_bbufdataset_sample_keeps_binary_labels():
    from conftest import shared_dataset
    import os
    from utils.image import read_image, read_label
    root = shared_dataset("bbufdataset")
    image = read_image(os.path.join(root, "train_image", "000001.jpg"))
    label = read_label(os.path.join(root, "train_label", "000001.png"))
    augment = build_augmenter(224, 224, 255, rotate_p=1.0)
    _, out = augment(image, label, np.random.default_rng(0))
    assert set(np.unique(out).tolist()) <= {0, 1, 255} and out.shape == (224, 224)
