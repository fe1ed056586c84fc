"""Run a segmentation model from any of its saved forms behind one call.

`load_predictor(path)` accepts a Keras checkpoint (`.keras`), an ONNX file
(`.onnx`), a SavedModel folder, a TFLite file (`.tflite`), an OpenVINO IR
(`.xml` + `.bin`) or an NCNN model (`.param` + `.bin`) and returns a
`Predictor`: `predictor(batch)` maps a float32 `(B, H, W, 3)` batch, already
preprocessed, to `(B, H, W, n_classes)` float32 probabilities (for NCNN,
whose model is NCHW with a batch of 1, it transposes and runs one image at a
time). OpenVINO and ncnn come from requirements-deploy.txt: without them the
load is one line naming that file. test.py,
tools/export.py (its parity check) and tools/benchmark_inference.py share it,
so an exported model is judged by exactly the code that serves it.

An exported model carries its settings in `<path>.json` (written by
tools/export.py): the run configuration plus the input/output names.

Sizes (`utils.tiling` asks): a checkpoint loaded with its run config (or
`keras_predictor(model, run_config)`) is rebuilt at any size its model's
rule allows (`Predictor.at_size`, weights copied, one model per size);
exports and models without a run config take only their own size.
"""
import os
import warnings

import numpy as np

from utils.errors import UserError
from utils.model_files import check_model_file, loader_errors

SIDECAR_SUFFIX = ".json"


PREDICTOR_KINDS = ("keras", "onnx", "savedmodel", "tflite", "openvino", "ncnn")
# Rebuilt models kept per predictor (`at_size`): `whole` on a folder of many image sizes would
# otherwise hold one model per size.
MAX_CACHED_SIZES = 8


def model_format(path, flag="--weights_path"):
    """One of `PREDICTOR_KINDS`, after `check_model_file` has read the file's header:
    a missing, empty, damaged or mislabelled model is a one-line `UserError` naming `flag` and `path`."""
    return check_model_file(path, flag, accepted=PREDICTOR_KINDS)


def sidecar_path(model_path):
    return os.path.normpath(model_path) + SIDECAR_SUFFIX


