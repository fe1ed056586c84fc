"""Convert a Keras model to OpenVINO IR and to NCNN with those projects' own converters.

Both start from the ONNX file that Keras' exporter (tf2onnx) writes:

- OpenVINO: `openvino.convert_model` on the ONNX file, `openvino.save_model` to
  `<name>.xml` + `<name>.bin` with float32 weights (its default compresses them
  to float16). The batch dimension stays dynamic.
- NCNN: the NCNN project's `pnnx` converter (the binary inside the pnnx wheel)
  on the ONNX file, written as `<name>.param` + `<name>.bin` with float32
  weights (`fp16=0`). The NCNN model has a fixed batch of 1 and a fixed input
  size, and takes NCHW: two Transposes are added to the ONNX graph (NCHW in,
  NCHW out), which pnnx folds into the NHWC<->NCHW transposes that tf2onnx put
  around the convolutions. `utils.inference` transposes for the caller.

Keras' nearest `UpSampling2D` lowers to a 5-D Tile (tf.repeat), which NCNN's
4-D tensors cannot hold; for NCNN those layers are exported as the equal
nearest resize (integer factors: the same pixels), in a clone that shares the
model's weights. tools/export.py's parity check then proves the result.

The packages come from requirements-deploy.txt; without them a one-line
`UserError` names that file.
"""
import functools
import importlib
import importlib.util
import os
import shutil
import subprocess
import tempfile

from utils.errors import UserError

DEPLOY_REQUIREMENTS = "requirements-deploy.txt"
# Which pip package provides each piece, for the one-line "install it" message.
PACKAGES = {"openvino": "openvino", "ncnn": "ncnn", "pnnx": "pnnx"}
NCNN_INPUT, NCNN_OUTPUT = "in0", "out0"


# === Runtimes present? ===

def require(module, purpose):
    """Import `module`, or a one-line `UserError`: `purpose` needs it, install requirements-deploy.txt."""
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{purpose} needs the {PACKAGES.get(module, module)} package: "
                        f"pip install -r {DEPLOY_REQUIREMENTS}")
    return importlib.import_module(module)


def check_runtime(fmt):
    """A one-line `UserError` unless what exporting to `fmt` ('openvino' or 'ncnn') needs is installed."""
    if fmt == "openvino":
        require("openvino", "an OpenVINO export")
    else:
        require("ncnn", "an NCNN export")
        pnnx_executable()


def pnnx_executable():
    """The pnnx converter binary shipped in the pnnx wheel, found without importing the package (its
    Python API imports torch, which converting an ONNX file does not need)."""
    spec = importlib.util.find_spec("pnnx")
    folder = next(iter(spec.submodule_search_locations or []), None) if spec else None
    binary = os.path.join(folder, "pnnx") if folder else None
    if not binary or not os.path.isfile(binary):
        raise UserError(f"an NCNN export needs the pnnx package (the NCNN project's converter): "
                        f"pip install -r {DEPLOY_REQUIREMENTS}")
    return binary


# === OpenVINO ===

def to_openvino(onnx_path, xml_path):
    """OpenVINO's converter on an ONNX file -> `xml_path` and the .bin beside it (float32 weights)."""
    ov = require("openvino", "an OpenVINO export")
    model = ov.convert_model(onnx_path)
    ov.save_model(model, xml_path, compress_to_fp16=False)


# === NCNN ===

def ncnn_ready(model):
    """`model`, or a clone sharing its weights whose nearest UpSampling2D layers are nearest resizes
    (see the module docstring); the clone is called once, as the ONNX exporter requires."""
    import keras
    import numpy as np

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest":
            x = args[0]
            size = (x.shape[1] * layer.size[0], x.shape[2] * layer.size[1])
            return _nearest_resize_class()(size, name=layer.name + "_as_resize")(x)
        return layer(*args, **kwargs)

    if not any(isinstance(layer, keras.layers.UpSampling2D) for layer in _all_layers(model)):
        return model
    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call,
                                     recursive=True)
    clone(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)
    return clone


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


