"""The README's quality tables, by a fixed protocol: train, then score on the test split.

    python tools/benchmark_quality.py --table models                  # every model on bbufdataset, 50 epochs
    python tools/benchmark_quality.py --table losses                  # every loss with unet on membrane
    python tools/benchmark_quality.py --table models --epochs 5 --size 128 --models unet,enet   # a shorter protocol
    python tools/benchmark_quality.py --table native --minutes 10     # resize vs crops + slide, same time per row

Each row runs `python train.py ...` and `python test.py --mIOU true` in
subprocesses (exactly the commands a user runs, recorded in the row) and
reports test mIoU, mDice, pixel accuracy (aAcc) and per-class IoU, with the
commit, epochs, wall time and machine. Runs go to a new folder under
--output_dir; the markdown table and JSON are written there and printed.

Training runs with `--validate false`: neither data set has a val split, and
validating on the test split (the original's habit) would pick each row's
checkpoint by its test score. The checkpoint scored is the best by training
mIoU. The models table prints the seed's published test mIoU (its old
README: 50 epochs at 224x224) beside ours where it published one.

The native table (full resolution, issue #13) gives every row the same
wall-clock training budget (`train.py --max_minutes`, with --epochs high
enough never to end first): unet on membrane (512x512) at 128x128, once
squeezed (`--resize_op 1`, test.py resizes) and once on crops
(`--resize_op 3`, test.py slides a 128x128 window over each 512x512 slice);
then --native_model on ccp (8 classes, every image a different size) on
crops, scored by sliding window at each image's own size.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOLS = {  # table -> (data set, the varied flag)
    "models": ("bbufdataset", "--model_name"),
    "losses": ("membrane", "--loss"),
    "native": ("membrane", "--resize_op"),  # and a ccp row
}
NATIVE_EPOCHS = 100000  # --max_minutes ends these runs
# weighted_ce with its default equal weights is plain ce; its row uses the weights it exists for.
LOSS_FLAGS = {"weighted_ce": ["--class_weights", "auto"]}
# The seed's older README: test mIoU on its 2-class parts set after 50 epochs (SPEC.md, "Published numbers").
SEED_MIOU = {"enet": 0.91, "fcn8": 0.93, "unet": 0.94, "segnet": 0.94, "icnet": 0.94, "pspnet": 0.94,
             "mobilenet_unet": 0.94, "mobilenet_fcn8": 0.94}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, choices=sorted(PROTOCOLS))
    p.add_argument("--data_root", default="../shared/datasets", help="relative paths: from the repository root")
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--size", type=positive_int, default=224, help="input height and width")
    p.add_argument("--models", default="", help="models table: comma-separated names (default: all)")
    p.add_argument("--losses", default="", help="losses table: comma-separated names (default: all)")
    p.add_argument("--minutes", type=float, default=10.0, help="native table: training minutes per row")
    p.add_argument("--native_model", default="mobilenet_unet", help="native table: the model of the ccp row")
    p.add_argument("--native_size", type=positive_int, default=256, help="native table: crop size of the ccp row")
    p.add_argument("--crops_per_image", default="auto", help="native table: train.py --crops_per_image")
    p.add_argument("--rows", default="", help="native table: comma-separated row numbers to run (default: all)")
    p.add_argument("--output_dir", default="weights/quality", help="runs and tables go to a new folder here")
    return p.parse_args(argv)


def native_rows(args):
    """(label, data set, train.py flags) of the native table."""
    budget = ["--epochs", NATIVE_EPOCHS, "--max_minutes", args.minutes]
    size = ["--input_height", args.size, "--input_width", args.size]
    crops = ["--resize_op", 3, "--crops_per_image", args.crops_per_image]
    rows = [("membrane unet, resize (--resize_op 1)", "membrane",
             ["--model_name", "unet", *size, "--resize_op", 1, *budget]),
            ("membrane unet, crops + slide (--resize_op 3)", "membrane", ["--model_name", "unet", *size, *crops,
                                                                          *budget]),
            (f"ccp {args.native_model}, crops + slide (--resize_op 3)", "ccp",
             ["--model_name", args.native_model, "--input_height", args.native_size, "--input_width",
              args.native_size, *crops, "--n_classes", 8, *budget])]
    try:
        wanted = [int(n) for n in args.rows.split(",") if n.strip()] or list(range(1, len(rows) + 1))
    except ValueError:
        raise UserError(f"--rows {args.rows!r}: expected comma-separated row numbers 1..{len(rows)}") from None
    for number in wanted:
        if not 1 <= number <= len(rows):
            raise UserError(f"--rows {number}: the native table has rows 1..{len(rows)}")
        yield rows[number - 1]


def rows_to_run(args):
    """(label, data set, extra train.py flags) per row."""
    if args.table == "native":
        yield from native_rows(args)
        return
    dataset = PROTOCOLS[args.table][0]
    if args.table == "models":
        from Models import MODELS
        from tools.model_summary import VARIANTS, legal_size
        names = [n for n in args.models.split(",") if n] or list(MODELS)
        for name in names:
            if name not in MODELS:
                raise UserError(f"--models {name} unknown; valid names: {', '.join(MODELS)}")
            for options, label in VARIANTS.get(name, [({}, name)]):
                height, width = legal_size(MODELS[name], args.size, args.size, options)
                flags = ["--model_name", name, "--input_height", height, "--input_width", width]
                for key, value in options.items():
                    flags += [f"--{key}", value]
                yield label, dataset, flags
    else:
        from losses import LOSSES
        names = [n for n in args.losses.split(",") if n] or list(LOSSES)
        for name in names:
            if name not in LOSSES:
                raise UserError(f"--losses {name} unknown; valid names: {', '.join(LOSSES)}")
            extra = LOSS_FLAGS.get(name, [])
            yield " ".join([name, *extra]), dataset, ["--model_name", "unet", "--loss", name, "--input_height",
                                                      args.size, "--input_width", args.size, *extra]


def run_row(label, flags, args, dataset, out_dir, index):
    exp = f"row{index:02d}"
    epochs = [] if "--epochs" in flags else ["--epochs", args.epochs]
    train = ["python", "train.py", "--data_root", args.data_root, "--dataset_name", dataset,
             *epochs, "--validate", "false", "--train_save_path", out_dir, "--exp_name", exp, *flags]
    train = [str(v) for v in train]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *train[1:]], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        return {"label": label, "train_command": " ".join(train), "error": result.stderr.strip()[-300:]}
    model_name = flags[flags.index("--model_name") + 1]
    run_dir = os.path.join(out_dir, exp, model_name)
    masks = os.path.join(out_dir, exp, "masks")
    test = ["python", "test.py", "--weights_path", run_dir, "--output_path", masks, "--mIOU", "true"]
    result = subprocess.run([sys.executable, *test[1:]], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"label": label, "train_command": " ".join(train), "error": result.stderr.strip()[-300:]}
    with open(os.path.join(masks, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    with open(os.path.join(run_dir, "state.json"), encoding="utf-8") as handle:
        epochs = json.load(handle)["epoch"]
    return {"epochs_done": epochs, "label": label, "train_command": " ".join(train), "test_command": " ".join(test),
            "mIoU": metrics["mIoU"], "mDice": metrics["mDice"], "aAcc": metrics["aAcc"],
            "per_class_iou": {c["name"]: c["IoU"] for c in metrics["per_class"]}, "wall_s": wall}


def main(argv=None):
    args = parse_args(argv)
    from utils.paths import new_output_dir
    rows_spec = list(rows_to_run(args))
    for dataset in sorted({row[1] for row in rows_spec}):
        if not os.path.isdir(os.path.join(ROOT, args.data_root, dataset)):
            raise UserError(f"--data_root {args.data_root}: no {dataset}/ data set there")
    out_dir = new_output_dir(os.path.join(args.output_dir, args.table))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"
    seed_column = args.table == "models"
    columns = ["name", "test mIoU", *(["seed's mIoU"] if seed_column else []), "mDice", "aAcc", "per-class IoU",
               "epochs", "input", "wall", "command"]
    header = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    print("\n".join(header), flush=True)
    rows, lines = [], []
    for index, (label, dataset, flags) in enumerate(rows_spec):
        row = run_row(label, flags, args, dataset, out_dir, index)
        epochs = row.get("epochs_done", args.epochs) if args.table == "native" else args.epochs
        row.update(epochs=epochs, commit=commit, machine=machine, dataset=dataset)
        rows.append(row)
        size = f"{flags[flags.index('--input_height') + 1]}x{flags[flags.index('--input_width') + 1]}"
        seed = SEED_MIOU.get(flags[flags.index("--model_name") + 1])
        seed_cell = ([f"{seed:.2f}" if seed is not None else "-"] if seed_column else [])
        if "error" in row:
            cells = [f"`{label}`", "failed: " + (row["error"].splitlines() or ["?"])[-1][:80], *seed_cell,
                     "", "", "", epochs, size, "", ""]
        else:
            per_class = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -"
                                  for k, v in row["per_class_iou"].items())
            cells = [f"`{label}`", f"{row['mIoU']:.4f}", *seed_cell, f"{row['mDice']:.4f}", f"{row['aAcc']:.4f}",
                     per_class, epochs, size, f"{row['wall_s'] / 60:.1f} min", f"`{row['train_command']}`"]
        line = "| " + " | ".join(map(str, cells)) + " |"
        lines.append(line)
        print(line, flush=True)
        with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    datasets = ", ".join(sorted({row[1] for row in rows_spec}))
    footer = (f"\ncommit {commit}; {machine}; data set {datasets}; train.py --validate false (checkpoint: best "
              "training mIoU), then test.py --mIOU true on test_image/test_label (its inference mode from the "
              "run: resize, or slide for --resize_op 3); wall = train + test."
              + (f" Every row trains for --max_minutes {args.minutes:g} (epochs: those done in that time)."
                 if args.table == "native" else "")
              + (" seed's mIoU: its published 50-epoch 224x224 number, not re-run here." if seed_column else ""))
    print(footer)
    with open(os.path.join(out_dir, "table.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(header + lines) + "\n" + footer + "\n")
    print(f"table: {os.path.join(out_dir, 'table.md')}")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
