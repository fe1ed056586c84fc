"""tools/export.py writes ONNX, TFLite and SavedModel exports with a dynamic height and width where the
architecture allows (unet), so `test.py --inference_mode whole` on them gives the `.keras` checkpoint's
masks at each image's own size; an architecture that resizes to fixed sizes (deeplab_v3+) exports fixed,
and `whole` on it stays the one-line error."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, run_script as run, write_dataset
from test_cli_e2e import train_args
from test_inference_modes import predict_cli

pytestmark = pytest.mark.slow

# Neither a multiple of unet's 16, one smaller than the 32x32 training size in height.
SIZES = [(45, 70), (23, 37)]
EXPORTS = [("onnx", "model.onnx"), ("tflite", "model.tflite"), ("savedmodel", "model_savedmodel")]


def _train(root, save, *extra):
    result = run("train.py", *train_args(root, save, "--epochs", 1, *extra))
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = os.path.join(save, "exp1", extra[1] if extra else "unet")
    with open(os.path.join(run_dir, "state.json")) as handle:
        return os.path.join(run_dir, json.load(handle)["best_checkpoint"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """-> (unet checkpoint trained at 32x32, folder of images of SIZES)."""
    root = str(tmp_path_factory.mktemp("data"))
    write_dataset(root, n_train=4, n_test=2)
    checkpoint = _train(root, str(tmp_path_factory.mktemp("weights")))
    images = os.path.join(root, "odd_image")
    os.makedirs(images)
    rng = np.random.default_rng(3)
    for i, (height, width) in enumerate(SIZES):
        image = rng.integers(0, 40, (height, width, 3))
        image[height // 4:height // 2, width // 3:width // 2 + 5] += 200
        cv2.imwrite(os.path.join(images, f"odd{i}.png"), image.astype(np.uint8))
    return checkpoint, images


@pytest.fixture(scope="module")
def keras_whole_masks(trained, tmp_path_factory):
    checkpoint, images = trained
    return predict_cli(checkpoint, images, tmp_path_factory.mktemp("k") / "out", "--inference_mode", "whole")


def export(checkpoint, fmt, output):
    result = run("tools/export.py", "--weights_path", checkpoint, "--format", fmt, "--output", output)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(output + ".json") as handle:
        return json.load(handle), result.stdout


@pytest.mark.parametrize("fmt, name", EXPORTS)
def test_unet_exports_are_dynamic_and_whole_gives_the_checkpoints_masks(trained, keras_whole_masks, tmp_path,
                                                                        fmt, name):
    checkpoint, images = trained
    output = str(tmp_path / name)
    meta, stdout = export(checkpoint, fmt, output)
    assert meta["dynamic_size"] is True and (meta["size_multiple"], meta["size_minimum"]) == (16, 16)
    assert (meta["input_height"], meta["input_width"]) == (32, 32)  # the training size: slide's window
    assert f"parity: max |{fmt} - keras|" in stdout and "at 32x32 and 48x64" in stdout
    masks = predict_cli(output, images, tmp_path / "o", "--inference_mode", "whole")
    assert sorted(masks) == sorted(keras_whole_masks) == ["odd0.png", "odd1.png"]
    for i, size in enumerate(SIZES):
        assert masks[f"odd{i}.png"].shape == size
        np.testing.assert_array_equal(masks[f"odd{i}.png"], keras_whole_masks[f"odd{i}.png"], err_msg=fmt)
    assert any(mask.any() and not mask.all() for mask in masks.values())  # two classes: a real comparison
    if fmt == "onnx":
        check_onnx_predictor(output, tmp_path)


def check_onnx_predictor(output, tmp_path):
    """The dynamic ONNX export in process: its window is the training size, one session takes any legal
    size, an illegal one names the nearest legal sizes, and without its settings file it says so."""
    import onnxruntime as ort

    from utils.errors import UserError
    from utils.inference import load_predictor
    shape = ort.InferenceSession(output, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert not any(isinstance(dim, int) for dim in shape[1:3]), shape  # really dynamic in the file
    predictor = load_predictor(output)
    assert predictor.input_size == (32, 32) and predictor.legal_size_at_least(45, 70) == (48, 80)
    probs = predictor.at_size(48, 80)(np.full((1, 48, 80, 3), 0.5, np.float32))
    assert probs.shape == (1, 48, 80, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(UserError) as info:
        predictor.at_size(45, 70)
    message = str(info.value)
    assert "\n" not in message and "45x70" in message, message
    assert "height 45: nearest legal 32/48" in message and "width 70: nearest legal 64/80" in message, message
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(output, bare / "model.onnx")
    with pytest.raises(UserError, match="needs its settings file .*model.onnx.json"):
        load_predictor(str(bare / "model.onnx"))


def test_a_fixed_size_architecture_exports_fixed_and_whole_is_one_line(trained, tmp_path):
    """deeplab_v3+ resizes to sizes computed from its input size: it cannot be built at (None, None)."""
    _, images = trained
    root = str(tmp_path / "data")
    write_dataset(root, n_train=2, n_test=1)
    checkpoint = _train(root, str(tmp_path / "weights"), "--model_name", "deeplab_v3+", "--backbone", "mobilenet")
    output = str(tmp_path / "fixed.onnx")
    meta, stdout = export(checkpoint, "onnx", output)
    assert meta["dynamic_size"] is False and meta["size_multiple"] == 16
    assert "fixed size 32x32" in stdout and "at 32x32 (atol" in stdout
    assert_one_line_error(run("test.py", "--weights_path", output, "--test_images", images, "--inference_mode",
                              "whole", "--output_path", tmp_path / "w"),
                          "fixed.onnx is a fixed-size onnx export (32x32)", "whole cannot fit a 45x70",
                          "use --inference_mode slide")


def test_a_dynamic_export_that_fails_its_runtime_falls_back_to_fixed(trained, tmp_path, monkeypatch, capsys):
    """A converter may accept the dynamic model and write what its runtime cannot run (TFLite: ops that
    need TensorFlow's "select" ops, as mobilenet_unet's dynamic TFLite does): the fixed export is made
    instead, and the printout says why."""
    import tools.export as export_tool
    checkpoint, _ = trained
    real_check = export_tool.check_parity

    def dynamic_fails(expected, path, batch, rule=None, others=()):
        if rule is not None:
            raise RuntimeError("the export does not load or run in its runtime: select ops")
        return real_check(expected, path, batch, rule, others)
    monkeypatch.setattr(export_tool, "check_parity", dynamic_fails)
    output = str(tmp_path / "model.onnx")
    assert export_tool.main(["--weights_path", checkpoint, "--format", "onnx", "--output", output]) in (0, None)
    with open(output + ".json") as handle:
        assert json.load(handle)["dynamic_size"] is False
    printed = capsys.readouterr().out
    assert "fixed size 32x32: the dynamic-size onnx export failed its parity check" in printed
    assert "select ops" in printed