@functools.lru_cache(maxsize=None)
def _nearest_resize_class():
    # Defined on first use: keras is imported only when exporting.
    import keras

    class NearestResize(keras.layers.Layer):
        """Nearest resize of NHWC maps to a fixed size (never saved: it exists only for the export)."""

        def __init__(self, size, **kwargs):
            super().__init__(**kwargs)
            self.size = tuple(int(v) for v in size)

        def call(self, inputs):
            return keras.ops.image.resize(inputs, self.size, interpolation="nearest")

        def compute_output_shape(self, input_shape):
            return (input_shape[0], *self.size, input_shape[-1])
    return NearestResize




def nchw_onnx(src, dst, height, width):
    """Rewrite an NHWC ONNX model as batch-1 NCHW in (`in0`, (1, 3, H, W)) and out (`out0`)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(src)
    graph = model.graph
    old_in, old_out = graph.input[0].name, graph.output[0].name
    n_classes = graph.output[0].type.tensor_type.shape.dim[3].dim_value
    graph.node.insert(0, helper.make_node("Transpose", [NCNN_INPUT], [old_in], perm=[0, 2, 3, 1], name="nchw_in"))
    graph.node.append(helper.make_node("Transpose", [old_out], [NCNN_OUTPUT], perm=[0, 3, 1, 2], name="nchw_out"))
    del graph.input[:], graph.output[:]
    graph.input.append(helper.make_tensor_value_info(NCNN_INPUT, TensorProto.FLOAT, [1, 3, height, width]))
    graph.output.append(helper.make_tensor_value_info(NCNN_OUTPUT, TensorProto.FLOAT, [1, n_classes, height, width]))
    onnx.save(model, dst)


def to_ncnn(onnx_path, param_path, height, width):
    """pnnx on an NHWC ONNX file -> `param_path` and the .bin beside it (float32 weights).

    Raises RuntimeError with pnnx's or ncnn's reason when pnnx fails or leaves an op that ncnn has no
    layer for (pnnx then writes it under its PyTorch name, e.g. `torch.tile`, and says "ignore ...").
    """
    from utils.model_files import weights_path
    ncnn = require("ncnn", "an NCNN export")
    binary = pnnx_executable()
    work = tempfile.mkdtemp(prefix="pnnx-")
    try:
        nchw = os.path.join(work, "model.onnx")
        nchw_onnx(onnx_path, nchw, height, width)
        # pnnx writes its own intermediate files beside the input unless told where: keep them in `work`.
        outputs = {key: os.path.join(work, name) for key, name in [
            ("pnnxparam", "m.pnnx.param"), ("pnnxbin", "m.pnnx.bin"), ("pnnxpy", "m_pnnx.py"),
            ("pnnxonnx", "m.pnnx.onnx"), ("ncnnparam", "m.ncnn.param"), ("ncnnbin", "m.ncnn.bin"),
            ("ncnnpy", "m_ncnn.py")]}
        command = [binary, nchw, f"inputshape=[1,3,{height},{width}]", "fp16=0", "device=cpu",
                   *(f"{key}={value}" for key, value in outputs.items())]
        done = subprocess.run(command, capture_output=True, text=True, cwd=work)
        log = (done.stdout + done.stderr).splitlines()
        if done.returncode != 0 or not os.path.isfile(outputs["ncnnparam"]):
            reason = next((line for line in reversed(log) if line.strip()), f"exit status {done.returncode}")
            raise RuntimeError(f"pnnx failed: {reason.strip()[:200]}")
        missing = unknown_layers(outputs["ncnnparam"], ncnn)
        if missing:
            said = next((line.strip() for line in log if line.startswith("ignore") and missing[0] in line), "")
            raise RuntimeError(f"ncnn has no layer for {', '.join(missing)}" + (f" (pnnx: {said})" if said else ""))
        shutil.move(outputs["ncnnparam"], param_path)
        shutil.move(outputs["ncnnbin"], weights_path(param_path))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unknown_layers(param_path, ncnn):
    """The layer types of an NCNN .param that this ncnn build cannot create, in order of appearance."""
    with open(param_path) as handle:
        lines = handle.read().splitlines()[2:]
    types = dict.fromkeys(line.split()[0] for line in lines if line.split())
    return [t for t in types if ncnn.layer_to_index(t) < 0]
