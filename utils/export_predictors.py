"""The `Predictor` of each exported format (ONNX, SavedModel, TFLite, OpenVINO, NCNN); `utils.inference.
load_predictor` chooses among them and adds the size rule of a dynamic-size export.

Each loader takes `size`: the (height, width) to report as `input_size` when the export's input has a
dynamic height and width (tools/export.py records the training size in the settings file). Without
it, a dynamic export is a `UserError`: nothing else says which window size the model was trained at.
"""
import warnings

import numpy as np

from utils.errors import UserError

# Compiled OpenVINO models kept per predictor: one per input shape (batch size, and image size in whole).
MAX_COMPILED_SHAPES = 8


def static_size(dims):
    """(height, width) from an input's (H, W) dimensions, or None when either is dynamic (None, a
    symbolic name, or TFLite's -1)."""
    if all(isinstance(d, (int, np.integer)) and int(d) > 0 for d in dims):
        return tuple(int(d) for d in dims)
    return None


def _size(path, dims, size):
    """`size` when given, else the export's own static size; a dynamic one without `size` is an error."""
    if size is not None:
        return tuple(int(v) for v in size)
    found = static_size(dims)
    if found is None:
        from utils.inference import sidecar_path
        raise UserError(f"{path}: an export with a dynamic height and width needs its settings file "
                        f"{sidecar_path(path)} (written by tools/export.py) for its training size")
    return found


def _predictor(*args, **kwargs):
    from utils.inference import Predictor
    return Predictor(*args, **kwargs)


# === ONNX, SavedModel, TFLite ===

def onnx_predictor(path, threads=None, size=None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_meta, output_meta = session.get_inputs()[0], session.get_outputs()[0]

    def run(batch):
        return session.run([output_meta.name], {input_meta.name: batch})[0]
    return _predictor(run, _size(path, input_meta.shape[1:3], size), output_meta.shape[-1], "onnx",
                      input_meta.name, output_meta.name)


def savedmodel_predictor(path, size=None):
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures:
        raise UserError(f"{path}: the SavedModel has no serving_default signature (export it with tools/export.py)")
    signature = loaded.signatures["serving_default"]
    ((input_name, input_spec),) = signature.structured_input_signature[1].items()
    ((output_name, output_spec),) = signature.structured_outputs.items()

    def run(batch):
        return loaded.serve(tf.constant(batch)).numpy()
    return _predictor(run, _size(path, input_spec.shape[1:3], size), output_spec.shape[-1], "savedmodel",
                      input_name, output_name)


def _tflite_interpreter(path):
    try:  # LiteRT is tf.lite's successor; use it when installed
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    with open(path, "rb") as handle:
        content = handle.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        # From a buffer the interpreter runs the flatbuffer verifier first; from a path it does not, and
        # a damaged file then crashes the process (a segmentation fault) instead of raising.
        return Interpreter(model_content=content)


def tflite_predictor(path, size=None):
    interpreter = _tflite_interpreter(path)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    allocated = [None]

    def run(batch):
        # Batch, height and width may all be dynamic: resize once per new batch shape.
        if allocated[0] != batch.shape:
            interpreter.resize_tensor_input(input_detail["index"], batch.shape)
            interpreter.allocate_tensors()
            allocated[0] = batch.shape
        interpreter.set_tensor(input_detail["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(output_detail["index"]).copy()
    # `shape` holds 1 for a dynamic dimension; `shape_signature` holds -1.
    dims = input_detail.get("shape_signature", input_detail["shape"])[1:3]
    return _predictor(run, _size(path, dims, size), output_detail["shape"][-1], "tflite", input_detail["name"],
                      output_detail["name"])


# === OpenVINO, NCNN ===

def openvino_predictor(path, threads=None, size=None):
    """The IR keeps a dynamic batch (and height and width for a dynamic export); it is compiled once
    per input shape seen, with that shape fixed: OpenVINO's CPU plugin fails on some dynamic graphs
    (pspnet's and icnet's pyramid pooling: its ShuffleChannelsFusion pass "cannot get length of
    dynamic dimension")."""
    from utils.deploy_export import require
    ov = require("openvino", f"{path}: an OpenVINO model")
    # CPUs with AMX or AVX512-BF16 otherwise run float32 models in bfloat16 (errors of 1e-2).
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    core = ov.Core()
    model = core.read_model(path)
    in_shape, out_shape = model.inputs[0].get_partial_shape(), model.outputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in (in_shape[1], in_shape[2])]
    input_size = _size(path, dims, size)
    requests = {}

    def request_for(shape):
        if shape not in requests:
            if len(requests) > MAX_COMPILED_SHAPES:  # whole on many image sizes: the oldest shape goes
                del requests[next(iter(requests))]
            model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
            try:
                requests[shape] = core.compile_model(model, "CPU", config).create_infer_request()
            except RuntimeError as exc:  # its first lines are only "Exception from src/...cpp:N:"
                said = [line.strip() for line in str(exc).splitlines()
                        if line.strip() and not line.strip().startswith("Exception from")]
                raise RuntimeError(" ".join(said) or str(exc)) from None
        return requests[shape]
    request_for((1, *input_size, 3))  # compile now: a model the plugin cannot take fails at load, not at the first call

    def run(batch):
        request = request_for(tuple(batch.shape))
        return request.infer({0: batch})[request.model_outputs[0]].copy()
    return _predictor(run, input_size, out_shape[3].get_length(), "openvino", model.inputs[0].get_any_name(),
                      model.outputs[0].get_any_name())


def ncnn_predictor(path, settings, threads=None):
    """`settings` gives input_height, input_width and n_classes: an NCNN .param does not record them."""
    from utils.deploy_export import require, unknown_layers
    from utils.model_files import weights_path
    ncnn = require("ncnn", f"{path}: an NCNN model")
    missing = unknown_layers(path, ncnn)
    if missing:  # ncnn itself only prints this to stderr and returns -1
        raise RuntimeError(f"ncnn has no layer for {', '.join(missing)}")
    net = ncnn.Net()
    # float32 throughout: ncnn stores and computes in float16/bfloat16 where the CPU supports it.
    for option in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, option, False)
    if threads:
        net.opt.num_threads = int(threads)
    if net.load_param(path) != 0 or net.load_model(weights_path(path)) != 0:
        raise RuntimeError("ncnn could not read the .param/.bin pair")
    input_name, output_name = net.input_names()[0], net.output_names()[0]

    def run(batch):
        outputs = []
        for image in batch:  # the NCNN model has a batch of 1
            chw = np.ascontiguousarray(image.transpose(2, 0, 1))
            # ncnn.Mat wraps `chw` without copying (even through .clone()): `chw` must outlive the extraction.
            extractor = net.create_extractor()
            extractor.input(input_name, ncnn.Mat(chw))
            status, output = extractor.extract(output_name)
            if status != 0:
                raise RuntimeError(f"ncnn could not compute {output_name} (status {status})")
            outputs.append(np.array(output).transpose(1, 2, 0))
        return np.stack(outputs)
    size = (settings["input_height"], settings["input_width"])
    return _predictor(run, size, settings["n_classes"], "ncnn", input_name, output_name)
