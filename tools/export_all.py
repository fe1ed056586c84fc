"""Export every registered model to ONNX, SavedModel, TFLite, OpenVINO and NCNN and check each
against Keras.

    python tools/export_all.py [--height 128 --width 128] [--models unet,hrnet] [--formats onnx,ncnn]

    python tools/export_all.py --runs weights/zoo      # the best checkpoint of every run under a folder

Each model (pspnet and deeplab_v3+ once per backbone) is built with random
weights at its smallest legal size at least --height x --width (or, with
--runs, loaded from each train.py run's best checkpoint), and exported with
the same code as tools/export.py; the table gives the largest |export -
keras| probability over two synthetic images, or why the export failed (a
converter's or runtime's reason, e.g. an op NCNN has no layer for; a runtime
that is not installed says so: requirements-deploy.txt). As in
tools/export.py, a model whose architecture builds at (None, None) is
exported with a dynamic height and width (every format but NCNN; "input"
says "(dynamic)") and checked at a second legal size as well.

Random weights are a harsh test: a net without normalisation after its
recurrent or cascaded branches (r2unet, icnet) can start with huge logits,
where float rounding moves saturated probabilities; trained checkpoints
(--runs) show what a user gets. The README's export table is this output.
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
    p.add_argument("--formats", default="onnx,savedmodel,tflite,openvino,ncnn")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--runs", default=None, help="export the best checkpoint of every train.py run under this folder")
    return p.parse_args(argv)


def export_row(model, formats, height, width, atol, folder, model_name=None, options=None):
    """(whether the architecture builds for a dynamic height and width, {format: (ok, text)}) for one
    built model.

    With `model_name`, as in tools/export.py: the architecture built at (None, None) holding the
    model's weights is exported where it builds (every format but NCNN) and checked at a second legal
    size too; a dynamic export the converter refuses falls back to the fixed one, and the cell says so.
    """
    import keras

    from tools.export import (FORMATS, _remove, check_parity, dynamic_model, export_model, other_size_case,
                              output_files, parity_batch)
    from utils.inference import main_output_model
    model = main_output_model(model)  # an auxiliary training head is neither exported nor compared
    batch = parity_batch(height, width, "divide", seed=0)
    expected = keras.ops.convert_to_numpy(model(batch, training=False)).astype("float32")
    built, rule, _ = dynamic_model(model, model_name, options) if model_name else (None, None, None)
    dynamic = None  # (model, its size rule, the other-size parity cases) of the dynamic attempt
    if built is not None:
        other = other_size_case(model, model_name, options, rule, "divide", seed=1)
        built(other[1][:1], training=False)  # built-and-called, as the ONNX exporter requires
        dynamic = (built, rule, [other])
    cells = {}
    folder = tempfile.mkdtemp(dir=folder)  # one per row: two runs of one model share a model name
    for fmt in formats:
        path = os.path.join(folder, model.name + FORMATS[fmt][1])
        attempts = [dynamic] if dynamic is not None and fmt != "ncnn" else []
        note = ""
        for exported, rule, others in attempts + [(model, None, [])]:
            try:
                export_model(exported, fmt, path)
                diff, _ = check_parity(expected, path, batch, rule, others)
            except Exception as exc:  # report the converter's reason in the table, go on with the next
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                if rule is not None:
                    note = f" (fixed: dynamic fails: {reason[:80]})"
                    for leftover in output_files(path, fmt):
                        _remove(leftover)
                    continue
                cells[fmt] = (False, f"fails: {reason[:120]}")
                break
            cells[fmt] = (diff <= atol, f"{diff:.1e}" + ("" if diff <= atol else f" > {atol:g}") + note)
            break
    return dynamic is not None, cells


def random_models(names, height, width, n_classes):
    """(label, model, name, options) per registered name and option set, with random weights."""
    import keras

    from Models import MODELS
    from tools.model_summary import VARIANTS, legal_size
    for name in names:
        for options, label in VARIANTS.get(name, [({}, name)]):
            h, w = legal_size(MODELS[name], height, width, options)
            keras.backend.clear_session()
            yield label, MODELS[name].build(n_classes, h, w, **options), name, options


def trained_models(root):
    """(label, model, name, options) for the best checkpoint of every train.py run (a folder with
    state.json) under root; name is None where the run config does not say."""
    import keras

    from utils.inference import load_keras_model
    from utils.run import best_checkpoint, find_run_config
    runs = sorted(dirpath for dirpath, _, files in os.walk(root, followlinks=True) if "state.json" in files)
    if not runs:
        raise UserError(f"--runs {root}: no train.py run folders (with state.json) found")
    for run_dir in runs:
        config = find_run_config(run_dir) or {}
        options = config.get("model_options") or {}
        label = config.get("model_name", os.path.basename(run_dir)) + (
            f" (backbone {options['backbone']})" if options.get("backbone") else "")
        keras.backend.clear_session()
        yield label, load_keras_model(best_checkpoint(run_dir)), config.get("model_name"), options


def main(argv=None):
    args = parse_args(argv)
    from Models import MODELS
    from tools.export import FORMATS

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
    models = trained_models(args.runs) if args.runs else random_models(names, args.height, args.width,
                                                                        args.n_classes)
    with tempfile.TemporaryDirectory(prefix="export_all-") as folder:
        for label, model, name, options in models:
            height, width = model.input_shape[1:3]
            start = time.perf_counter()
            dynamic, cells = export_row(model, formats, height, width, args.atol, folder, name, options)
            failures += sum(not ok for ok, _ in cells.values())
            size = f"{height}x{width}" + (" (dynamic)" if dynamic else "")
            print(f"| `{label}` | {size} | " + " | ".join(cells[f][1] for f in formats)
                  + f" | {time.perf_counter() - start:.0f} |", flush=True)
    weights = f"best checkpoints of the runs under {args.runs}" if args.runs else "random weights"
    print(f"\n{weights}, 2 synthetic images; pass: max abs diff <= {args.atol:g}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
