"""Every model or settings file a user names is checked with one clear line, never a traceback.

The checker (utils.model_files.check_model_file) is tested in-process over a table of bad files;
a few subprocess runs per entry point (slow) prove that test.py, train.py, tools/export.py and
tools/evaluate.py reach it before any loader does.
"""
import json
import os
import re
import zipfile

import numpy as np
import pytest

from conftest import assert_one_line_error, run_script, write_dataset
from utils.errors import UserError
from utils.model_files import check_model_file, check_text_file

RNG_BYTES = np.random.default_rng(0).bytes(4096)
# The first bytes of a real ONNX file (ir_version 8, producer "tf2onnx"): protobuf, no zip/HDF5/TFL3 magic.
ONNX_HEAD = b"\x08\x08\x12\x07tf2onnx"
HDF5_HEAD = b"\x89HDF\r\n\x1a\n"
OPENVINO_HEAD = b'<?xml version="1.0"?>\n<net name="m" version="11">\n</net>\n'
NCNN_HEAD = b"7767517\n1 1\nInput in0 0 1 in0\n"


# === Files, good and bad ===

@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    """A tiny real model (3x3 conv + softmax on 32x32x3) as .keras and as an .h5 of its weights."""
    import keras
    folder = tmp_path_factory.mktemp("real")
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Conv2D(2, 3, padding="same")(inputs)))
    model.save(folder / "tiny.keras")
    model.save_weights(folder / "tiny.weights.h5")
    return {"keras": folder / "tiny.keras", "h5": folder / "tiny.weights.h5"}


def _write(path, data):
    path.write_bytes(data)
    return path