class Predictor:
    """A loaded model: `input_size` (H, W), `n_classes`, the runtime's `input_name`/`output_name`,
    and `__call__(batch) -> probabilities`; the size protocol of `utils.tiling`.

    Other sizes: with a `size_rule` (`Models.SizeRule`) and `rebuild(h, w) -> Predictor`, `at_size`
    returns the predictor for any size the rule allows (built once per size; the last
    `MAX_CACHED_SIZES` other sizes are kept);
    without them the model is fixed-size and `at_size` accepts only `input_size`, saying why
    in one line (`fixed_reason`: e.g. "model.onnx is a fixed-size onnx export (32x32)").
    """

    def __init__(self, run, input_size, n_classes, fmt, input_name=None, output_name=None, size_rule=None,
                 rebuild=None, fixed_reason=None):
        self._run = run
        self.input_size = tuple(int(v) for v in input_size)
        self.n_classes = int(n_classes)
        self.format = fmt
        self.input_name, self.output_name = input_name, output_name
        self.size_rule = size_rule if rebuild is not None else None
        self._rebuild = rebuild
        self.fixed_reason = fixed_reason or (f"the {fmt} model is fixed-size "
                                             f"({self.input_size[0]}x{self.input_size[1]})")
        self._sizes = {self.input_size: self}

    def __call__(self, batch):
        return np.asarray(self._run(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)

    # === Other input sizes (utils.tiling's protocol) ===

    def _fixed_error(self, why):
        return UserError(f"{self.fixed_reason}: {why}; use --inference_mode slide")

    def at_size(self, height, width):
        """The predictor for (height, width) inputs; a `UserError` naming the size and the nearest legal
        sizes (or, fixed-size, that only `input_size` works) when the model cannot take it."""
        size = (int(height), int(width))
        if size in self._sizes:
            return self._sizes[size]
        if self.size_rule is None:
            raise self._fixed_error(f"it cannot take {size[0]}x{size[1]} inputs")
        bad = [(axis, value) for axis, value in zip(("height", "width"), size)
               if value < self.size_rule.smallest or value % self.size_rule.multiple]
        if bad:
            nearest = "; ".join(f"{axis} {value}: nearest legal " + "/".join(
                str(v) for v in sorted(set(self.size_rule.nearest(value)))) for axis, value in bad)
            raise UserError(f"the model cannot take {size[0]}x{size[1]} inputs ({self.size_rule.describe()}; "
                            f"{nearest})")
        if len(self._sizes) > MAX_CACHED_SIZES:  # the oldest other size goes: each holds a copy of the weights
            del self._sizes[next(key for key in self._sizes if key != self.input_size)]
        self._sizes[size] = self._rebuild(*size)
        return self._sizes[size]

    def legal_size_at_least(self, height, width):
        """The smallest (h, w) the model takes with h >= height and w >= width (`whole`'s padding)."""
        if self.size_rule is None:
            if height <= self.input_size[0] and width <= self.input_size[1]:
                return self.input_size
            raise self._fixed_error(f"--inference_mode whole cannot fit a {height}x{width} image in it")
        return tuple(self.size_rule.nearest(int(v))[1] for v in (height, width))

    def nearest_legal_size(self, height, width):
        """The legal (h, w) nearest to (height, width), the larger on a tie (`resize` at a scale)."""
        if self.size_rule is None:
            if (height, width) == self.input_size:
                return self.input_size
            raise self._fixed_error(f"--scales other than 1 need other input sizes ({height}x{width})")

        def nearest(value):
            below, above = self.size_rule.nearest(int(value))
            return below if value - below < above - value else above
        return nearest(height), nearest(width)


# === Keras ===

def main_output_model(model):
    """`model` itself when it has one output, else a model sharing its layers that returns only
    `outputs[0]`, the main head: auxiliary training heads (pspnet's aux branch) are not predictions."""
    import keras
    if len(model.outputs) == 1:
        return model
    # `model.input` keeps the input structure (a tensor, not a one-element list): no warning on call.
    return keras.Model(model.input, model.outputs[0], name=model.name)


def register_custom_objects(compiled=False):
    """Import what saved models name, so `load_model(safe_mode=True)` finds it: the models' custom
    layers, and for a compiled checkpoint (a resume) the loss and metric classes too."""
    import Models.layers  # noqa: F401
    if compiled:
        import losses.keras_loss  # noqa: F401
        import metrics.confusion  # noqa: F401


def load_keras_model(path, flag="--weights_path"):
    """The checkpoint's model with its main output only (auxiliary training heads dropped).

    The file is checked first (`check_model_file`); a load that still fails (damage inside, a file of
    another Keras version) is a one-line `UserError` naming `flag` and `path` with Keras' reason.
    """
    import keras

    register_custom_objects()
    check_model_file(path, flag, accepted=("keras",))
    with loader_errors(path, flag, "Keras"):
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    return main_output_model(model)


def rebuilt_model(model, model_name, n_classes, height, width, model_options=None):
    """`model_name`'s architecture built at height x width through the registry, holding `model`'s
    weights (main output only). Size-dependent buffers (ResizeTo's interpolation matrices) are not
    weights: the build makes them for the new size. A weight list that does not match (another
    architecture or options than the run config says) is a `UserError`."""
    import Models
    built = main_output_model(Models.get_entry(model_name).build(n_classes, height, width, **(model_options or {})))
    source = main_output_model(model).get_weights()
    target = built.get_weights()
    if [w.shape for w in source] != [w.shape for w in target]:
        raise UserError(f"the model's weights do not fit {model_name} {model_options or {}} with {n_classes} "
                        "classes as its run config says: cannot rebuild it at another size")
    built.set_weights(source)
    return built


def _registry_rebuild(model, run_config):
    """(size rule, rebuild(h, w) -> Predictor) from a run config naming the model, else (None, None)."""
    if not (run_config and run_config.get("model_name") and run_config.get("n_classes")):
        return None, None
    import Models
    name, options = run_config["model_name"], run_config.get("model_options") or {}

    def rebuild(height, width):
        return keras_predictor(rebuilt_model(model, name, run_config["n_classes"], height, width, options))
    return Models.get_entry(name).size_rule(options), rebuild


def keras_predictor(model, run_config=None):
    """The `Predictor` of an in-memory Keras model (its main output).

    With `run_config` (a train.py config.json: model_name, n_classes, model_options), `at_size`
    rebuilds the architecture at any legal size and copies the weights as they are at that call
    (one model per size, cached): make a fresh predictor after the weights change (training).
    Without it the model is fixed-size: `at_size` accepts only its own input size.
    """
    model = main_output_model(model)

    def run(batch):
        # `predict_on_batch` skips predict()'s per-call data-adapter setup: faster for one batch.
        return model.predict_on_batch(batch)
    rule, rebuild = _registry_rebuild(model, run_config)
    size = model.input_shape[1:3]
    return Predictor(run, size, model.output_shape[-1], "keras", model.inputs[0].name, model.outputs[0].name,
                     size_rule=rule, rebuild=rebuild,
                     fixed_reason=f"the Keras model is built for {size[0]}x{size[1]} inputs and has no run config "
                                  "(config.json) to rebuild it at another size")


# === Exported formats ===

def onnx_predictor(path, threads=None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_meta, output_meta = session.get_inputs()[0], session.get_outputs()[0]

    def run(batch):
        return session.run([output_meta.name], {input_meta.name: batch})[0]
    return Predictor(run, input_meta.shape[1:3], output_meta.shape[-1], "onnx", input_meta.name, output_meta.name)


def savedmodel_predictor(path):
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures:
        raise UserError(f"{path}: the SavedModel has no serving_default signature (export it with tools/export.py)")
    signature = loaded.signatures["serving_default"]
    ((input_name, input_spec),) = signature.structured_input_signature[1].items()
    ((output_name, output_spec),) = signature.structured_outputs.items()

    def run(batch):
        return loaded.serve(tf.constant(batch)).numpy()
    return Predictor(run, input_spec.shape[1:3], output_spec.shape[-1], "savedmodel", input_name, output_name)


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


def tflite_predictor(path):
    interpreter = _tflite_interpreter(path)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    allocated = [None]

    def run(batch):
        if allocated[0] != batch.shape:  # the batch dimension is dynamic: resize once per new batch size
            interpreter.resize_tensor_input(input_detail["index"], batch.shape)
            interpreter.allocate_tensors()
            allocated[0] = batch.shape
        interpreter.set_tensor(input_detail["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(output_detail["index"]).copy()
    return Predictor(run, input_detail["shape"][1:3], output_detail["shape"][-1], "tflite", input_detail["name"],
                     output_detail["name"])


def openvino_predictor(path, threads=None):
    """The IR keeps a dynamic batch; it is compiled once per batch size seen, with that size fixed:
    OpenVINO's CPU plugin fails on some dynamic graphs (pspnet's and icnet's pyramid pooling: its
    ShuffleChannelsFusion pass "cannot get length of dynamic dimension")."""
    from utils.deploy_export import require
    ov = require("openvino", f"{path}: an OpenVINO model")
    # CPUs with AMX or AVX512-BF16 otherwise run float32 models in bfloat16 (errors of 1e-2).
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    core = ov.Core()
    model = core.read_model(path)
    in_shape, out_shape = model.inputs[0].get_partial_shape(), model.outputs[0].get_partial_shape()
    input_size = (in_shape[1].get_length(), in_shape[2].get_length())
    requests = {}

    def request_for(batch_size):
        if batch_size not in requests:
            model.reshape({model.inputs[0]: ov.PartialShape([batch_size, *input_size, 3])})
            try:
                requests[batch_size] = core.compile_model(model, "CPU", config).create_infer_request()
            except RuntimeError as exc:  # its first lines are only "Exception from src/...cpp:N:"
                said = [line.strip() for line in str(exc).splitlines()
                        if line.strip() and not line.strip().startswith("Exception from")]
                raise RuntimeError(" ".join(said) or str(exc)) from None
        return requests[batch_size]
    request_for(1)  # compile now: a model the plugin cannot take fails at load, not at the first call

    def run(batch):
        request = request_for(len(batch))
        return request.infer({0: batch})[request.model_outputs[0]].copy()
    return Predictor(run, input_size, out_shape[3].get_length(), "openvino", model.inputs[0].get_any_name(),
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
    return Predictor(run, size, settings["n_classes"], "ncnn", input_name, output_name)


def _ncnn_settings(path, flag):
    from utils.run import read_json
    settings_file = sidecar_path(path)
    if not os.path.isfile(settings_file):
        raise UserError(f"{flag + ' ' if flag else ''}{path}: an NCNN model needs its settings file {settings_file} "
                        "(written by tools/export.py): the .param does not record the input size")
    settings = read_json(settings_file, "export settings (written by tools/export.py)")
    missing = [key for key in ("input_height", "input_width", "n_classes") if key not in settings]
    if missing:
        raise UserError(f"{settings_file}: export settings without {', '.join(missing)}")
    return settings


LOADERS = {"keras": "Keras", "onnx": "onnxruntime", "savedmodel": "TensorFlow",
           "tflite": "the TFLite interpreter", "openvino": "OpenVINO", "ncnn": "ncnn"}


def load_predictor(path, threads=None, flag="--weights_path", settings=None, run_config=None):
    """The `Predictor` of a checked model file (see `model_format`); a load that fails after the checks
    is a one-line `UserError` naming `flag`, `path` and the runtime, never a traceback.

    `settings` (NCNN only): input_height, input_width and n_classes; by default read from the
    settings file beside the model (`sidecar_path`). `run_config` (a `.keras` checkpoint's
    config.json): lets `at_size` rebuild the model at other legal sizes (`keras_predictor`).
    Exports are fixed-size: their `at_size` takes only the exported size.
    """
    fmt = model_format(path, flag)
    if fmt == "keras":
        return keras_predictor(load_keras_model(path, flag), run_config)
    predictor = _load_export(path, fmt, threads, flag, settings)
    height, width = predictor.input_size
    predictor.fixed_reason = f"{path} is a fixed-size {fmt} export ({height}x{width})"
    return predictor


def _load_export(path, fmt, threads, flag, settings):
    if fmt in ("openvino", "ncnn"):  # a missing runtime: one line naming the requirements file
        from utils.deploy_export import require
        require(fmt, f"{flag + ' ' if flag else ''}{path}: running an {LOADERS[fmt]} model")
    if fmt == "ncnn" and settings is None:
        settings = _ncnn_settings(path, flag)
    with loader_errors(path, flag, LOADERS[fmt]):
        if fmt == "onnx":
            return onnx_predictor(path, threads)
        if fmt == "savedmodel":
            return savedmodel_predictor(path)
        if fmt == "openvino":
            return openvino_predictor(path, threads)
        if fmt == "ncnn":
            return ncnn_predictor(path, settings, threads)
        return tflite_predictor(path)
