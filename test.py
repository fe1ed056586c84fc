"""Predict masks with a trained model and, optionally, score them (mIoU and friends).

    python test.py --weights_path weights/exp1/unet            # a run folder: its best checkpoint
    python test.py --weights_path CKPT.keras --test_images DIR --mIOU true --val_annotations LABELS

Writes `<output_path>/<stem>.png` class-index masks at each image's original
size, `color/<stem>.png` palette masks and `overlay/<stem>.jpg` overlays.
Settings the checkpoint's run already knows (model, input size, classes,
image_init, resize_op) come from its `config.json` unless a flag overrides them.
"""
import argparse
import os
import sys

from utils.cli import positive_int, str2bool  # sets TF_CPP_MIN_LOG_LEVEL before keras loads
from utils.errors import UserError, run_cli
from utils.image import IMAGE_INITS

# Settings read from the run config when their flag is not given: flag -> config key.
FROM_CONFIG = {"model_name": "model_name", "input_height": "input_height", "input_width": "input_width",
               "resize_op": "resize_op", "classes": "n_classes", "image_init": "image_init",
               "ignore_label": "ignore_label"}
DEFAULTS = {"model_name": "unet", "input_height": 224, "input_width": 224, "resize_op": 1, "classes": 2,
            "image_init": "divide", "ignore_label": 255}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # === The seed's flags (None: taken from the run config, else the seed's default) ===
    p.add_argument("--test_images", default=None,
                   help="folder of images (default: the run's data set test_image/, else data/test/)")
    p.add_argument("--output_path", default="data/output/", help="output folder (a new one if it is not empty)")
    p.add_argument("--model_name", default=None)
    p.add_argument("--weights_path", required=True,
                   help="a .keras checkpoint, a train.py run folder, or an export of tools/export.py "
                        "(.onnx, .tflite, SavedModel folder)")
    p.add_argument("--input_height", type=positive_int, default=None)
    p.add_argument("--input_width", type=positive_int, default=None)
    p.add_argument("--resize_op", type=int, choices=(1, 2), default=None)
    p.add_argument("--classes", type=positive_int, default=None, help="number of classes")
    p.add_argument("--mIOU", type=str2bool, default=False, help="score against --val_annotations (true/false)")
    p.add_argument("--val_images", default=None, help="alias of --test_images for the --mIOU images")
    p.add_argument("--val_annotations", default=None,
                   help="label folder for --mIOU (default: the run's data set test_label/)")
    p.add_argument("--image_init", default=None, choices=IMAGE_INITS)
    # === Additions ===
    p.add_argument("--ignore_label", type=int, default=None)
    p.add_argument("--batch_size", type=positive_int, default=4)
    p.add_argument("--class_names", default=None, help="text file, one class name per line")
    return p.parse_args(argv)


def resolve_settings(args):
    """Fill unset flags from the run config beside the checkpoint, else the seed's defaults."""
    from utils.inference import model_format, sidecar_path
    from utils.run import best_checkpoint, find_run_config, read_json
    if not os.path.exists(args.weights_path):
        raise UserError(f"--weights_path {args.weights_path}: no such file or folder")
    is_run_dir = os.path.isdir(args.weights_path) and not os.path.isfile(
        os.path.join(args.weights_path, "saved_model.pb"))
    if is_run_dir or model_format(args.weights_path) == "keras":
        config = find_run_config(args.weights_path) or {}
        if is_run_dir:
            args.weights_path = best_checkpoint(args.weights_path)
    else:  # an export from tools/export.py: its settings file sits beside it
        settings = sidecar_path(args.weights_path)
        config = read_json(settings, "export settings (written by tools/export.py)") \
            if os.path.isfile(settings) else {}
    for flag, key in FROM_CONFIG.items():
        if getattr(args, flag) is None:
            setattr(args, flag, config.get(key, DEFAULTS[flag]))
    data_dir = os.path.join(config["data_root"], config["dataset_name"]) if "data_root" in config else None
    if args.test_images is None:
        args.test_images = args.val_images or (os.path.join(data_dir, "test_image") if data_dir else "data/test/")
    if args.mIOU and args.val_annotations is None:
        if data_dir is None:
            raise UserError("--mIOU true needs --val_annotations (the checkpoint has no run config to find it)")
        args.val_annotations = os.path.join(data_dir, "test_label")
    return config