def _cut(source, path):
    data = source.read_bytes()
    return _write(path, data[:len(data) // 2])


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _flip_inside(source, path, member="model.weights.h5"):
    """`source` with one byte of `member`'s stored data inverted: the zip directory is intact, the CRC not."""
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(member)
    data = bytearray(source.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2] ^= 0xFF
    return _write(path, bytes(data))


def _pair(path, graph, weights):
    """A two-file model: `path` (the graph) and the .bin beside it."""
    _write(path.with_suffix(".bin"), weights)
    return _write(path, graph)


def _folder(path, files=()):
    path.mkdir()
    for name, data in files:
        (path / name).write_bytes(data)
    return path


# (case id, maker(tmp_path, real files) -> path, flag, accepted kinds, fragments of the one-line error)
BAD = [
    ("missing", lambda t, r: t / "missing.keras", "--weights_path", None, ["no such file"]),
    ("empty", lambda t, r: _write(t / "empty.keras", b""), "--weights_path", None, ["empty file (0 bytes)"]),
    ("text-as-keras", lambda t, r: _write(t / "notes.keras", b"just some text\n"), "--pretrained", None,
     ["is not a Keras .keras zip archive"]),
    ("onnx-as-keras", lambda t, r: _write(t / "renamed.keras", ONNX_HEAD + RNG_BYTES), "--weights_path", None,
     ["is not a Keras .keras zip archive"]),
    ("hdf5-as-keras", lambda t, r: _write(t / "old.keras", r["h5"].read_bytes()), "--pretrained", None,
     ["is not a Keras .keras zip archive", "HDF5"]),
    ("truncated-keras", lambda t, r: _cut(r["keras"], t / "half.keras"), "--weights_path", None,
     ["truncated or damaged .keras zip archive"]),
    ("bad-crc-keras", lambda t, r: _flip_inside(r["keras"], t / "flipped.keras"), "--resume", ("keras",),
     ["damaged .keras archive", "bad CRC in model.weights.h5"]),
    ("zip-without-weights", lambda t, r: _zip(t / "noweights.keras", {"config.json": "{}"}), "--weights_path",
     None, ["no model.weights.h5"]),
    ("zip-without-config", lambda t, r: _zip(t / "noconfig.keras", {"model.weights.h5": HDF5_HEAD}),
     "--weights_path", None, ["no config.json"]),
    ("config-not-json", lambda t, r: _zip(t / "badcfg.keras", {"config.json": "{", "model.weights.h5": HDF5_HEAD}),
     "--weights_path", None, ["config.json is not JSON"]),
    ("text-as-h5", lambda t, r: _write(t / "weights.h5", b"layer_names = conv\n"), "--pretrained", None,
     ["is not an HDF5 file (no HDF5 signature)"]),
    ("zip-as-h5", lambda t, r: _write(t / "zipped.h5", r["keras"].read_bytes()), "--pretrained", None,
     ["is not an HDF5 file", "zip archive"]),
    ("truncated-h5", lambda t, r: _cut(r["h5"], t / "half.h5"), "--pretrained", None,
     ["truncated or damaged HDF5 file", "truncated file"]),
    ("random-onnx", lambda t, r: _write(t / "random.onnx", RNG_BYTES), "--weights_path", None,
     ["not an ONNX model"]),
    ("keras-as-onnx", lambda t, r: _write(t / "model.onnx", r["keras"].read_bytes()), "--weights_path", None,
     ["is not an ONNX model", "zip archive"]),
    ("random-tflite", lambda t, r: _write(t / "random.tflite", RNG_BYTES), "--weights_path", None,
     ["is not a TFLite model (no TFL3 identifier)"]),
    ("folder-not-savedmodel", lambda t, r: _folder(t / "plain", [("notes.txt", b"x")]), "--weights_path", None,
     ["a folder that is not a SavedModel (no saved_model.pb)"]),
    ("savedmodel-empty-pb", lambda t, r: _folder(t / "sm", [("saved_model.pb", b"")]), "--weights_path", None,
     ["saved_model.pb is empty"]),
    ("onnx-for-pretrained", lambda t, r: _write(t / "x.onnx", ONNX_HEAD), "--pretrained", ("keras", "h5"),
     ["expected a .keras model or an .h5 weights file (got an .onnx model)"]),
    ("h5-for-resume", lambda t, r: r["h5"], "--resume", ("keras",), ["expected a .keras model (got an .h5"]),
    ("folder-for-pretrained", lambda t, r: _folder(t / "dir"), "--pretrained", ("keras", "h5"),
     ["expected a .keras model or an .h5 weights file (got a folder)"]),
    ("unknown-suffix", lambda t, r: _write(t / "model.pt", b"\x80\x02"), "--weights_path", None,
     ["unknown file type '.pt'"]),
    # Two-file formats: OpenVINO IR (.xml + .bin) and NCNN (.param + .bin).
    ("missing-xml", lambda t, r: t / "gone.xml", "--weights_path", None, ["no such file"]),
    ("empty-xml", lambda t, r: _pair(t / "empty.xml", b"", b"\x01"), "--weights_path", None,
     ["empty file (0 bytes)"]),
    ("text-as-xml", lambda t, r: _pair(t / "notes.xml", b"<?xml version='1.0'?><html/>", b"\x01"),
     "--weights_path", None, ["is not an OpenVINO IR .xml (no <net> element"]),
    ("keras-as-xml", lambda t, r: _pair(t / "zipped.xml", r["keras"].read_bytes(), b"\x01"), "--weights_path",
     None, ["is not an OpenVINO IR .xml", "zip archive"]),
    ("xml-without-bin", lambda t, r: _write(t / "lonely.xml", OPENVINO_HEAD), "--weights_path", None,
     ["its weights file", "lonely.bin is missing"]),
    ("xml-empty-bin", lambda t, r: _pair(t / "hollow.xml", OPENVINO_HEAD, b""), "--weights_path", None,
     ["hollow.bin is empty (0 bytes)"]),
    ("missing-param", lambda t, r: t / "gone.param", "--weights_path", None, ["no such file"]),
    ("empty-param", lambda t, r: _pair(t / "empty.param", b"", b"\x01"), "--weights_path", None,
     ["empty file (0 bytes)"]),
    ("random-param", lambda t, r: _pair(t / "random.param", RNG_BYTES, b"\x01"), "--weights_path", None,
     ["is not an NCNN .param (its first line is not the magic number 7767517)"]),
    ("param-cut-after-magic", lambda t, r: _pair(t / "cut.param", b"7767517\n", b"\x01"), "--weights_path",
     None, ["truncated or damaged NCNN .param"]),
    ("param-without-bin", lambda t, r: _write(t / "m.ncnn.param", NCNN_HEAD), "--weights_path", None,
     ["its weights file", "m.ncnn.bin is missing"]),
    ("param-for-pretrained", lambda t, r: _pair(t / "x.param", NCNN_HEAD, b"\x01"), "--pretrained",
     ("keras", "h5"), ["expected a .keras model or an .h5 weights file (got an NCNN .param model)"]),
]


@pytest.mark.parametrize("maker, flag, accepted, fragments", [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_bad_model_file_is_one_line_naming_flag_file_and_rule(tmp_path, real_files, maker, flag, accepted,
                                                              fragments):
    path = maker(tmp_path, real_files)
    with pytest.raises(UserError) as info:
        check_model_file(path, flag, **({"accepted": accepted} if accepted else {}))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{flag} {path}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_unreadable_model_file(tmp_path, real_files):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = _write(tmp_path / "locked.keras", real_files["keras"].read_bytes())
    path.chmod(0)
    with pytest.raises(UserError, match=r"^--weights_path .*locked\.keras: cannot be read \(Permission denied\)$"):
        check_model_file(path, "--weights_path")


def test_good_files_give_their_kind(tmp_path, real_files):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "id.onnx")
    tflite = _write(tmp_path / "m.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(24))  # header only: the check's scope
    savedmodel = _folder(tmp_path / "sm", [("saved_model.pb", b"\x08\x01")])
    openvino = _pair(tmp_path / "m.xml", OPENVINO_HEAD, b"\x00" * 8)
    ncnn = _pair(tmp_path / "m.ncnn.param", NCNN_HEAD, b"\x00" * 8)
    found = {kind: check_model_file(path, "--f") for kind, path in [
        ("keras", real_files["keras"]), ("h5", real_files["h5"]), ("onnx", tmp_path / "id.onnx"),
        ("tflite", tflite), ("savedmodel", savedmodel), ("openvino", openvino), ("ncnn", ncnn)]}
    assert found == {kind: kind for kind in found}
    assert check_model_file(real_files["keras"], "--resume", accepted=("keras",)) == "keras"


def test_loader_failure_after_the_checks_is_one_line(tmp_path):
    """A .keras whose header is sound but whose model Keras cannot build: Keras' reason, one line."""
    from utils.inference import load_keras_model
    path = _zip(tmp_path / "alien.keras", {"config.json": json.dumps({"class_name": "NoSuchLayer", "config": {}}),
                                           "model.weights.h5": HDF5_HEAD})
    with pytest.raises(UserError) as info:
        load_keras_model(path, "--weights_path")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"--weights_path {path}: Keras cannot load it (")
    assert "NoSuchLayer" in message


def test_truncated_tflite_fails_at_the_interpreter_with_one_line(tmp_path):
    """The TFL3 header survives a cut, so the interpreter is what notices: its error becomes one line."""
    from utils.inference import load_predictor
    path = _write(tmp_path / "cut.tflite", b"\x1c\x00\x00\x00TFL3" + RNG_BYTES[:200])
    with pytest.raises(UserError) as info:
        load_predictor(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"--weights_path {path}: the TFLite interpreter cannot")


# === JSON settings files ===

JSON_CASES = [
    ("missing", None, "not found"),
    ("folder", "DIR", "is a folder, expected a JSON file"),
    ("not-utf8", b"\xff\xfe{\x00}", "is not UTF-8 text"),
    ("not-json", b"epochs: 3\n", "is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ("json-list", b"[1, 2]", "must be a JSON object, not an array"),
    ("json-null", b"null", "must be a JSON object, not null"),
]


@pytest.mark.parametrize("content, fragment", [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_read_json_is_one_line_for_any_unreadable_file(tmp_path, content, fragment):
    from utils.run import read_json
    path = tmp_path / "config.json"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_json(str(path), "run configuration")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: run configuration {fragment}"), message


def test_check_text_file(tmp_path):
    good = _write(tmp_path / "names.txt", "background\ncat\n".encode())
    check_text_file(good, "--class_names")
    for path, fragment in [(tmp_path / "none.txt", "no such file"), (_write(tmp_path / "bin.txt", b"\xff\xfe\x00"),
                                                                    "not UTF-8 text"),
                           (_folder(tmp_path / "d"), "a folder, expected a text file")]:
        with pytest.raises(UserError, match=f"^{re.escape(f'--class_names {path}: {fragment}')}$"):
            check_text_file(path, "--class_names")


# === One place that drops auxiliary heads ===

def test_main_output_model_keeps_the_main_head_only():
    import keras

    from utils.inference import main_output_model
    inputs = keras.Input((8, 8, 3))
    main = keras.layers.Conv2D(2, 1, name="main")(inputs)
    aux = keras.layers.Conv2D(2, 3, padding="same", name="aux")(inputs)
    two_heads = keras.Model(inputs, [main, aux], name="two")
    one = main_output_model(two_heads)
    batch = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    expected = np.asarray(two_heads(batch)[0])
    assert len(one.outputs) == 1 and one.name == "two"
    np.testing.assert_allclose(np.asarray(one(batch)), expected, atol=0)
    single = keras.Model(inputs, main)
    assert main_output_model(single) is single


# === The entry points reach the checks (subprocess runs) ===

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_dataset(root, n_train=2, n_test=1, size=(32, 32))
    return root


def _beside_checkpoint(tmp, real, config):
    """The real checkpoint copied into a folder whose config.json holds `config` (bytes)."""
    folder = _folder(tmp / "run", [("config.json", config)])
    return _write(folder / "tiny.keras", real["keras"].read_bytes())


def _test_py(tmp, dataset, path):
    return ("test.py", "--weights_path", path, "--test_images", os.path.join(dataset, "tiny", "test_image"),
            "--output_path", tmp / "out")


def _train_py(tmp, dataset, path):
    from test_cli_e2e import train_args
    return ("train.py", *train_args(dataset, tmp / "weights", "--epochs", 1, "--pretrained", path))


def _export_py(tmp, dataset, path):
    return ("tools/export.py", "--weights_path", path, "--format", "onnx", "--output", tmp / "x.onnx")


# (case id, command(tmp, dataset, path), maker(tmp, real files) -> path, fragments of the error line)
ENTRY_POINTS = [
    ("test.py-truncated-keras", _test_py, lambda t, r: _cut(r["keras"], t / "half.keras"),
     ["--weights_path", "half.keras", "truncated or damaged .keras zip archive"]),
    ("test.py-random-onnx", _test_py, lambda t, r: _write(t / "random.onnx", RNG_BYTES),
     ["--weights_path", "random.onnx", "not an ONNX model"]),
    ("test.py-random-tflite", _test_py, lambda t, r: _write(t / "random.tflite", RNG_BYTES),
     ["--weights_path", "random.tflite", "no TFL3 identifier"]),
    ("test.py-config-list", _test_py, lambda t, r: _beside_checkpoint(t, r, b"[]"),
     ["config.json", "must be a JSON object, not an array"]),
    ("train.py-text-h5", _train_py, lambda t, r: _write(t / "weights.h5", b"not hdf5\n"),
     ["--pretrained", "weights.h5", "no HDF5 signature"]),
    ("train.py-onnx", _train_py, lambda t, r: _write(t / "x.onnx", ONNX_HEAD),
     ["--pretrained", "x.onnx", "expected a .keras model or an .h5 weights file"]),
    ("export.py-text-keras", _export_py, lambda t, r: _write(t / "notes.keras", b"hello\n"),
     ["--weights_path", "notes.keras", "is not a Keras .keras zip archive"]),
    ("export.py-empty", _export_py, lambda t, r: _write(t / "empty.keras", b""),
     ["--weights_path", "empty.keras", "empty file (0 bytes)"]),
    ("export.py-config-not-json", _export_py, lambda t, r: _beside_checkpoint(t, r, b"{not json"),
     ["config.json", "is not valid JSON"]),
    ("export.py-folder", _export_py, lambda t, r: _folder(t / "plain"),
     ["--weights_path", "plain", "not a train.py run (no state.json)"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("command, maker, fragments", [c[1:] for c in ENTRY_POINTS], ids=[c[0] for c in ENTRY_POINTS])
def test_entry_point_gives_one_line_for_a_bad_file(tmp_path, dataset, real_files, command, maker, fragments):
    path = maker(tmp_path, real_files)
    assert_one_line_error(run_script(*command(tmp_path, dataset, path)), *fragments)


def _masks(folder):
    from PIL import Image
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")
    return folder


# tools/evaluate.py takes folders and a text file, no model; it imports no TensorFlow, so these are fast.
EVALUATE = [
    ("pred-dir-missing", lambda t: ["--pred_dir", t / "nothing"], ["--pred_dir", "nothing", "folder not found"]),
    ("pred-dir-a-file", lambda t: ["--pred_dir", _write(t / "p.png", b"x")], ["--pred_dir", "p.png",
                                                                               "a file, expected a folder"]),
    ("class-names-binary", lambda t: ["--class_names", _write(t / "names.txt", RNG_BYTES)],
     ["--class_names", "names.txt", "not UTF-8 text"]),
    ("class-names-folder", lambda t: ["--class_names", _folder(t / "names")],
     ["--class_names", "names", "a folder, expected a text file"]),
    ("output-path-a-file", lambda t: ["--output_path", _write(t / "report", b"x")],
     ["--output_path", "report", "a file, expected a folder"]),
]


@pytest.mark.parametrize("flags, fragments", [c[1:] for c in EVALUATE], ids=[c[0] for c in EVALUATE])
def test_evaluate_gives_one_line_for_a_bad_file_argument(tmp_path, flags, fragments):
    masks = _masks(tmp_path / "masks")
    defaults = {"--pred_dir": masks, "--label_dir": masks, "--output_path": tmp_path / "eval"}
    flags = flags(tmp_path)
    merged = {**defaults, **dict(zip(flags[::2], flags[1::2]))}
    args = [item for pair in merged.items() for item in pair]
    assert_one_line_error(run_script("tools/evaluate.py", *args, "--n_classes", 2), *fragments)
