"""OpenVINO and NCNN exports: parity with Keras, test.py masks equal to the .keras run's, export_all and
the inference benchmark over all four runtimes; a missing runtime is one line naming requirements-deploy.txt.

The runtimes come from requirements-deploy.txt: without them these tests skip (pytest.importorskip).
"""
import glob
import json
import os
import re
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_script as run
from conftest import write_dataset
from test_cli_e2e import train_args
from utils.errors import UserError

RUNTIME_MODULES = {"openvino": ("openvino",), "ncnn": ("ncnn", "pnnx")}
SUFFIX = {"openvino": ".xml", "ncnn": ".ncnn.param"}
# Both smallest legal sizes are 32x32 (deeplab_v3+: multiples of 16).
MODELS = {"unet": [], "deeplab_v3+": ["--model_name", "deeplab_v3+", "--backbone", "mobilenet"]}


def need(fmt):
    for module in RUNTIME_MODULES[fmt]:
        pytest.importorskip(module)


def read_masks(folder):
    return {name: np.array(Image.open(os.path.join(folder, name)))
            for name in sorted(os.listdir(folder)) if name.endswith(".png")}


def masks_from_test_py(weights, out):
    result = run("test.py", "--weights_path", weights, "--output_path", out, "--mIOU", "true")
    assert result.returncode == 0, result.stdout + result.stderr
    return read_masks(out)




# === Trained checkpoints (1 epoch on the tiny set), and their .keras masks ===

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """name -> (checkpoint, the masks test.py writes with it); each model trained once, on first use."""
    root = str(tmp_path_factory.mktemp("data"))
    write_dataset(root, n_train=4, n_test=3)
    cache = {}

    def get(name):
        if name not in cache:
            save = str(tmp_path_factory.mktemp("weights"))
            result = run("train.py", *train_args(root, save, "--epochs", 1, *MODELS[name]))
            assert result.returncode == 0, result.stdout + result.stderr
            (state,) = glob.glob(os.path.join(save, "**", "state.json"), recursive=True)
            with open(state) as handle:
                checkpoint = os.path.join(os.path.dirname(state), json.load(handle)["best_checkpoint"])
            masks = masks_from_test_py(checkpoint, str(tmp_path_factory.mktemp("keras_masks")))
            assert len(masks) == 3
            cache[name] = checkpoint, masks
        return cache[name]
    return get


def keras_probabilities(checkpoint, batch):
    from utils.inference import load_keras_model
    return np.asarray(load_keras_model(checkpoint).predict(batch, verbose=0))


def run_directly(fmt, path, batch):
    """The export run with its runtime's own API, not the toolkit's Predictor."""
    if fmt == "openvino":
        import openvino as ov
        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(batch)[compiled.outputs[0]]  # the whole batch at once: the batch stays dynamic
    import ncnn
    net = ncnn.Net()
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    assert net.load_param(path) == 0 and net.load_model(path[:-len(".param")] + ".bin") == 0
    outputs = []
    for image in batch:
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))  # the NCNN model takes NCHW, batch 1
        extractor = net.create_extractor()
        extractor.input("in0", ncnn.Mat(chw))
        outputs.append(np.array(extractor.extract("out0")[1]).transpose(1, 2, 0))
    return np.stack(outputs)


# === Export, parity, and test.py on the export ===

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["openvino", "ncnn"])
@pytest.mark.parametrize("name", list(MODELS))
def test_export_passes_parity_and_test_py_gives_the_keras_masks(trained, tmp_path, name, fmt):
    need(fmt)
    checkpoint, keras_masks = trained(name)
    output = str(tmp_path / ("model" + SUFFIX[fmt]))
    result = run("tools/export.py", "--weights_path", checkpoint, "--format", fmt, "--output", output)
    assert result.returncode == 0, result.stdout + result.stderr
    diff = float(re.search(rf"parity: max \|{fmt} - keras\| = (\S+) over 2 images", result.stdout).group(1))
    assert diff <= 1e-4
    weights = output[:-len(".xml" if fmt == "openvino" else ".param")] + ".bin"
    assert os.path.getsize(weights) > 100_000  # the float32 weights, not a stub
    with open(output + ".json") as handle:
        meta = json.load(handle)
    assert meta["format"] == fmt and meta["max_abs_diff"] == pytest.approx(diff, rel=1e-2, abs=1e-12)
    assert (meta["input_height"], meta["input_width"], meta["n_classes"]) == (32, 32, 2)
    expected_shape = [1, 3, 32, 32] if fmt == "ncnn" else [None, 32, 32, 3]
    assert meta["input_shape"] == expected_shape and meta["layout"] == ("NCHW" if fmt == "ncnn" else "NHWC")

    batch = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32)
    probs = run_directly(fmt, output, batch)
    assert probs.shape == (3, 32, 32, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, keras_probabilities(checkpoint, batch), atol=1e-4)

    masks = masks_from_test_py(output, str(tmp_path / "masks"))
    assert masks.keys() == keras_masks.keys()
    for mask_name in keras_masks:
        np.testing.assert_array_equal(masks[mask_name], keras_masks[mask_name], err_msg=mask_name)


