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
an export with `dynamic_size: true` in its settings file runs its one session
at any size the recorded rule allows; other exports and models without a run
config take only their own size. The runtimes' loaders: utils/export_predictors.py.
"""
import os

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


# === Exported formats (their runtimes: utils/export_predictors.py) ===

def _export_settings(path, flag, fmt):
    """The settings file beside an export, or None where there is none and the format can do without
    (only NCNN cannot: its .param does not record the input size)."""
    from utils.run import read_json
    settings_file = sidecar_path(path)
    if not os.path.isfile(settings_file):
        if fmt != "ncnn":
            return None
        raise UserError(f"{flag + ' ' if flag else ''}{path}: an NCNN model needs its settings file {settings_file} "
                        "(written by tools/export.py): the .param does not record the input size")
    settings = read_json(settings_file, "export settings (written by tools/export.py)")
    needed = ("input_height", "input_width", "n_classes") if fmt == "ncnn" else ()
    if settings.get("dynamic_size"):
        needed += ("input_height", "input_width", "size_multiple")
    missing = [key for key in dict.fromkeys(needed) if key not in settings]
    if missing:
        raise UserError(f"{settings_file}: export settings without {', '.join(missing)}")
    return settings


LOADERS = {"keras": "Keras", "onnx": "onnxruntime", "savedmodel": "TensorFlow",
           "tflite": "the TFLite interpreter", "openvino": "OpenVINO", "ncnn": "ncnn"}


def load_predictor(path, threads=None, flag="--weights_path", settings=None, run_config=None):
    """The `Predictor` of a checked model file (see `model_format`); a load that fails after the checks
    is a one-line `UserError` naming `flag`, `path` and the runtime, never a traceback.

    `settings` (exports): the export's settings (tools/export.py's `<path>.json`); by default read
    from the settings file beside the model (`sidecar_path`). NCNN needs input_height, input_width and
    n_classes from it. With `dynamic_size: true` (an export with a dynamic height and width) the
    predictor's `input_size` is the training size (input_height x input_width: slide's window) and
    `at_size(h, w)` runs the same session at any size the recorded rule (`size_multiple`,
    `size_minimum`) allows; other exports are fixed-size: `at_size` takes only their own size.
    `run_config` (a `.keras` checkpoint's config.json): lets `at_size` rebuild the model at other
    legal sizes (`keras_predictor`).
    """
    fmt = model_format(path, flag)
    if fmt == "keras":
        return keras_predictor(load_keras_model(path, flag), run_config)
    predictor, settings = _load_export(path, fmt, threads, flag, settings)
    if settings and settings.get("dynamic_size"):
        return _dynamic_export(predictor, settings)
    height, width = predictor.input_size
    predictor.fixed_reason = f"{path} is a fixed-size {fmt} export ({height}x{width})"
    return predictor


def _dynamic_export(predictor, settings):
    """`predictor` (an export with a dynamic height and width) with its size rule: every size shares its
    one session, which takes any input shape."""
    from Models.size_rules import SizeRule
    rule = SizeRule(int(settings["size_multiple"]), int(settings.get("size_minimum") or 0))

    def at(height, width):
        return Predictor(predictor._run, (height, width), predictor.n_classes, predictor.format,
                         predictor.input_name, predictor.output_name, size_rule=rule, rebuild=at)
    return at(*predictor.input_size)


def _load_export(path, fmt, threads, flag, settings):
    """(the export's Predictor, its settings or None)."""
    from utils import export_predictors as runtimes
    if fmt in ("openvino", "ncnn"):  # a missing runtime: one line naming the requirements file
        from utils.deploy_export import require
        require(fmt, f"{flag + ' ' if flag else ''}{path}: running an {LOADERS[fmt]} model")
    if settings is None:
        settings = _export_settings(path, flag, fmt)
    # A dynamic export's input says nothing of the training size: the settings do.
    size = (settings["input_height"], settings["input_width"]) if settings and settings.get("dynamic_size") else None
    with loader_errors(path, flag, LOADERS[fmt]):
        if fmt == "onnx":
            return runtimes.onnx_predictor(path, threads, size), settings
        if fmt == "savedmodel":
            return runtimes.savedmodel_predictor(path, size), settings
        if fmt == "openvino":
            return runtimes.openvino_predictor(path, threads, size), settings
        if fmt == "ncnn":
            return runtimes.ncnn_predictor(path, settings, threads), settings
        return runtimes.tflite_predictor(path, size), settings
