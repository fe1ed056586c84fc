"""Export a trained model to ONNX, SavedModel, TFLite, OpenVINO or NCNN, and prove the export equals
the Keras model.

    python tools/export.py --weights_path weights/exp1/unet --format onnx
    python tools/export.py --weights_path CKPT.keras --format tflite --output deploy/unet.tflite
    python tools/export.py --weights_path CKPT.keras --format openvino     # CKPT.xml + CKPT.bin
    python tools/export.py --weights_path CKPT.keras --format ncnn         # CKPT.ncnn.param + .ncnn.bin

Writes the exported model (default: beside the checkpoint, `<checkpoint
stem>.onnx`, `<stem>_savedmodel/`, `<stem>.tflite`, `<stem>.xml` + `.bin` or
`<stem>.ncnn.param` + `.ncnn.bin`) and `<output>.json` with the input/output
names and shapes and the preprocessing the model expects (input size,
image_init, resize_op, channel order, class names). Then it runs the export
(onnxruntime, TensorFlow, the TFLite interpreter, OpenVINO, ncnn) and the
Keras model on the same batch of preprocessed images and prints the largest
absolute difference of their probabilities; above --atol (1e-4) it exits 1.
The batch dimension stays dynamic except in NCNN, whose model has a fixed
batch of 1, a fixed input size and NCHW layout (utils/deploy_export.py says
why); OpenVINO and NCNN need requirements-deploy.txt.

Height and width are dynamic too (ONNX, SavedModel, TFLite, OpenVINO) when
the run config names a model whose architecture builds at (None, None): that
build, holding the checkpoint's weights, is what is exported, and the parity
check runs at the training size and at a second legal size. icnet, pspnet and
deeplab_v3+ resize to sizes computed from the input size and export at the
training size, as before. The settings file says which (`dynamic_size`) and
carries the size rule (`size_multiple`, `size_minimum`), so a predictor
checks sizes without the model registry; `input_height`/`input_width` stay
the training size, slide's window.

An existing output is never overwritten: the export is written under a
temporary name and renamed into place only when it has passed the check.
"""
import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402  (also quiets TensorFlow's C++ logging)
from utils.errors import UserError, run_cli  # noqa: E402

# CLI format -> (keras export format, default output suffix); OpenVINO and NCNN convert the ONNX export.
FORMATS = {"onnx": ("onnx", ".onnx"), "savedmodel": ("tf_saved_model", "_savedmodel"),
           "tflite": ("litert", ".tflite"), "openvino": ("onnx", ".xml"), "ncnn": ("onnx", ".ncnn.param")}
# What an --output must end with, where that differs from the default suffix.
OUTPUT_SUFFIX = {"ncnn": ".param"}
TWO_FILE_FORMATS = ("openvino", "ncnn")  # the graph file plus its .bin beside it
PARITY_BATCH = 2  # more than one image: proves the batch dimension is really dynamic
# The settings of the run config that a deployment needs.
PREPROCESSING_KEYS = ("model_name", "input_height", "input_width", "n_classes", "image_init", "resize_op",
                      "ignore_label", "class_names", "data_root", "dataset_name", "backbone",
                      "inference_mode", "stride")  # test.py slides a crop-trained export as the run did


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights_path", required=True, help="a .keras checkpoint or a train.py run folder")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--output", default=None, help="output path (default: beside the checkpoint)")
    p.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: tf2onnx's)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |export - keras| probability")
    p.add_argument("--seed", type=int, default=0, help="seeds the synthetic parity images")
    return p.parse_args(argv)


# === Export ===

def default_output(checkpoint, fmt):
    return os.path.splitext(checkpoint)[0] + FORMATS[fmt][1]


def export_model(model, fmt, path, opset=None):
    """Write `model` in `fmt` to `path` (with its .bin beside it for OpenVINO and NCNN).

    ONNX, SavedModel and TFLite come from Keras' own exporters; OpenVINO and NCNN from their projects'
    converters applied to the ONNX export (utils/deploy_export.py).
    """
    if fmt in TWO_FILE_FORMATS:
        _convert_from_onnx(model, fmt, path, opset)
        return
    import contextlib
    import io
    import warnings

    keras_format, _ = FORMATS[fmt]
    kwargs = {"opset_version": opset} if fmt == "onnx" and opset else {}
    # The TFLite path prints its intermediate SavedModel's signature even with verbose=False, and
    # Keras' tf2onnx shim warns about numpy 2: neither is the user's business.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)
        model.export(path, format=keras_format, verbose=False, **kwargs)


