"""Inference speed on this machine: Keras predict vs onnxruntime, batch 1 and batch 8.

    python tools/benchmark_inference.py --model_name unet --height 224 --width 224
    python tools/benchmark_inference.py --weights_path weights/exp1/unet --batch_sizes 1,8

Times forward passes of already-preprocessed float32 batches (no decoding),
after warm-up, for at least --seconds per case, and prints images/s. A
--model_name is built with random weights (speed does not depend on them).
The ONNX model is exported to a temporary file with tools/export.py's code.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402  (also quiets TensorFlow's C++ logging)
from utils.errors import UserError, run_cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name", default="unet")
    p.add_argument("--weights_path", default=None, help="a .keras checkpoint or run folder (overrides --model_name)")
    p.add_argument("--height", type=positive_int, default=224)
    p.add_argument("--width", type=positive_int, default=224)
    p.add_argument("--n_classes", type=positive_int, default=2)
    p.add_argument("--batch_sizes", default="1,8")
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


def inference_rates(model, batch_sizes, seconds, runtimes=("keras", "onnxruntime")):
    """{(runtime, batch_size): images/s} for a built Keras model."""
    import numpy as np

    from tools.export import export_model
    from utils.inference import keras_predictor, onnx_predictor
    height, width = model.input_shape[1:3]
    runners = {}
    if "keras" in runtimes:
        runners["keras"] = keras_predictor(model)
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:
        if "onnxruntime" in runtimes:
            path = os.path.join(folder, "model.onnx")
            model(np.zeros((1, height, width, 3), np.float32), training=False)  # the exporter needs a called model
            export_model(model, "onnx", path)
            runners["onnxruntime"] = onnx_predictor(path)
        rng = np.random.default_rng(0)
        rates = {}
        for batch_size in batch_sizes:
            batch = rng.random((batch_size, height, width, 3), dtype=np.float32)
            for runtime, run in runners.items():
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
    height, width = model.input_shape[1:3]
    rates = inference_rates(model, batch_sizes, args.seconds)
    print(f"{label}, input {height}x{width}, {os.cpu_count()} CPU cores")
    print(f"{'batch':>5} {'keras img/s':>12} {'onnxruntime img/s':>18} {'speed-up':>9}")
    for batch_size in batch_sizes:
        keras_rate, onnx_rate = rates["keras", batch_size], rates["onnxruntime", batch_size]
        print(f"{batch_size:>5} {keras_rate:>12.2f} {onnx_rate:>18.2f} {onnx_rate / keras_rate:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
