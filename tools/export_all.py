"""Export every registered model to ONNX, SavedModel and TFLite and check each against Keras.

    python tools/export_all.py [--height 128 --width 128] [--models unet,hrnet] [--formats onnx,tflite]

Each model (pspnet and deeplab_v3+ once per backbone) is built with random
weights at its smallest legal size at least --height x --width, and exported
with the same code as tools/export.py; the table gives the largest
|export - keras| probability over two synthetic images, or why the export
failed. The README's export table is this script's output.
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
    p.add_argument("--height", type=positive_int, default=128)
    p.add_argument("--width", type=positive_int, default=128)
    p.add_argument("--n_classes", type=positive_int, default=2)
    p.add_argument("--models", default="", help="comma-separated names (default: all registered)")
    p.add_argument("--formats", default="onnx,savedmodel,tflite")
    p.add_argument("--atol", type=float, default=1e-4)
    return p.parse_args(argv)


def export_row(model, formats, height, width, atol, folder):
    """{format: (ok, text)} for one built model."""
    import keras

    from tools.export import FORMATS, check_parity, export_model, parity_batch
    batch = parity_batch(height, width, "divide", seed=0)
    expected = keras.ops.convert_to_numpy(model(batch, training=False)).astype("float32")
    cells = {}
    for fmt in formats:
        path = os.path.join(folder, model.name + FORMATS[fmt][1])
        try:
            export_model(model, fmt, path)
            diff = check_parity(expected, path, batch)
        except Exception as exc:  # report the converter's reason in the table, go on with the next
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            cells[fmt] = (False, f"fails: {reason[:120]}")
            continue
        cells[fmt] = (diff <= atol, f"{diff:.1e}" + ("" if diff <= atol else f" > {atol:g}"))
    return cells


def main(argv=None):
    args = parse_args(argv)
    import keras

    from Models import MODELS
    from tools.export import FORMATS
    from tools.model_summary import VARIANTS, legal_size

    names = [n for n in args.models.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise UserError(f"--models {', '.join(unknown)} unknown; valid names: {', '.join(MODELS)}")
    formats = [f for f in args.formats.split(",") if f]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"--formats {args.formats}: valid formats are {', '.join(FORMATS)}")

    print("| name | input | " + " | ".join(f"{f} max abs diff" for f in formats) + " | export s |")
    print("|---|---|" + "---|" * len(formats) + "---|")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="export_all-") as folder:
        for name in names:
            for options, label in VARIANTS.get(name, [({}, name)]):
                height, width = legal_size(MODELS[name], args.height, args.width, options)
                keras.backend.clear_session()
                model = MODELS[name](args.n_classes, height, width, **options)
                start = time.perf_counter()
                cells = export_row(model, formats, height, width, args.atol, folder)
                failures += sum(not ok for ok, _ in cells.values())
                print(f"| `{label}` | {height}x{width} | " + " | ".join(cells[f][1] for f in formats)
                      + f" | {time.perf_counter() - start:.0f} |", flush=True)
    print(f"\nrandom weights, {args.n_classes} classes, 2 synthetic images; pass: max abs diff <= {args.atol:g}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
