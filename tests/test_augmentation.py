"""augmentation.py (offline, Augmentor): clean masks, pairing by stem, untouched inputs, determinism."""
import hashlib
import os
import random
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

import augmentation
from conftest import run_script, shared_dataset
from utils.errors import UserError
from utils.image import read_label

# Augmentor's Skew builds an np.matrix.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

ALL_OPS = ["--rotate_p", "1", "--rotate_degrees", "20", "--flip_lr_p", "1", "--flip_tb_p", "1", "--zoom_p", "1",
           "--distortion_p", "1", "--skew_p", "1"]


def block_pair(size=(48, 64), cell=8, values=(0, 3, 7), seed=0):
    """A mask of constant blocks and an image whose grey level encodes the class (value * 30)."""
    rng = np.random.default_rng(seed)
    grid = rng.choice(values, size=(size[0] // cell + 1, size[1] // cell + 1)).astype(np.uint8)
    mask = np.kron(grid, np.ones((cell, cell), np.uint8))[:size[0], :size[1]]
    image = np.repeat((mask * 30)[..., None], 3, axis=2).astype(np.uint8)
    return image, mask


def write_inputs(root, n=3, image_ext=".jpg", palette=False):
    image_dir, mask_dir = os.path.join(root, "img"), os.path.join(root, "mask")
    os.makedirs(image_dir)
    os.makedirs(mask_dir)
    for i in range(n):
        image, mask = block_pair(seed=i)
        cv2.imwrite(os.path.join(image_dir, f"s{i}{image_ext}"), image)
        if palette:
            out = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
            out.putpalette([v for c in range(256) for v in (c, 255 - c, 0)])
            out.save(os.path.join(mask_dir, f"s{i}.png"))
        else:
            cv2.imwrite(os.path.join(mask_dir, f"s{i}.png"), mask)
    return image_dir, mask_dir


def tree_digest(folder):
    digest = hashlib.sha1()
    for name in sorted(os.listdir(folder)):
        digest.update(name.encode())
        with open(os.path.join(folder, name), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def run(image_dir, mask_dir, out_root, *extra):
    args = ["--train_path", image_dir, "--mask_path", mask_dir, "--augtrain_path", os.path.join(out_root, "oi"),
            "--augtrain_mask", os.path.join(out_root, "om"), *extra]
    assert augmentation.main(args) == 0
    return os.path.join(out_root, "oi"), os.path.join(out_root, "om")


# === Why masks need care: Augmentor's own behaviour ===

def test_stock_augmentor_blurs_grayscale_masks_but_not_palette_masks():
    """The hazard this script avoids: bicubic resampling of an "L" mask invents class ids."""
    import Augmentor
    _, mask = block_pair(values=(0, 3, 7))
    pipeline = Augmentor.Pipeline()
    pipeline.rotate(probability=1, max_left_rotation=10, max_right_rotation=10)
    pipeline.zoom_random(probability=1, percentage_area=0.8)
    random.seed(0)
    invented = set()
    for _ in range(5):
        out = [Image.fromarray(mask)]
        for op in pipeline.operations:
            out = op.perform_operation(out)
        invented |= set(np.unique(np.asarray(out[0])).tolist()) - {0, 3, 7}
    assert invented, "expected bicubic resampling to create values outside {0, 3, 7}"
    palette_mask, values = augmentation.encode_mask(mask)
    random.seed(0)
    for _ in range(5):
        out = [palette_mask]
        for op in pipeline.operations:
            out = op.perform_operation(out)
        assert set(np.unique(augmentation.decode_mask(out[0], values, 255)).tolist()) <= {0, 3, 7, 255}


# === The script ===

def test_outputs_hold_only_input_values_and_inputs_stay_untouched(tmp_path):
    image_dir, mask_dir = write_inputs(str(tmp_path), n=3, image_ext=".jpg")
    before = tree_digest(image_dir), tree_digest(mask_dir)
    out_images, out_masks = run(image_dir, mask_dir, str(tmp_path / "new" / "deeper"), *ALL_OPS,
                                "--samples_per_image", "4")
    assert (tree_digest(image_dir), tree_digest(mask_dir)) == before
    assert sorted(os.listdir(out_images)) == [f"s{i}_aug{k}.jpg" for i in range(3) for k in range(4)]
    assert sorted(os.listdir(out_masks)) == [f"s{i}_aug{k}.png" for i in range(3) for k in range(4)]
    for name in os.listdir(out_masks):
        mask = read_label(os.path.join(out_masks, name))
        assert set(np.unique(mask).tolist()) <= {0, 3, 7}, name
        image = cv2.imread(os.path.join(out_images, name[:-4] + ".jpg"))
        assert image.shape[:2] == mask.shape == (48, 64)


def test_image_and_mask_get_the_same_geometry(tmp_path):
    image_dir, mask_dir = write_inputs(str(tmp_path), n=2, image_ext=".png")
    # Elastic distortion is left out: where it compresses the image several-fold, bicubic taps
    # legitimately reach across edges that nearest-neighbour does not.
    geometric = ALL_OPS[:ALL_OPS.index("--distortion_p")] + ALL_OPS[ALL_OPS.index("--distortion_p") + 2:]
    out_images, out_masks = run(image_dir, mask_dir, str(tmp_path), *geometric, "--samples_per_image", "3")
    checked = 0
    for name in os.listdir(out_masks):
        mask = read_label(os.path.join(out_masks, name))
        image = cv2.imread(os.path.join(out_images, name), cv2.IMREAD_GRAYSCALE)
        # Interior pixels (constant 5x5 mask neighbourhood): the grey level encodes the class.
        interior = cv2.erode(mask, np.ones((5, 5), np.uint8)) == cv2.dilate(mask, np.ones((5, 5), np.uint8))
        interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False
        checked += interior.sum()
        # Bicubic ringing overshoots by up to ~45 grey levels; a misplaced mask is off by >= 90.
        np.testing.assert_allclose(image[interior], mask[interior] * 30.0, atol=60)
    assert checked > 1000


def test_same_seed_same_files_other_seed_differs(tmp_path):
    image_dir, mask_dir = write_inputs(str(tmp_path), n=2)
    a = run(image_dir, mask_dir, str(tmp_path / "a"), *ALL_OPS, "--seed", "1")
    b = run(image_dir, mask_dir, str(tmp_path / "b"), *ALL_OPS, "--seed", "1")
    c = run(image_dir, mask_dir, str(tmp_path / "c"), *ALL_OPS, "--seed", "2")
    assert tree_digest(a[1]) == tree_digest(b[1]) and tree_digest(a[0]) == tree_digest(b[0])
    assert tree_digest(a[1]) != tree_digest(c[1])


def test_palette_masks_stay_palette_with_their_colours(tmp_path):
    image_dir, mask_dir = write_inputs(str(tmp_path), n=1, palette=True)
    _, out_masks = run(image_dir, mask_dir, str(tmp_path), "--samples_per_image", "2")
    with Image.open(os.path.join(out_masks, "s0_aug0.png")) as img:
        assert img.mode == "P" and img.getpalette()[3 * 7:3 * 8] == [7, 248, 0]


def test_filled_pixels_become_the_ignore_label_not_background():
    from Augmentor.Operations import RotateStandard
    image, _ = block_pair()
    mask = np.full((48, 64), 3, np.uint8)
    random.seed(0)
    samples = augmentation.augment_pair([RotateStandard(1, 30, 30)], Image.fromarray(image), mask, 3, 200)
    for _, out, filled in samples:
        assert set(np.unique(out).tolist()) <= {3, 200}
        assert np.count_nonzero(out == 200) == filled
    assert sum(s[2] for s in samples) > 0


def test_rotate_crop_never_reaches_the_fill():
    # Augmentor's RotateRange leaves filled pixels at the border for some sizes; ours must not.
    op = augmentation.make_rotate_operation(1.0, 25)
    random.seed(0)
    for width, height in ((130, 100), (37, 91), (64, 64)):
        mask = np.ones((height, width), np.uint8)
        encoded, values = augmentation.encode_mask(mask)
        for _ in range(40):
            out = op.perform_operation([encoded])[0]
            assert out.size == (width, height)
            assert np.count_nonzero(np.asarray(out) == 0) == 0


def test_largest_inner_rect_is_hand_checked():
    # 90 degrees: a 200x100 rectangle holds a 200x100-aspect one of height 50 (width 100).
    w, h = augmentation.largest_inner_rect(200, 100, 90)
    assert w == pytest.approx(100) and h == pytest.approx(50)
    assert augmentation.largest_inner_rect(64, 64, 0) == (64, 64)
    # A square rotated 45 degrees: the inscribed square has side s / sqrt(2).
    w, _ = augmentation.largest_inner_rect(100, 100, 45)
    assert w == pytest.approx(100 / np.sqrt(2))


@pytest.mark.parametrize("problem, fragment", [
    ("into_input", "is an input folder"), ("unpaired", "unpaired files: images without a mask"),
    ("jpeg_mask", r"s1\.jpg: mask saved as JPEG"), ("repeated", "s1.jpg and s1.png share the stem 's1'"),
    ("not_empty", "not empty"), ("size", r"s1\.png: mask size 10x10 differs from image"),
])
def test_bad_input_is_a_user_error(tmp_path, problem, fragment):
    image_dir, mask_dir = write_inputs(str(tmp_path), n=2)
    out = [os.path.join(str(tmp_path), "oi"), os.path.join(str(tmp_path), "om")]
    if problem == "into_input":
        out[1] = mask_dir
    elif problem == "unpaired":
        os.remove(os.path.join(mask_dir, "s1.png"))
    elif problem == "jpeg_mask":
        os.remove(os.path.join(mask_dir, "s1.png"))
        cv2.imwrite(os.path.join(mask_dir, "s1.jpg"), np.zeros((48, 64), np.uint8))
    elif problem == "repeated":  # a JPEG beside the PNG: which one was meant is unknowable
        cv2.imwrite(os.path.join(mask_dir, "s1.jpg"), np.zeros((48, 64), np.uint8))
    elif problem == "not_empty":
        os.makedirs(out[0])
        open(os.path.join(out[0], "old.jpg"), "wb").close()
    elif problem == "size":
        cv2.imwrite(os.path.join(mask_dir, "s1.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(UserError, match=fragment):
        augmentation.main(["--train_path", image_dir, "--mask_path", mask_dir, "--augtrain_path", out[0],
                           "--augtrain_mask", out[1]])


def test_cli_prints_one_line_error(tmp_path):
    proc = run_script("augmentation.py", "--train_path", tmp_path / "missing", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --train_path") and "Traceback" not in proc.stderr


def test_bbufdataset_masks_stay_binary(tmp_path):
    root = shared_dataset("bbufdataset")
    image_dir, mask_dir = tmp_path / "img", tmp_path / "mask"
    image_dir.mkdir()
    mask_dir.mkdir()
    for stem in ("000001", "000002", "000003"):
        shutil.copy(os.path.join(root, "train_image", stem + ".jpg"), image_dir)
        shutil.copy(os.path.join(root, "train_label", stem + ".png"), mask_dir)
    _, out_masks = run(str(image_dir), str(mask_dir), str(tmp_path))
    assert len(os.listdir(out_masks)) == 15
    values = set()
    for name in os.listdir(out_masks):
        values |= set(np.unique(read_label(os.path.join(out_masks, name))).tolist())
    assert values == {0, 1}