def _convert_from_onnx(model, fmt, path, opset):
    import tempfile

    from utils import deploy_export
    deploy_export.check_runtime(fmt)  # before the (slow) ONNX export
    if fmt == "ncnn":
        model = deploy_export.ncnn_ready(model)
    with tempfile.TemporaryDirectory(prefix="export-onnx-") as work:
        onnx_path = os.path.join(work, "model.onnx")
        export_model(model, "onnx", onnx_path, opset)
        if fmt == "openvino":
            deploy_export.to_openvino(onnx_path, path)
        else:
            height, width = model.input_shape[1:3]
            deploy_export.to_ncnn(onnx_path, path, height, width)


def parity_batch(height, width, image_init, seed, n=PARITY_BATCH):
    """`n` synthetic images through the deployment preprocessing: smooth blobs plus noise, not flat
    noise alone, so the model's activations look like those of a real image."""
    import cv2
    import numpy as np

    from utils.image import normalize
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3)).astype(np.uint8)
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        image = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
        images.append(normalize(image, image_init))
    return np.stack(images).astype(np.float32)


def check_parity(expected, exported_path, batch, rule=None, others=()):
    """(largest |export - keras| over `batch`, the export's Predictor), given Keras' `expected` output.

    A dynamic-size export (`rule`: its size rule) is also run on each (expected, batch) of `others`,
    at that batch's size, through the same session. The Predictor also names the export's input and
    output tensors for the settings file.
    """
    import numpy as np

    from utils.inference import load_predictor
    # NCNN's .param does not record the input size: give what the settings file will say.
    settings = dict(input_height=batch.shape[1], input_width=batch.shape[2], n_classes=expected.shape[-1])
    if rule is not None:
        settings.update(size_settings(rule, dynamic=True))
    diff = 0.0
    try:
        predictor = load_predictor(exported_path, flag="", settings=settings)
        for want, images in [(expected, batch), *others]:
            actual = predictor.at_size(*images.shape[1:3])(images)
            if actual.shape != want.shape:
                raise RuntimeError(f"it returned shape {actual.shape}, the Keras model {want.shape}")
            diff = max(diff, float(np.abs(actual - want).max()))
    except Exception as exc:  # the runtime rejects what the converter wrote: report it as a failed check
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = reason.replace(f"{exported_path}: ", "")  # the temporary path says nothing: keep the why
        raise RuntimeError(f"the export does not load or run in its runtime: {reason[:300]}") from None
    return diff, predictor


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def output_files(path, fmt):
    """The paths an export to `path` writes: the model, its .bin for OpenVINO and NCNN."""
    from utils.model_files import weights_path
    return [path, weights_path(path)] if fmt in TWO_FILE_FORMATS else [path]


# === Dynamic height and width ===

def dynamic_model(model, model_name, options=None, build=True):
    """(`model_name`'s architecture built for any height and width holding `model`'s weights or None,
    its size rule or None, why not dynamic or None). Architectures that resize to fixed sizes (icnet,
    pspnet, deeplab_v3+) cannot be built at (None, None); a weight list that does not fit means the
    run config names another architecture. `build=False` only finds the rule."""
    import Models
    from utils.inference import main_output_model
    try:
        entry = Models.get_entry(model_name)
        resolved = entry.resolve(options or {})
        rule = entry.size_rule(resolved)
    except UserError as exc:
        return None, None, str(exc)
    if not build:
        return None, rule, None
    model = main_output_model(model)
    try:
        built = main_output_model(entry.load_builder()(model.output_shape[-1], None, None, **resolved))
    except Exception as exc:  # the builder needs fixed sizes (a resize to a computed size, a pooling grid)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, rule, f"{model_name} cannot be built for a dynamic height and width ({reason[:120]})"
    source = model.get_weights()
    if [w.shape for w in source] != [w.shape for w in built.get_weights()]:
        return None, rule, f"the checkpoint's weights do not fit {model_name} {resolved} as its run config says"
    built.set_weights(source)
    return built, rule, None


def other_size(height, width, rule):
    """A second legal, non-square size for the parity check of a dynamic export."""
    return height + rule.multiple, width + 2 * rule.multiple


