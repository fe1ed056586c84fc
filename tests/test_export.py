"""tools/export.py: ONNX, SavedModel and TFLite exports equal the Keras model; test.py serves the ONNX file."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import write_dataset
from conftest import assert_one_line_error, run_script as run
from test_cli_e2e import train_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_dataset(root, n_train=4, n_test=3)
    save = str(tmp_path_factory.mktemp("weights"))
    result = run("train.py", *train_args(root, save, "--epochs", 1))
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = os.path.join(save, "exp1", "unet")
    with open(os.path.join(run_dir, "state.json")) as handle:
        return os.path.join(run_dir, json.load(handle)["best_checkpoint"])


@pytest.fixture(scope="module")
def onnx_export(checkpoint, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    result = run("tools/export.py", "--weights_path", checkpoint, "--format", "onnx", "--output", output,
                 "--opset", 17)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "parity: max |onnx - keras|" in result.stdout
    import onnx
    assert {o.domain: o.version for o in onnx.load(output).opset_import}[""] == 17
    return output


def keras_probabilities(checkpoint, batch):
    from utils.inference import load_keras_model
    return np.asarray(load_keras_model(checkpoint).predict(batch, verbose=0))


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("savedmodel", "_savedmodel"), ("tflite", ".tflite")])
def test_export_passes_parity_and_writes_settings(checkpoint, onnx_export, tmp_path, fmt, suffix):
    if fmt == "onnx":
        output = onnx_export
    else:
        output = str(tmp_path / f"model{suffix}")
        result = run("tools/export.py", "--weights_path", checkpoint, "--format", fmt, "--output", output)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"parity: max |{fmt} - keras|" in result.stdout
    with open(output + ".json") as handle:
        meta = json.load(handle)
    assert meta["format"] == fmt and meta["max_abs_diff"] <= 1e-4
    assert (meta["input_height"], meta["input_width"], meta["n_classes"]) == (32, 32, 2)
    assert meta["image_init"] == "divide" and meta["channel_order"] == "BGR"
    assert meta["input_shape"] == [None, 32, 32, 3] and meta["input_name"] and meta["output_name"]


def test_onnx_runs_in_onnxruntime_with_any_batch_size(checkpoint, onnx_export):
    """Checked with onnxruntime directly (not the toolkit's runner), at a batch size the export never saw."""
    import onnxruntime as ort
    output = onnx_export
    with open(output + ".json") as handle:
        input_name = json.load(handle)["input_name"]
    batch = np.random.default_rng(1).random((5, 32, 32, 3), dtype=np.float32)
    session = ort.InferenceSession(output, providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {input_name: batch})
    assert probs.shape == (5, 32, 32, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, keras_probabilities(checkpoint, batch), atol=1e-4)


def test_test_py_with_onnx_gives_the_keras_masks(checkpoint, onnx_export, tmp_path):
    onnx_path = onnx_export
    masks = {}
    for weights in (checkpoint, onnx_path):
        out = str(tmp_path / os.path.basename(weights).replace(".", "_"))
        result = run("test.py", "--weights_path", weights, "--output_path", out, "--mIOU", "true")
        assert result.returncode == 0, result.stdout + result.stderr
        masks[weights] = {name: np.array(Image.open(os.path.join(out, name)))
                          for name in sorted(os.listdir(out)) if name.endswith(".png")}
    keras_masks, onnx_masks = masks[checkpoint], masks[onnx_path]
    assert len(keras_masks) == 3 and keras_masks.keys() == onnx_masks.keys()
    for name in keras_masks:
        np.testing.assert_array_equal(onnx_masks[name], keras_masks[name], err_msg=name)


def test_failed_parity_exits_1_and_leaves_nothing(checkpoint, tmp_path):
    output = str(tmp_path / "model.onnx")
    # onnxruntime's float arithmetic differs from TensorFlow's in the last bits, so 1e-12 cannot pass.
    result = run("tools/export.py", "--weights_path", checkpoint, "--format", "onnx", "--output", output,
                 "--atol", "1e-12")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "parity check failed" in result.stderr
    assert os.listdir(tmp_path) == []


def test_export_bad_input_gives_one_line_errors(checkpoint, tmp_path):
    existing = tmp_path / "taken.onnx"
    existing.write_bytes(b"user data")
    assert_one_line_error(run("tools/export.py", "--weights_path", checkpoint, "--format", "onnx",
                              "--output", str(existing)), "taken.onnx", "already exists")
    assert existing.read_bytes() == b"user data"
    assert_one_line_error(run("tools/export.py", "--weights_path", checkpoint, "--format", "tflite",
                              "--output", str(tmp_path / "m.onnx")), "must end with .tflite")
    assert_one_line_error(run("tools/export.py", "--weights_path", str(tmp_path / "missing.keras"),
                              "--format", "onnx"), "missing.keras", "no such file")


def test_export_all_table_for_one_model():
    result = run("tools/export_all.py", "--models", "fcn8", "--height", 32, "--width", 32, "--formats", "onnx")
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| `fcn8`")]
    assert float(row.split("|")[3]) <= 1e-4


def test_benchmark_inference_prints_both_runtimes():
    result = run("tools/benchmark_inference.py", "--model_name", "fcn8", "--height", 32, "--width", 32,
                 "--batch_sizes", "1,2", "--seconds", 0.2, "--runtimes", "keras,onnxruntime")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split() and line.split()[0] in ("1", "2")]
    assert [r[0] for r in rows] == ["1", "2"] and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)