@pytest.mark.slow
def test_failed_ncnn_parity_exits_1_and_leaves_nothing(trained, tmp_path):
    need("ncnn")
    checkpoint, _ = trained("unet")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # ncnn's float arithmetic differs from TensorFlow's in the last bits, so 1e-12 cannot pass.
    result = run("tools/export.py", "--weights_path", checkpoint, "--format", "ncnn",
                 "--output", str(out_dir / "m.ncnn.param"), "--atol", "1e-12")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "parity check failed: max |ncnn - keras|" in result.stderr
    assert os.listdir(out_dir) == []


@pytest.mark.slow
def test_export_all_rows_for_the_new_formats():
    need("openvino")
    need("ncnn")
    result = run("tools/export_all.py", "--models", "fcn8", "--height", 32, "--width", 32,
                 "--formats", "openvino,ncnn")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| openvino max abs diff | ncnn max abs diff |" in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| `fcn8`")]
    cells = row.split("|")
    assert float(cells[3]) <= 1e-4 and float(cells[4]) <= 1e-4


@pytest.mark.slow
def test_benchmark_inference_prints_all_four_runtimes():
    need("openvino")
    need("ncnn")
    result = run("tools/benchmark_inference.py", "--model_name", "fcn8", "--height", 32, "--width", 32,
                 "--batch_sizes", "1,2", "--seconds", 0.2)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["batch", "keras", "onnxruntime", "openvino", "ncnn"] in lines
    rows = {line[0]: line[1:] for line in lines if line and line[0] in ("1", "2")}
    assert all(float(v) > 0 for v in rows["1"])  # batch 1: all four ran
    assert all(float(v) > 0 for v in rows["2"][:3]) and rows["2"][3] == "-"  # NCNN's batch is fixed at 1


# === A missing runtime: one line naming requirements-deploy.txt ===

@pytest.mark.parametrize("fmt, module", [("openvino", "openvino"), ("ncnn", "ncnn"), ("ncnn", "pnnx")])
def test_missing_runtime_is_one_line_naming_the_requirements_file(monkeypatch, fmt, module):
    from utils.deploy_export import check_runtime
    monkeypatch.setitem(sys.modules, module, None)  # find_spec then reports the module as absent
    with pytest.raises(UserError) as info:
        check_runtime(fmt)
    message = str(info.value)
    assert "\n" not in message and message.endswith("pip install -r requirements-deploy.txt"), message
    assert module in message


@pytest.mark.parametrize("fmt, name, graph", [
    ("openvino", "m.xml", b'<?xml version="1.0"?>\n<net name="m" version="11">\n</net>\n'),
    ("ncnn", "m.ncnn.param", b"7767517\n1 1\nInput in0 0 1 in0\n")])
def test_serving_without_the_runtime_is_one_line(monkeypatch, tmp_path, fmt, name, graph):
    from utils.inference import load_predictor
    path = tmp_path / name
    path.write_bytes(graph)
    (tmp_path / (name.rsplit(".", 1)[0] + ".bin")).write_bytes(b"\x00" * 8)
    monkeypatch.setitem(sys.modules, fmt, None)
    with pytest.raises(UserError) as info:
        load_predictor(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"--weights_path {path}: "), message
    assert message.endswith("pip install -r requirements-deploy.txt"), message
