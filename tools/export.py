"""Export a trained model to ONNX, SavedModel or TFLite, and prove the export equals the Keras model.

    python tools/export.py --weights_path weights/exp1/unet --format onnx
    python tools/export.py --weights_path CKPT.keras --format tflite --output deploy/unet.tflite

Writes the exported model (default: beside the checkpoint, `<checkpoint
stem>.onnx`, `<stem>_savedmodel/` or `<stem>.tflite`) and `<output>.json`
with the input/output names and shapes and the preprocessing the model
expects (input size, image_init, resize_op, channel order, class names).
Then it runs the export (onnxruntime, TensorFlow, the TFLite interpreter) and
the Keras model on the same batch of preprocessed images and prints the
largest absolute difference of their probabilities; above --atol (1e-4) it
exits 1. The batch dimension stays dynamic in all three formats.

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

# CLI format -> (keras export format, output suffix)
FORMATS = {"onnx": ("onnx", ".onnx"), "savedmodel": ("tf_saved_model", "_savedmodel"),
           "tflite": ("litert", ".tflite")}
PARITY_BATCH = 2  # more than one image: proves the batch dimension is really dynamic
# The settings of the run config that a deployment needs.
PREPROCESSING_KEYS = ("model_name", "input_height", "input_width", "n_classes", "image_init", "resize_op",
                      "ignore_label", "class_names", "data_root", "dataset_name", "backbone")


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
    """Write `model` in `fmt` to `path` with Keras' own exporters (dynamic batch dimension)."""
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


def check_parity(expected, exported_path, batch):
    """(largest |export - keras| over `batch`, the export's Predictor), given Keras' `expected` output.

    The Predictor also names the export's input and output tensors for the settings file.
    """
    import numpy as np

    from utils.inference import load_predictor
    try:
        predictor = load_predictor(exported_path, flag="")
        actual = predictor(batch)
    except Exception as exc:  # the runtime rejects what the converter wrote: report it as a failed check
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RuntimeError(f"the export does not load or run in its runtime: {reason[:300]}") from None
    if actual.shape != expected.shape:
        raise RuntimeError(f"{exported_path} returned shape {actual.shape}, the Keras model {expected.shape}")
    return float(np.abs(actual - expected).max()), predictor


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


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
    if os.path.exists(output) or os.path.exists(sidecar_path(output)):
        raise UserError(f"--output {output}: already exists; choose a new path (exports never overwrite)")
    if args.format != "savedmodel" and not output.endswith(FORMATS[args.format][1]):
        raise UserError(f"--output {output}: a {args.format} file must end with {FORMATS[args.format][1]}")
    if not args.atol > 0:
        raise UserError(f"--atol {args.atol}: must be > 0")

    model = load_keras_model(checkpoint)
    height, width = model.input_shape[1:3]
    image_init = config.get("image_init", "divide")
    channel_order = str(config.get("channel_order", "bgr")).upper()  # RGB for --encoder_weights MobileNet/Xception
    batch = parity_batch(height, width, image_init, args.seed)
    # A direct call also marks a freshly loaded model as built-and-called, which the ONNX exporter requires.
    expected = keras.ops.convert_to_numpy(model(batch, training=False)).astype("float32")

    # === Export under a temporary name, check, then move into place ===
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    head, tail = os.path.split(os.path.abspath(output))
    tmp = os.path.join(head, f".tmp-{os.getpid()}-{tail}")
    try:
        start = time.perf_counter()
        try:
            export_model(model, args.format, tmp, args.opset)
        except Exception as exc:  # a converter's refusal: say which model and format, keep the reason
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SystemExit(f"error: {checkpoint}: {args.format} export failed: {reason}") from None
        export_seconds = time.perf_counter() - start
        try:
            diff, exported = check_parity(expected, tmp, batch)
        except RuntimeError as exc:
            raise SystemExit(f"error: parity check failed: {exc}") from None
        input_name, output_name = exported.input_name, exported.output_name
        if not diff <= args.atol:
            raise SystemExit(f"error: parity check failed: max |{args.format} - keras| = {diff:.3g} "
                             f"> --atol {args.atol:g} ({checkpoint})")
        os.replace(tmp, output)
    finally:
        _remove(tmp)

    n_classes = model.output_shape[-1]
    meta = {key: config[key] for key in PREPROCESSING_KEYS if key in config}
    meta.update(
        format=args.format, source_checkpoint=os.path.abspath(checkpoint),
        input_name=input_name, output_name=output_name,
        input_shape=[None, height, width, 3], output_shape=[None, height, width, n_classes],
        input_height=height, input_width=width, n_classes=n_classes, image_init=image_init,
        resize_op=config.get("resize_op", 1), channel_order=channel_order, layout="NHWC", input_dtype="float32",
        output="softmax probabilities, float32", opset=args.opset, max_abs_diff=diff, atol=args.atol,
    )
    write_json_atomic(sidecar_path(output), meta)
    print(f"exported {checkpoint} -> {output} ({args.format}, {export_seconds:.1f} s)")
    print(f"input {input_name!r} (N, {height}, {width}, 3) float32 {channel_order}, image_init={image_init}; "
          f"output {output_name!r} (N, {height}, {width}, {n_classes}) probabilities")
    print(f"parity: max |{args.format} - keras| = {diff:.3g} over {PARITY_BATCH} images (atol {args.atol:g}): ok")
    print(f"settings: {sidecar_path(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
