"""Predict masks with a trained model and, optionally, score them (mIoU and friends).

    python test.py --weights_path weights/exp1/unet            # a run folder: its best checkpoint
    python test.py --weights_path CKPT.keras --test_images DIR --mIOU true --val_annotations LABELS

Writes `<output_path>/<stem>.png` class-index masks at each image's original
size, `color/<stem>.png` palette masks and `overlay/<stem>.jpg` overlays.
`--inference_mode` resize (the image to the network size and back), whole (padded
to a size the model takes, one pass) or slide (windows of the network size every
`--stride` pixels, averaged), with `--tta_flip` and `--scales` averaging more
passes: `utils.tiling`. A checkpoint with its run config is rebuilt at the sizes
`whole` and `--scales` need; exports are fixed-size (slide works with them).
The flags left unset come from the checkpoint's `config.json` (or an export's
settings file): `--resize_op`, `--image_init`, `--channel_order`, `--ignore_label`
and `--class_names` override the run's values; `--input_height`/`--input_width`
and `--classes` are checked against the model, which fixes them.
"""
import argparse
import os
import sys

from utils.cli import positive_int, str2bool  # sets TF_CPP_MIN_LOG_LEVEL before keras loads
from utils.errors import UserError, run_cli
from utils.image import CHANNEL_ORDERS, IMAGE_INITS
from utils.tiling import MODES, parse_scales

# Settings read from the run config when their flag is not given: flag -> config key.
FROM_CONFIG = {"model_name": "model_name", "input_height": "input_height", "input_width": "input_width",
               "resize_op": "resize_op", "classes": "n_classes", "image_init": "image_init",
               "ignore_label": "ignore_label", "channel_order": "channel_order"}