def main(argv=None):
    args = parse_args(argv)
    config = resolve_settings(args)

    import cv2
    import numpy as np

    from data import Preprocessing, default_class_names, pair_files
    from metrics.evaluation import (confusion_matrix, format_table, read_class_names_file, summarize, write_charts,
                                    write_report)
    from utils.inference import load_predictor
    from utils.paths import new_output_dir
    from utils.image import (IMAGE_EXTS, check_label_values, list_files, read_image, read_label,
                             restore_probabilities, voc_palette, write_png)

    if not os.path.isdir(args.test_images):
        raise UserError(f"--test_images {args.test_images}: folder not found")
    if args.mIOU:
        pairs = pair_files(args.test_images, args.val_annotations)
    else:
        pairs = [(path, None) for path in list_files(args.test_images, IMAGE_EXTS)]
        if not pairs:
            raise UserError(f"--test_images {args.test_images}: no images ({', '.join(IMAGE_EXTS)}) found")
    if args.class_names:
        names = read_class_names_file(args.class_names, args.classes)
    else:
        names = config.get("class_names") or default_class_names(args.classes)

    # A .keras checkpoint, or an export (ONNX, SavedModel, TFLite) run by its own runtime.
    predict = load_predictor(args.weights_path)
    expected = (args.input_height, args.input_width)
    if predict.input_size != expected:
        raise UserError(f"{args.weights_path} takes {predict.input_size[0]}x{predict.input_size[1]} inputs, "
                        f"but --input_height/--input_width say {expected[0]}x{expected[1]}")
    if predict.n_classes != args.classes:
        raise UserError(f"{args.weights_path} predicts {predict.n_classes} classes, --classes says {args.classes}")

    prep = Preprocessing(args.input_height, args.input_width, args.image_init, args.resize_op, args.ignore_label)
    out_dir = new_output_dir(args.output_path)
    for sub in ("color", "overlay"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    palette = voc_palette()
    matrix = np.zeros((args.classes, args.classes), dtype=np.int64)

    for start in range(0, len(pairs), args.batch_size):
        batch = pairs[start:start + args.batch_size]
        images = [read_image(image_path) for image_path, _ in batch]
        probs = predict(np.stack([prep.image(img) for img in images]))
        for (image_path, label_path), image, prob in zip(batch, images, probs):
            height, width = image.shape[:2]
            mask = restore_probabilities(prob, height, width, args.resize_op).argmax(-1).astype(np.uint8)
            stem = os.path.splitext(os.path.basename(image_path))[0]
            write_png(os.path.join(out_dir, stem + ".png"), mask)
            write_png(os.path.join(out_dir, "color", stem + ".png"), mask, palette)
            colour = palette[mask][..., ::-1]  # RGB palette -> BGR like the image
            overlay = (0.6 * image + 0.4 * colour).astype(np.uint8)
            cv2.imwrite(os.path.join(out_dir, "overlay", stem + ".jpg"), overlay)
            if label_path is not None:
                label = read_label(label_path)
                if label.shape != mask.shape:
                    raise UserError(f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from "
                                    f"image {image_path} size {width}x{height}")
                check_label_values(label, label_path, args.classes, args.ignore_label)
                matrix += confusion_matrix(label, mask, args.classes, args.ignore_label)
    print(f"wrote {len(pairs)} masks to {out_dir}")

    if args.mIOU:
        summary = summarize(matrix, names)
        summary.update(weights_path=args.weights_path, test_images=args.test_images,
                       val_annotations=args.val_annotations)
        print(format_table(summary))
        write_report(out_dir, summary, matrix)
        write_charts(os.path.join(out_dir, "charts"), summary, matrix)  # a sub-folder: keep masks alone at the top
        print(f"test mIoU: {summary['mIoU']:.4f} (report: {os.path.join(out_dir, 'metrics.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