def other_size_case(model, model_name, options, rule, image_init, seed):
    """(expected, batch) at `other_size` for the parity check of a dynamic export. The reference is
    the architecture built at that size through the registry holding `model`'s weights (what a
    `.keras` checkpoint runs in `whole` mode), not the dynamic build itself, so a dynamic build that
    is right only at the training size fails the check."""
    import keras

    from utils.inference import rebuilt_model
    height, width = other_size(*model.input_shape[1:3], rule)
    batch = parity_batch(height, width, image_init, seed)
    reference = rebuilt_model(model, model_name, model.output_shape[-1], height, width, options)
    return keras.ops.convert_to_numpy(reference(batch, training=False)).astype("float32"), batch


def size_settings(rule, dynamic):
    """The settings-file keys of the size rule: what a predictor checks sizes with."""
    return dict(dynamic_size=bool(dynamic), size_multiple=rule.multiple, size_minimum=rule.smallest)


# === The settings file ===

def export_settings(fmt, config, checkpoint, shape, names, diff, args, rule=None, dynamic=False):
    """The `<output>.json` a deployment reads: the run's preprocessing settings, the export's tensors
    and shapes, and the parity it passed. `shape` is (height, width, n_classes), the training size
    (slide's window) even for a `dynamic` export, whose height and width may be any size `rule`
    allows; `names` the export's (input name, output name). Every key is set here, so a new one is a
    one-line addition."""
    height, width, n_classes = shape
    meta = {key: config[key] for key in PREPROCESSING_KEYS if key in config}
    if fmt == "ncnn":  # fixed batch of 1, NCHW (see utils/deploy_export.py)
        shapes = dict(input_shape=[1, 3, height, width], output_shape=[1, n_classes, height, width], layout="NCHW")
    else:
        shapes = dict(input_shape=[None, height, width, 3], output_shape=[None, height, width, n_classes],
                      layout="NHWC")
    meta.update(
        format=fmt, source_checkpoint=os.path.abspath(checkpoint), input_name=names[0], output_name=names[1],
        **shapes, input_height=height, input_width=width, n_classes=n_classes,
        image_init=config.get("image_init", "divide"), resize_op=config.get("resize_op", 1),
        # RGB for --encoder_weights MobileNet/Xception runs, BGR (OpenCV's order) otherwise
        channel_order=str(config.get("channel_order", "bgr")).upper(), input_dtype="float32",
        output="softmax probabilities, float32", opset=args.opset, max_abs_diff=diff, atol=args.atol,
        dynamic_size=bool(dynamic),
    )
    if rule is not None:  # a predictor checks sizes with these, without the model registry
        meta.update(size_settings(rule, dynamic))
    return meta


