"""Inference speed on this machine: Keras predict vs onnxruntime, OpenVINO and NCNN, batch 1 and 8.

    python tools/benchmark_inference.py --model_name unet --height 224 --width 224
    python tools/benchmark_inference.py --weights_path weights/exp1/unet --batch_sizes 1,8

Times forward passes of already-preprocessed float32 batches (no decoding),
after warm-up, for at least --seconds per case, and prints images/s. A
--model_name is built with random weights (speed does not depend on them).
The exports are written to a temporary folder with tools/export.py's code and
run through utils.inference's Predictor, as test.py runs them. NCNN's model
has a fixed batch of 1, so it is timed at batch 1 only ("-" elsewhere).
OpenVINO and NCNN need requirements-deploy.txt; a runtime that is not
installed is left out with a note.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402  (also quiets TensorFlow's C++ logging)
from utils.errors import UserError, run_cli  # noqa: E402


RUNTIMES = ("keras", "onnxruntime", "openvino", "ncnn")
EXPORT_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "ncnn": "ncnn"}
BATCH_ONE_ONLY = ("ncnn",)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name", default="unet")
    p.add_argument("--weights_path", default=None, help="a .keras checkpoint or run folder (overrides --model_name)")
    p.add_argument("--height", type=positive_int, default=224)
    p.add_argument("--width", type=positive_int, default=224)
    p.add_argument("--n_classes", type=positive_int, default=2)
    p.add_argument("--batch_sizes", default="1,8")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"comma-separated, of {', '.join(RUNTIMES)}")
    p.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per case")
    return p.parse_args(argv)


def images_per_second(run, batch, seconds):
    """Throughput of `run(batch)` after two warm-up calls, timed over >= `seconds` and >= 3 calls."""
    for _ in range(2):
        run(batch)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        run(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - start)


def available(runtimes):
    """(runtimes whose packages are installed, {runtime: why it is left out})."""
    import importlib.util
    modules = {"keras": "keras", "onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn"}
    needs = {r: [modules[r]] + (["pnnx"] if r == "ncnn" else []) for r in runtimes}  # pnnx converts for ncnn
    missing = {r: "not installed (pip install -r requirements-deploy.txt)" for r in runtimes
               if any(importlib.util.find_spec(module) is None for module in needs[r])}
    return [r for r in runtimes if r not in missing], missing


def inference_rates(model, batch_sizes, seconds, runtimes=("keras", "onnxruntime")):
    """{(runtime, batch_size): images/s} for a built Keras model (NCNN at batch 1 only)."""
    import numpy as np

    from tools.export import FORMATS, export_model
    from utils.inference import keras_predictor, load_predictor
    height, width = model.input_shape[1:3]
    n_classes = model.output_shape[-1]
    model(np.zeros((1, height, width, 3), np.float32), training=False)  # the exporter needs a called model
    runners = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        for runtime in runtimes:
            if runtime == "keras":
                runners[runtime] = keras_predictor(model)
                continue
            fmt = EXPORT_FORMAT[runtime]
            path = os.path.join(folder, "model" + FORMATS[fmt][1])
            export_model(model, fmt, path)
            runners[runtime] = load_predictor(path, flag="", settings=dict(
                input_height=height, input_width=width, n_classes=n_classes))
        rng = np.random.default_rng(0)
        rates = {}
        for batch_size in batch_sizes:
            batch = rng.random((batch_size, height, width, 3), dtype=np.float32)
            for runtime, run in runners.items():
                if batch_size == 1 or runtime not in BATCH_ONE_ONLY:
                    rates[runtime, batch_size] = images_per_second(run, batch, seconds)
    return rates


def main(argv=None):
    args = parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        raise UserError(f"--batch_sizes {args.batch_sizes}: give positive integers, e.g. 1,8")

    from utils.inference import load_keras_model
    if args.weights_path:
        from utils.run import best_checkpoint
        if not os.path.exists(args.weights_path):
            raise UserError(f"--weights_path {args.weights_path}: no such file or folder")
        path = best_checkpoint(args.weights_path) if os.path.isdir(args.weights_path) else args.weights_path
        model, label = load_keras_model(path), path
    else:
        from Models import build_model
        model = build_model(args.model_name, args.n_classes, args.height, args.width)
        label = f"{args.model_name} (random weights)"
    runtimes = [r for r in args.runtimes.split(",") if r]
    if not runtimes or any(r not in RUNTIMES for r in runtimes):
        raise UserError(f"--runtimes {args.runtimes}: choose from {', '.join(RUNTIMES)}")
    runtimes, missing = available(runtimes)
    height, width = model.input_shape[1:3]
    rates = inference_rates(model, batch_sizes, args.seconds, runtimes)
    print(f"{label}, input {height}x{width}, {os.cpu_count()} CPU cores; images/s")
    print(f"{'batch':>5} " + " ".join(f"{r:>12}" for r in runtimes))
    for batch_size in batch_sizes:
        cells = [f"{rates[r, batch_size]:>12.2f}" if (r, batch_size) in rates else f"{'-':>12}" for r in runtimes]
        print(f"{batch_size:>5} " + " ".join(cells))
    if "keras" in runtimes:
        for batch_size in batch_sizes:
            ups = [f"{r} {rates[r, batch_size] / rates['keras', batch_size]:.2f}x" for r in runtimes
                   if r != "keras" and (r, batch_size) in rates]
            print(f"speed-up over keras at batch {batch_size}: " + (", ".join(ups) or "-"))
    if any(r in BATCH_ONE_ONLY for r in runtimes) and any(b > 1 for b in batch_sizes):
        print("ncnn: '-' above batch 1 (the NCNN model has a fixed batch of 1)")
    for runtime, why in missing.items():
        print(f"{runtime}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
