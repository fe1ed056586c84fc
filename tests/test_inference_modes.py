"""test.py --inference_mode resize|whole|slide, --tta_flip, --scales end to end on a tiny checkpoint trained at
32x32, predicting images of other, non-square sizes; the ONNX, TFLite and SavedModel exports slide to the
checkpoint's masks."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, run_script as run, write_dataset
from test_cli_e2e import train_args

pytestmark = pytest.mark.slow

# (height, width): taller than wide, smaller than the 32x32 window in height, neither a multiple of 16.
SIZES = [(45, 70), (23, 37), (64, 50)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """-> (checkpoint, images folder, labels folder)."""
    root = str(tmp_path_factory.mktemp("data"))
    write_dataset(root, n_train=4, n_test=2)
    save = str(tmp_path_factory.mktemp("weights"))
    result = run("train.py", *train_args(root, save, "--epochs", 1))
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = os.path.join(save, "exp1", "unet")
    with open(os.path.join(run_dir, "state.json")) as handle:
        checkpoint = os.path.join(run_dir, json.load(handle)["best_checkpoint"])
    images, labels = os.path.join(root, "odd_image"), os.path.join(root, "odd_label")
    os.makedirs(images)
    os.makedirs(labels)
    rng = np.random.default_rng(7)
    for i, (height, width) in enumerate(SIZES):
        label = np.zeros((height, width), np.uint8)
        label[height // 4:height // 2, width // 3:width // 2 + 5] = 1
        image = label[..., None] * 200 + rng.integers(0, 40, (height, width, 3))
        cv2.imwrite(os.path.join(images, f"odd{i}.png"), image.astype(np.uint8))
        cv2.imwrite(os.path.join(labels, f"odd{i}.png"), label)
    return checkpoint, images, labels


def predict_cli(weights, images, out, *flags):
    result = run("test.py", "--weights_path", weights, "--test_images", images, "--output_path", out, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    return {name: np.array(Image.open(os.path.join(out, name)))
            for name in sorted(os.listdir(out)) if name.endswith(".png")}


def in_process_masks(checkpoint, images, mode, **kwargs):
    """The masks utils.tiling gives for the checkpoint, computed here without test.py."""
    from data import Preprocessing
    from utils.image import read_image
    from utils.inference import load_predictor
    from utils.run import find_run_config
    from utils.tiling import predict_image
    config = find_run_config(checkpoint)
    predictor = load_predictor(checkpoint, run_config=config)
    prep = Preprocessing(32, 32, config["image_init"], config["resize_op"], 255, config["channel_order"])
    return {name: predict_image(read_image(os.path.join(images, name)), predictor, prep, mode, **kwargs).argmax(-1)
            for name in sorted(os.listdir(images))}


@pytest.mark.parametrize("mode, flags, kwargs", [
    ("resize", [], {}),
    ("whole", [], {}),
    ("slide", ["--stride", 12], {"stride": 12}),
    ("slide", ["--tta_flip", "true", "--scales", "0.75,1.0,1.5"], {"flip": True, "scales": (0.75, 1.0, 1.5)}),
])
def test_each_mode_writes_masks_at_each_images_own_size(trained, tmp_path, mode, flags, kwargs):
    checkpoint, images, labels = trained
    out = tmp_path / "out"
    masks = predict_cli(checkpoint, images, out, "--inference_mode", mode, "--mIOU", "true",
                        "--val_annotations", labels, *flags)
    assert sorted(masks) == ["odd0.png", "odd1.png", "odd2.png"]
    for i, size in enumerate(SIZES):
        assert masks[f"odd{i}.png"].shape == size
        assert cv2.imread(str(out / "color" / f"odd{i}.png")).shape[:2] == size
        assert cv2.imread(str(out / "overlay" / f"odd{i}.jpg")).shape[:2] == size
    expected = in_process_masks(checkpoint, images, mode, **kwargs)
    for name, mask in expected.items():
        np.testing.assert_array_equal(masks[name], mask, err_msg=f"{mode} {name}")
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["pixels"] == sum(h * w for h, w in SIZES)


def test_the_run_configs_inference_mode_and_stride_are_the_default(trained, tmp_path):
    checkpoint, images, _ = trained
    run_dir = str(tmp_path / "run")
    shutil.copytree(os.path.dirname(checkpoint), run_dir)
    config_path = os.path.join(run_dir, "config.json")
    config = json.load(open(config_path))
    config.update(inference_mode="slide", stride=9)
    json.dump(config, open(config_path, "w"))
    copied = os.path.join(run_dir, os.path.basename(checkpoint))
    default = predict_cli(copied, images, tmp_path / "default")
    explicit = predict_cli(checkpoint, images, tmp_path / "explicit", "--inference_mode", "slide", "--stride", 9)
    resize = predict_cli(checkpoint, images, tmp_path / "resize", "--inference_mode", "resize")
    assert default.keys() == explicit.keys()
    for name in default:
        np.testing.assert_array_equal(default[name], explicit[name], err_msg=name)
    assert any(not np.array_equal(default[n], resize[n]) for n in default)  # the mode did change


@pytest.fixture(scope="module")
def keras_slide_masks(trained, tmp_path_factory):
    checkpoint, images, _ = trained
    return predict_cli(checkpoint, images, tmp_path_factory.mktemp("k") / "out", "--inference_mode", "slide",
                       "--tta_flip", "true")


@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("tflite", "model.tflite"),
                                       ("savedmodel", "model_savedmodel")])
def test_exports_slide_to_the_checkpoints_masks(trained, keras_slide_masks, tmp_path, fmt, name):
    checkpoint, images, _ = trained
    export = str(tmp_path / name)
    result = run("tools/export.py", "--weights_path", checkpoint, "--format", fmt, "--output", export)
    assert result.returncode == 0, result.stdout + result.stderr
    masks = predict_cli(export, images, tmp_path / "o", "--inference_mode", "slide", "--tta_flip", "true")
    assert len(keras_slide_masks) == 3 and keras_slide_masks.keys() == masks.keys()
    for mask_name in masks:
        np.testing.assert_array_equal(masks[mask_name], keras_slide_masks[mask_name], err_msg=mask_name)
    if fmt != "onnx":
        return
    # unet exports with a dynamic height and width: whole runs on it at each image's padded size
    # (a fixed-size export's one-line error: tests/test_dynamic_export.py).
    whole = predict_cli(export, images, tmp_path / "w", "--inference_mode", "whole")
    for mask_name, mask in in_process_masks(checkpoint, images, "whole").items():
        np.testing.assert_array_equal(whole[mask_name], mask, err_msg=f"whole {mask_name}")


@pytest.mark.parametrize("flags, fragments", [
    (["--inference_mode", "slide", "--stride", 0], ["--stride 0", "at least 1"]),
    (["--inference_mode", "slide", "--stride", 33], ["--stride 33: must be in 1..32", "32x32 window"]),
    (["--scales", "1.0,-0.5"], ["--scales 1.0,-0.5", "positive"]),
    (["--scales", "1.0,big"], ["--scales 1.0,big", "'big' is not a number"]),
    (["--inference_mode", "resize", "--resize_op", 3, "--scales", "1.0,1.1"], []),  # legal: runs
])
def test_bad_inference_flags_give_one_line_errors(trained, tmp_path, flags, fragments):
    checkpoint, images, _ = trained
    result = run("test.py", "--weights_path", checkpoint, "--test_images", images, "--output_path", tmp_path / "o",
                 *flags)
    if not fragments:
        assert result.returncode == 0, result.stdout + result.stderr
        assert [cv2.imread(str(tmp_path / "o" / f"odd{i}.png"), cv2.IMREAD_UNCHANGED).shape
                for i in range(len(SIZES))] == SIZES
        return
    assert_one_line_error(result, *fragments)


def test_a_bad_label_found_by_the_writer_threads_is_one_line(trained, tmp_path):
    """Labels are read and scored in the thread pool: its error still reaches the user as one line."""
    checkpoint, images, labels = trained
    bad_labels = str(tmp_path / "labels")
    shutil.copytree(labels, bad_labels)
    cv2.imwrite(os.path.join(bad_labels, "odd1.png"), np.zeros((10, 10), np.uint8))
    assert_one_line_error(run("test.py", "--weights_path", checkpoint, "--test_images", images, "--mIOU", "true",
                              "--val_annotations", bad_labels, "--inference_mode", "slide",
                              "--output_path", tmp_path / "o"),
                          "odd1.png: label size 10x10 differs from image")


def test_resize_mode_predicts_the_pixels_training_saw_on_jpegs(trained, tmp_path):
    """A large JPEG is decoded at a reduced scale for training (utils.image.read_image_for); test.py's resize
    mode feeds the model that same input, not a full decode resized (which differs by a few grey levels)."""
    from data import Preprocessing
    from utils.inference import load_predictor
    from utils.image import read_image, restore_probabilities
    from utils.run import find_run_config
    checkpoint, _, _ = trained
    folder = tmp_path / "jpegs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (150, 130, 3)).astype(np.uint8), (0, 0), 1.0)
    cv2.imwrite(str(folder / "big.jpg"), image)
    config = find_run_config(checkpoint)
    prep = Preprocessing(32, 32, config["image_init"], 1, 255, config["channel_order"])
    predictor = load_predictor(checkpoint, run_config=config)
    training_input, _ = prep.load_image(str(folder / "big.jpg"))
    full = read_image(str(folder / "big.jpg"))
    assert np.abs(training_input - prep.image(full)).max() > 0  # the two decodes differ, so the test can fail
    expected = restore_probabilities(predictor(training_input[None])[0], 150, 130, 1).argmax(-1)
    masks = predict_cli(checkpoint, str(folder), tmp_path / "out", "--inference_mode", "resize")
    np.testing.assert_array_equal(masks["big.png"], expected)