def main(argv=None):
    args = parse_args(argv)
    import keras

    from utils.inference import load_keras_model, sidecar_path
    from utils.model_files import check_model_file
    from utils.run import STATE_FILE, best_checkpoint, find_run_config, write_json_atomic

    if os.path.isdir(args.weights_path) and not os.path.isfile(os.path.join(args.weights_path, STATE_FILE)):
        raise UserError(f"--weights_path {args.weights_path}: a folder that is not a train.py run "
                        f"(no {STATE_FILE}); export takes a .keras checkpoint or a run folder")
    config = find_run_config(args.weights_path) or {}
    checkpoint = best_checkpoint(args.weights_path) if os.path.isdir(args.weights_path) else args.weights_path
    check_model_file(checkpoint, "--weights_path", accepted=("keras",))
    output = os.path.normpath(args.output or default_output(checkpoint, args.format))
    files = output_files(output, args.format)
    taken = next((path for path in files + [sidecar_path(output)] if os.path.exists(path)), None)
    if taken:
        raise UserError(f"--output {output}: {taken} already exists; choose a new path (exports never overwrite)")
    suffix = OUTPUT_SUFFIX.get(args.format, FORMATS[args.format][1])
    if args.format != "savedmodel" and not output.endswith(suffix):
        raise UserError(f"--output {output}: a {args.format} file must end with {suffix}")
    if not args.atol > 0:
        raise UserError(f"--atol {args.atol}: must be > 0")
    if args.format in TWO_FILE_FORMATS:  # a missing runtime is one line before Keras loads anything
        from utils.deploy_export import check_runtime
        check_runtime(args.format)

    model = load_keras_model(checkpoint)
    height, width = model.input_shape[1:3]
    n_classes = model.output_shape[-1]
    image_init = config.get("image_init", "divide")
    batch = parity_batch(height, width, image_init, args.seed)
    # A direct call also marks a freshly loaded model as built-and-called, which the ONNX exporter requires.
    expected = keras.ops.convert_to_numpy(model(batch, training=False)).astype("float32")
    dynamic, rule, fixed_why = None, None, "no run config (config.json) names the model"
    if config.get("model_name"):  # NCNN's converter takes one fixed input shape
        dynamic, rule, fixed_why = dynamic_model(model, config["model_name"], config.get("model_options"),
                                                 build=args.format != "ncnn")
    attempts = [(model, None, [])]
    if dynamic is not None:
        other = other_size_case(model, config["model_name"], config.get("model_options"), rule, image_init,
                                args.seed + 1)
        dynamic(other[1][:1], training=False)  # built-and-called, as the ONNX exporter requires
        attempts.insert(0, (dynamic, rule, [other]))
    elif args.format == "ncnn":
        fixed_why = "an NCNN model has a fixed input size"

    # === Export under a temporary name, check, then move into place ===
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    head, tail = os.path.split(os.path.abspath(output))
    tmp = os.path.join(head, f".tmp-{os.getpid()}-{tail}")
    try:
        # The dynamic-size attempt (if any) first: when its converter refuses it, or what it wrote does not
        # run or match in its runtime (e.g. a TFLite file needing TensorFlow "select" ops), the fixed one.
        for exported_model, dynamic_rule, others in attempts:
            start = time.perf_counter()
            try:
                export_model(exported_model, args.format, tmp, args.opset)
            except UserError:  # a missing runtime package: the one line that names requirements-deploy.txt
                raise
            except Exception as exc:  # a converter's refusal: say which model and format, keep the reason
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                for tmp_file in output_files(tmp, args.format):
                    _remove(tmp_file)
                if dynamic_rule is None:
                    raise SystemExit(f"error: {checkpoint}: {args.format} export failed: {reason}") from None
                fixed_why = f"the dynamic-size {args.format} export failed ({reason[:120]})"
                continue
            export_seconds = time.perf_counter() - start
            try:
                diff, exported = check_parity(expected, tmp, batch, dynamic_rule, others)
                problem = None if diff <= args.atol else (f"max |{args.format} - keras| = {diff:.3g} "
                                                          f"> --atol {args.atol:g} ({checkpoint})")
            except RuntimeError as exc:
                problem = str(exc)
            if problem is None:
                break
            for tmp_file in output_files(tmp, args.format):
                _remove(tmp_file)
            if dynamic_rule is None:
                raise SystemExit(f"error: parity check failed: {problem}") from None
            fixed_why = f"the dynamic-size {args.format} export failed its parity check ({problem[:160]})"
        for tmp_file, final in zip(output_files(tmp, args.format), files):
            os.replace(tmp_file, final)
    finally:
        for tmp_file in output_files(tmp, args.format):
            _remove(tmp_file)

    meta = export_settings(args.format, config, checkpoint, (height, width, n_classes),
                           (exported.input_name, exported.output_name), diff, args, rule, dynamic_rule is not None)
    write_json_atomic(sidecar_path(output), meta)
    print(f"exported {checkpoint} -> {' + '.join(files)} ({args.format}, {export_seconds:.1f} s)")
    layout = "(1, 3, {0}, {1})" if args.format == "ncnn" else "(N, {0}, {1}, 3)"
    out_layout = "(1, {2}, {0}, {1})" if args.format == "ncnn" else "(N, {0}, {1}, {2})"
    print(f"input {meta['input_name']!r} {layout.format(height, width)} float32 {meta['channel_order']}, "
          f"image_init={image_init}; output {meta['output_name']!r} {out_layout.format(height, width, n_classes)} "
          f"probabilities")
    if dynamic_rule is not None:
        print(f"dynamic height and width: any size with {dynamic_rule.describe()} (trained at {height}x{width})")
    else:
        print(f"fixed size {height}x{width}: {fixed_why}")
    sizes = " and ".join(f"{b.shape[1]}x{b.shape[2]}" for b in [batch] + [images for _, images in others])
    print(f"parity: max |{args.format} - keras| = {diff:.3g} over {PARITY_BATCH} images at {sizes} "
          f"(atol {args.atol:g}): ok")
    print(f"settings: {sidecar_path(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