def test_benchmark_prints_targets_and_writes_json(tmp_path):
    output = str(tmp_path / "bench.json")
    # overhead and slide have their own tests (test_benchmark_sections.py); memory trains twice.
    result = run("tools/benchmark.py", "--models", "fcn8", "--size", 32, "--sections", "peak,pipeline,models",
                 "--seconds", 0.2,
                 "--data_dir", os.path.join("data", "demo"), "--output", output)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pipeline / naive loop >= 2.0" in result.stdout and "pipeline / tf.data >= 1.0" in result.stdout
    with open(output) as handle:
        results = json.load(handle)
    assert results["peak"]["conv_flops"] > 0 and results["pipeline"]["files"] == 40
    row = results["models"]["fcn8"]
    assert row["train_images_per_s"] > 0 and row["onnx_infer_images_per_s"] > 0
    assert row["achieved_flops"] == pytest.approx(6 * row["gmacs"] * 1e9 * row["train_images_per_s"])


def quality_row(tmp_path, dataset, table, *flags):
    """One 1-epoch row of tools/benchmark_quality.py -> (its results.json row, its table.md)."""
    from conftest import shared_dataset
    shared_dataset(dataset)
    result = run("tools/benchmark_quality.py", "--table", table, *flags, "--epochs", 1, "--size", 32,
                 "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / table / "results.json") as handle:
        (row,) = json.load(handle)
    return row, (tmp_path / table / "table.md").read_text()


def test_benchmark_quality_row_on_bbufdataset(tmp_path):
    row, table = quality_row(tmp_path, "bbufdataset", "models", "--models", "fcn8")
    assert 0 <= row["mIoU"] <= 1 and row["epochs"] == 1 and set(row["per_class_iou"]) == {"background", "part"}
    assert row["train_command"].startswith("python train.py --data_root ../shared/datasets --dataset_name bbufdataset")
    assert "--validate false" in row["train_command"]  # never pick the checkpoint on the test split
    assert f"| `fcn8` | {row['mIoU']:.4f} | 0.93 |" in table  # ours, then the seed's published 50-epoch mIoU


def test_benchmark_quality_losses_row_on_membrane(tmp_path):
    row, table = quality_row(tmp_path, "membrane", "losses", "--losses", "dice")
    assert row["dataset"] == "membrane" and "--model_name unet --loss dice" in row["train_command"]
    assert "seed's mIoU" not in table and f"| `dice` | {row['mIoU']:.4f} |" in table