DEFAULTS = {"model_name": "unet", "input_height": 224, "input_width": 224, "resize_op": 1, "classes": 2,
            "image_init": "divide", "ignore_label": 255, "channel_order": "bgr"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # === The seed's flags (None: taken from the run config, else the seed's default) ===
    p.add_argument("--test_images", default=None,
                   help="folder of images (default: the run's data set test_image/, else data/test/)")
    p.add_argument("--output_path", default="data/output/", help="output folder (a new one if it is not empty)")
    p.add_argument("--model_name", default=None, help="checked against the run's model (the checkpoint fixes it)")
    p.add_argument("--weights_path", required=True,
                   help="a .keras checkpoint, a train.py run folder, or an export of tools/export.py "
                        "(.onnx, .tflite, SavedModel folder)")
    p.add_argument("--input_height", type=positive_int, default=None)
    p.add_argument("--input_width", type=positive_int, default=None)
    p.add_argument("--resize_op", type=int, choices=(1, 2, 3), default=None,
                   help="1: stretch, 2: letterbox, 3: crops (a run trained on crops: predicted by --inference_mode "
                        "slide or whole; with resize it stretches as 1)")
    p.add_argument("--classes", type=positive_int, default=None, help="number of classes")
    p.add_argument("--mIOU", type=str2bool, default=False, help="score against --val_annotations (true/false)")
    p.add_argument("--val_images", default=None, help="alias of --test_images for the --mIOU images")
    p.add_argument("--val_annotations", default=None,
                   help="label folder for --mIOU (default: the run's data set test_label/)")
    p.add_argument("--image_init", default=None, choices=IMAGE_INITS)
    p.add_argument("--channel_order", default=None, choices=CHANNEL_ORDERS,
                   help="channel order the model takes (default: the run's; --encoder_weights runs: their own)")
    # === Additions ===
    p.add_argument("--ignore_label", type=int, default=None)
    p.add_argument("--batch_size", type=positive_int, default=4)
    p.add_argument("--class_names", default=None, help="text file, one class name per line")
    # === Native resolution (each image predicted at its own size) ===
    p.add_argument("--inference_mode", default=None, choices=MODES,
                   help="resize: the image to the network size and back; whole: padded to a size the model "
                        "takes, one pass; slide: windows of the network size every --stride pixels, averaged "
                        "(default: the run's, else slide for a --resize_op 3 run, else resize)")
    p.add_argument("--stride", type=int, default=None,
                   help="slide: step between windows in pixels, 1..the window (default: the run's, else 2/3 "
                        "of the window)")
    p.add_argument("--tta_flip", type=str2bool, default=False,
                   help="also predict the left-right mirrored image and average (true/false)")
    p.add_argument("--scales", default="1.0",
                   help="comma-separated image scales whose predictions are averaged, e.g. 0.75,1.0,1.25")
    return p.parse_args(argv)


def resolve_settings(args):
    """Fill unset flags from the run config beside the checkpoint, else the seed's defaults."""
    from utils.inference import model_format, sidecar_path
    from utils.run import best_checkpoint, find_run_config, read_json
    if not os.path.exists(args.weights_path):
        raise UserError(f"--weights_path {args.weights_path}: no such file or folder")
    is_run_dir = os.path.isdir(args.weights_path) and not os.path.isfile(
        os.path.join(args.weights_path, "saved_model.pb"))
    if is_run_dir and not os.path.isfile(os.path.join(args.weights_path, "state.json")):
        raise UserError(f"--weights_path {args.weights_path}: a folder that is neither a train.py run "
                        "(no state.json) nor a SavedModel (no saved_model.pb)")
    if is_run_dir or model_format(args.weights_path) == "keras":
        config = find_run_config(args.weights_path) or {}
        if is_run_dir:
            args.weights_path = best_checkpoint(args.weights_path)
    else:  # an export from tools/export.py: its settings file sits beside it
        settings = sidecar_path(args.weights_path)
        config = read_json(settings, "export settings (written by tools/export.py)") \
            if os.path.isfile(settings) else {}
    if args.model_name is not None and config.get("model_name") not in (None, args.model_name):
        raise UserError(f"--model_name {args.model_name}: {args.weights_path} is a {config['model_name']} model")
    for flag, key in FROM_CONFIG.items():
        if getattr(args, flag) is None:
            setattr(args, flag, config.get(key, DEFAULTS[flag]))
    args.channel_order = str(args.channel_order).lower()  # export settings files spell it "BGR"/"RGB"
    resolve_inference(args, config)
    data_dir = os.path.join(config["data_root"], config["dataset_name"]) if "data_root" in config else None
    if args.test_images is None:
        args.test_images = args.val_images or (os.path.join(data_dir, "test_image") if data_dir else "data/test/")
    if args.mIOU and args.val_annotations is None:
        if data_dir is None:
            raise UserError("--mIOU true needs --val_annotations (the checkpoint has no run config to find it)")
        args.val_annotations = os.path.join(data_dir, "test_label")
    return config


def resolve_inference(args, config):
    """--inference_mode and --stride from the run when not given (a crops run slides); --scales parsed.
    The stride's upper bound, the window, is checked once the model is loaded."""
    if args.inference_mode is None:
        args.inference_mode = config.get("inference_mode") or ("slide" if args.resize_op == 3 else "resize")
    if args.inference_mode not in MODES:
        raise UserError(f"inference_mode {args.inference_mode!r} in the run config: expected one of {', '.join(MODES)}")
    if args.stride is None:
        args.stride = config.get("stride")
    if args.stride is not None and args.stride < 1:
        raise UserError(f"--stride {args.stride}: must be at least 1 (pixels between windows)")
    args.scales = parse_scales(args.scales)


# === Inputs, names and the model ===

def list_inputs(args):
    """-> [(image path, label path or None)]: the --mIOU pairs, or every image of --test_images."""
    from data import pair_files
    from utils.image import IMAGE_EXTS, list_files
    if not os.path.isdir(args.test_images):
        raise UserError(f"--test_images {args.test_images}: folder not found")
    if args.mIOU:
        return pair_files(args.test_images, args.val_annotations)
    pairs = [(path, None) for path in list_files(args.test_images, IMAGE_EXTS)]
    if not pairs:
        raise UserError(f"--test_images {args.test_images}: no images ({', '.join(IMAGE_EXTS)}) found")
    return pairs


def class_names(args, config):
    from data import default_class_names
    from metrics.evaluation import read_class_names_file
    if args.class_names:
        return read_class_names_file(args.class_names, args.classes, count_flag="--classes")
    return config.get("class_names") or default_class_names(args.classes)


def load_checked_predictor(args, config):
    """A .keras checkpoint (rebuilt at other sizes from its run `config` when a mode needs it), or an
    export (ONNX, SavedModel, TFLite...: fixed-size) run by its own runtime."""
    from utils.inference import load_predictor
    from utils.tiling import check_stride
    predict = load_predictor(args.weights_path, run_config=config)
    expected = (args.input_height, args.input_width)
    if predict.input_size != expected:
        raise UserError(f"{args.weights_path} takes {predict.input_size[0]}x{predict.input_size[1]} inputs, "
                        f"but --input_height/--input_width say {expected[0]}x{expected[1]}")
    if predict.n_classes != args.classes:
        raise UserError(f"{args.weights_path} predicts {predict.n_classes} classes, --classes says {args.classes}")
    if args.inference_mode == "slide":
        check_stride(args.stride, predict.input_size)
    return predict


# === Predicting, writing, scoring ===

def write_masks(out_dir, image_path, image, mask, palette):
    """<stem>.png class indices, color/<stem>.png palette mask, overlay/<stem>.jpg over the image."""
    import cv2

    from utils.image import write_png
    stem = os.path.splitext(os.path.basename(image_path))[0]
    write_png(os.path.join(out_dir, stem + ".png"), mask)
    write_png(os.path.join(out_dir, "color", stem + ".png"), mask, palette)
    colour = palette[mask][..., ::-1]  # RGB palette -> BGR like the image
    cv2.imwrite(os.path.join(out_dir, "overlay", stem + ".jpg"), (0.6 * image + 0.4 * colour).astype("uint8"))


def score_and_write(args, out_dir, image_path, label_path, image, mask, palette):
    """Write the masks of one image; -> its confusion matrix against its label (zeros without one)."""
    import numpy as np

    from metrics.evaluation import confusion_matrix
    from utils.image import check_label_values, check_same_size, read_label
    write_masks(out_dir, image_path, image, mask, palette)
    if label_path is None:
        return np.zeros((args.classes, args.classes), dtype=np.int64)
    label = read_label(label_path)
    check_same_size(label.shape, label_path, mask.shape, image_path)
    check_label_values(label, label_path, args.classes, args.ignore_label)
    return confusion_matrix(label, mask, args.classes, args.ignore_label)


def predict_all(args, pairs, predict, out_dir):
    """Predict every image at its own size (`utils.tiling`), write its masks; -> the confusion matrix.

    Two threads decode the next images and encode/write the finished masks while the model predicts
    (OpenCV and PNG encoding release the GIL). The outputs do not depend on the timing: each file is
    written by one task, the matrix is a sum of integers, and results (and a bad label's error) are
    collected in input order.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from data import Preprocessing
    from utils.image import read_image, voc_palette
    from utils.tiling import predict_images
    prep = Preprocessing(args.input_height, args.input_width, args.image_init, args.resize_op, args.ignore_label,
                         args.channel_order)
    palette = voc_palette()
    matrix = np.zeros((args.classes, args.classes), dtype=np.int64)
    # resize sends a batch of images per call; whole and slide batch the windows of one image.
    group = args.batch_size if args.inference_mode == "resize" else 1
    batches = [pairs[i:i + group] for i in range(0, len(pairs), group)]

    def read(batch):
        """-> (full images for the outputs, resize mode: the network inputs as training made them)."""
        images = [read_image(path) for path, _ in batch]
        if args.inference_mode != "resize" or prep.resize_op == 3:  # crops have no fit of their own
            return images, None
        return images, [prep.load_image(path)[0] for path, _ in batch]

    with ThreadPoolExecutor(2) as pool:
        reads = deque(pool.submit(read, b) for b in batches[:2])
        writes = deque()
        for index, batch in enumerate(batches):
            images, inputs = reads.popleft().result()
            if index + 2 < len(batches):  # keep two batches decoding ahead
                reads.append(pool.submit(read, batches[index + 2]))
            try:
                probs = predict_images(images, predict, prep, args.inference_mode, args.stride, args.scales,
                                       args.tta_flip, args.batch_size, inputs)
            except UserError as exc:  # whole/slide: a size this image needs; resize: the same for every batch
                raise UserError(f"{batch[0][0]}: {exc}" if group == 1 else str(exc)) from None
            for (image_path, label_path), image, prob in zip(batch, images, probs):
                mask = prob.argmax(-1).astype(np.uint8)
                writes.append(pool.submit(score_and_write, args, out_dir, image_path, label_path, image, mask,
                                          palette))
            while len(writes) > 2 * group:  # bound the masks waiting in memory
                matrix += writes.popleft().result()
        while writes:
            matrix += writes.popleft().result()
    return matrix


def report_scores(args, out_dir, matrix, names):
    from metrics.evaluation import format_table, summarize, write_charts, write_report
    summary = summarize(matrix, names)
    summary.update(weights_path=args.weights_path, test_images=args.test_images,
                   val_annotations=args.val_annotations)
    print(format_table(summary))
    write_report(out_dir, summary, matrix)
    write_charts(os.path.join(out_dir, "charts"), summary, matrix)  # a sub-folder: keep masks alone at the top
    print(f"test mIoU: {summary['mIoU']:.4f} (report: {os.path.join(out_dir, 'metrics.json')})")


def main(argv=None):
    from utils.paths import new_output_dir
    from utils.backend import import_keras
    args = parse_args(argv)
    import_keras()  # first, so that TensorFlow's start-up notes are filtered (the data code imports keras)
    config = resolve_settings(args)
    pairs = list_inputs(args)
    names = class_names(args, config)
    predict = load_checked_predictor(args, config)
    out_dir = new_output_dir(args.output_path)
    for sub in ("color", "overlay"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    matrix = predict_all(args, pairs, predict, out_dir)
    print(f"wrote {len(pairs)} masks to {out_dir}")
    if args.mIOU:
        report_scores(args, out_dir, matrix, names)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
