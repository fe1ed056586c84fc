"""Convert a folder of labelme JSON files into label masks (and optionally a toolkit data set).

    python json_to_dataset.py JSON_DIR [--labels labels.txt] [--out OUT_DIR]
    python json_to_dataset.py JSON_DIR --dataset_out data/mydata --test_split 0.2 --seed 0

Writes (OUT_DIR defaults to JSON_DIR, as the original did):
  OUT_DIR/class_names.txt                 line i = name of class id i
  OUT_DIR/mask_png/<stem>.png             8-bit palette PNG; pixel value = class id
  OUT_DIR/labelme_json/<stem>_json/       img.png, label.png, label_viz.png, label_names.txt
  DATASET_OUT/{train,test}_{image,label}/ and classes.txt   (with --dataset_out)

One class map for the whole folder, so a class has the same id in every
mask: from `--labels` (labelme's labels.txt convention: one name a line,
`__ignore__` -> --ignore_label (255), `_background_` -> 0, the others 1, 2, ...
in file order; `_background_` is added first when missing), or else built
from all files: 0 = `_background_`, then the names sorted. Shapes are
rasterised by labelme's own `labelme.utils.shapes_to_label` in file order
(later shapes paint over earlier ones). Shapes that enclose no area (line,
linestrip, point, too few points) are skipped with a warning. The image
comes from the embedded `imageData` or from `imagePath` (relative to the JSON
file, Windows separators accepted). labelme 3.x files (no `shape_type`:
polygons) and newer ones are read. A file that cannot be converted is
reported and the others still are; the exit code is then 1.
"""
import argparse
import base64
import io
import json
import os
import sys
from pathlib import PureWindowsPath

import numpy as np

from utils.errors import UserError, run_cli

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # labelme imports PyQt5; no display needed

BACKGROUND = "_background_"
IGNORE = "__ignore__"
AREA_SHAPES = {"polygon": 3, "rectangle": 2, "circle": 2, "oriented_rectangle": 4, "mask": 2}  # min points
NO_AREA_SHAPES = ("line", "linestrip", "point", "points")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class AnnotationError(Exception):
    """One JSON file cannot be converted; the message names the file."""


# === Class map ===

def read_labels_file(path, ignore_label):
    """labels.txt -> (names in id order, {name: id}).

    The file's rules are `utils.dataset_files.read_class_names`'s (blank lines skipped, a name
    listed twice is an error); labelme's special names on top: `__ignore__` takes no id (it maps
    to `ignore_label`), `_background_` must be the first id when listed and is added as 0 when not.
    """
    from utils.dataset_files import read_class_names
    names = [n for n in read_class_names(path, flag="--labels") if n != IGNORE]
    if BACKGROUND in names and names[0] != BACKGROUND:
        raise UserError(f"--labels {path}: {BACKGROUND} must come first (after {IGNORE}): it is class 0")
    if BACKGROUND not in names:
        names.insert(0, BACKGROUND)
    return _class_map(names, ignore_label)


def _class_map(names, ignore_label):
    if len(names) > ignore_label:
        raise UserError(f"{len(names)} classes do not fit below --ignore_label {ignore_label}")
    mapping = {name: i for i, name in enumerate(names)}
    mapping[IGNORE] = ignore_label
    return names, mapping


def class_map_from_files(label_sets, ignore_label):
    names = sorted(set().union(*label_sets) - {BACKGROUND, IGNORE}) if label_sets else []
    return _class_map([BACKGROUND] + names, ignore_label)


# === Reading one labelme file ===

def _read_raw(path):
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("shapes"), list):
        raise AnnotationError(f"{path}: not a labelme file (no 'shapes' list)")
    return raw


def shape_labels(path):
    """Label names of a file's area shapes (a quick pass, images not decoded).

    Names used only by shapes that are skipped (lines, points) get no class id.
    """
    raw = _read_raw(path)
    names = set()
    for i, shape in enumerate(raw["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise AnnotationError(f"{path}: shape {i} has no 'label' string")
        if (shape.get("shape_type") or "polygon") in AREA_SHAPES:
            names.add(shape["label"])
    return names


def _image_bytes(path, raw):
    """Image file bytes from imageData, else from imagePath next to the JSON file."""
    import labelme
    if raw.get("imageData"):
        try:
            return base64.b64decode(raw["imageData"], validate=False), "imageData"
        except (ValueError, TypeError) as exc:
            raise AnnotationError(f"{path}: imageData is not valid base64 ({exc})") from None
    image_path = raw.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise AnnotationError(f"{path}: neither imageData nor imagePath is set")
    folder = os.path.dirname(os.path.abspath(path))
    # labelme on Windows writes backslashes; PureWindowsPath reads both separators.
    candidates = [os.path.join(folder, *PureWindowsPath(image_path).parts)]
    stem = os.path.splitext(os.path.basename(path))[0]
    candidates += [os.path.join(folder, stem + ext) for ext in IMAGE_EXTS]  # folder moved since labelling
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                # labelme's own loader: applies the EXIF orientation as labelme's canvas did.
                return labelme.LabelFile.load_image_file(candidate), candidate
            except OSError as exc:
                raise AnnotationError(f"{path}: image {candidate} cannot be read ({exc})") from None
    raise AnnotationError(f"{path}: image {image_path!r} not found next to it (and no embedded imageData)")


def _shape(path, index, shape, image_shape, warnings):
    """A labelme shape dict ready for `shapes_to_label`, or None (skipped, with a warning)."""
    import labelme
    label = shape.get("label")
    points = shape.get("points")
    kind = shape.get("shape_type") or "polygon"  # labelme < 3 wrote no shape_type: polygons only
    where = f"{path}: shape {index} ({label!r}, {kind})"
    if not isinstance(label, str):
        raise AnnotationError(f"{path}: shape {index} has no 'label' string")
    try:
        points = [[float(x), float(y)] for x, y in points]
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: 'points' is not a list of [x, y]") from None
    if kind in NO_AREA_SHAPES:
        warnings.append(f"{where}: encloses no area, skipped")
        return None
    if kind not in AREA_SHAPES:
        warnings.append(f"{where}: unknown shape type, skipped")
        return None
    wanted = AREA_SHAPES[kind]
    if (kind == "polygon" and len(points) < wanted) or (kind != "polygon" and len(points) != wanted):
        warnings.append(f"{where}: {len(points)} points enclose no area, skipped")
        return None
    mask = None
    if kind == "mask":
        try:
            mask = labelme.utils.img_b64_to_arr(shape["mask"]).astype(bool)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise AnnotationError(f"{where}: its 'mask' cannot be decoded ({exc})") from None
        if mask.ndim == 3:
            mask = mask[..., 0]
        (x1, y1), (x2, y2) = np.asarray(points).astype(int)
        if mask.shape != (y2 - y1 + 1, x2 - x1 + 1) or x1 < 0 or y1 < 0 \
                or y2 >= image_shape[0] or x2 >= image_shape[1]:
            raise AnnotationError(f"{where}: mask {mask.shape[1]}x{mask.shape[0]} does not fit its box "
                                  f"{points} in the {image_shape[1]}x{image_shape[0]} image")
    return {"label": label, "points": points, "shape_type": kind, "group_id": shape.get("group_id"),
            "mask": mask, "flags": {}, "description": "", "other_data": {}}


def convert_file(path, class_to_id):
    """-> (PIL image, uint8 mask of class ids, image file bytes, warnings). Raises AnnotationError."""
    import labelme
    from PIL import Image
    raw = _read_raw(path)
    data, _ = _image_bytes(path, raw)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"{path}: its image cannot be decoded ({exc})") from None
    height, width = image.size[1], image.size[0]
    declared = (raw.get("imageHeight"), raw.get("imageWidth"))
    if all(isinstance(v, int) for v in declared) and declared != (height, width):
        raise AnnotationError(f"{path}: declares a {declared[1]}x{declared[0]} image but its image is "
                              f"{width}x{height}")
    warnings, shapes = [], []
    for index, shape in enumerate(raw["shapes"]):
        if not isinstance(shape, dict):
            raise AnnotationError(f"{path}: shape {index} is not an object")
        converted = _shape(path, index, shape, (height, width), warnings)
        if converted is not None:
            shapes.append(converted)
    unknown = sorted({s["label"] for s in shapes} - set(class_to_id))
    if unknown:
        raise AnnotationError(f"{path}: labels {unknown} are not in the class list")
    try:
        cls, _ = labelme.utils.shapes_to_label((height, width), shapes, class_to_id)
    except (AssertionError, ValueError, TypeError) as exc:
        raise AnnotationError(f"{path}: labelme cannot rasterise its shapes ({exc})") from None
    return image, cls.astype(np.uint8), data, warnings


# === Writing ===

def _rgb(image):
    return image.convert("RGB") if image.mode != "RGB" else image


def write_outputs(out_dir, stem, image, mask, names, ignore_label):
    import imgviz
    from utils.image import voc_palette, write_png
    write_png(os.path.join(out_dir, "mask_png", f"{stem}.png"), mask, palette=voc_palette())
    folder = os.path.join(out_dir, "labelme_json", f"{stem}_json")
    os.makedirs(folder, exist_ok=True)
    rgb = np.asarray(_rgb(image))
    write_png(os.path.join(folder, "img.png"), rgb)
    write_png(os.path.join(folder, "label.png"), mask, palette=voc_palette())
    present = {int(v): names[v] if v < len(names) else IGNORE if v == ignore_label else f"class_{v}"
               for v in np.unique(mask)}
    viz = imgviz.label2rgb(mask, imgviz.asgray(rgb), label_names=present, loc="rb")
    write_png(os.path.join(folder, "label_viz.png"), viz)
    with open(os.path.join(folder, "label_names.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(names) + "\n")


def image_file(data, image):
    """(bytes, extension) to store: the original bytes when they are a format the toolkit reads."""
    ext = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}.get(image.format)
    # Files whose EXIF rotation labelme applied are stored re-encoded (upright), never rotated twice.
    if ext and image.getexif().get(0x0112, 1) == 1:
        return data, ext
    buffer = io.BytesIO()
    (image if image.mode in ("L", "RGB") else _rgb(image)).save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def write_dataset(dataset_out, converted, names, test_split, seed):
    from utils.image import voc_palette, write_png
    stems = sorted(converted)
    order = np.random.default_rng(seed).permutation(len(stems))
    n_test = int(round(len(stems) * test_split))
    test = {stems[i] for i in order[:n_test]}
    for split in ("train", "test") if n_test else ("train",):
        for kind in ("image", "label"):
            os.makedirs(os.path.join(dataset_out, f"{split}_{kind}"), exist_ok=True)
    for stem in stems:
        split = "test" if stem in test else "train"
        data, ext, mask = converted[stem]
        with open(os.path.join(dataset_out, f"{split}_image", stem + ext), "wb") as handle:
            handle.write(data)
        write_png(os.path.join(dataset_out, f"{split}_label", stem + ".png"), mask, palette=voc_palette())
    with open(os.path.join(dataset_out, "classes.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(names) + "\n")
    return len(stems) - n_test, n_test


# === Main ===

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json_dir", help="folder of labelme .json files")
    p.add_argument("--labels", default=None, help="labels.txt: class names, one a line (labelme's convention)")
    p.add_argument("--out", default=None, help="output folder (default: JSON_DIR, as the original)")
    p.add_argument("--ignore_label", type=int, default=255, help="mask value of __ignore__ shapes")
    p.add_argument("--dataset_out", default=None, help="also write the toolkit layout here")
    p.add_argument("--test_split", type=float, default=0.2, help="share of files for test_* (with --dataset_out)")
    p.add_argument("--seed", type=int, default=0, help="seeds the train/test split")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.json_dir):
        raise UserError(f"{args.json_dir}: folder not found")
    if not 0 <= args.ignore_label <= 255:
        raise UserError(f"--ignore_label {args.ignore_label}: must be in 0..255")
    if not 0 <= args.test_split < 1:
        raise UserError(f"--test_split {args.test_split}: must be in [0, 1)")
    paths = sorted(os.path.join(args.json_dir, n) for n in os.listdir(args.json_dir)
                   if n.lower().endswith(".json") and not n.startswith("."))
    if not paths:
        raise UserError(f"{args.json_dir}: no .json files")
    if args.dataset_out and os.path.isdir(args.dataset_out) and os.listdir(args.dataset_out):
        raise UserError(f"--dataset_out {args.dataset_out}: not empty; choose a new folder")
    from loguru import logger
    logger.disable("labelme")  # its per-image DEBUG lines

    failed, failed_paths = [], set()
    if args.labels:
        names, class_to_id = read_labels_file(args.labels, args.ignore_label)
    else:
        label_sets = []
        for path in paths:
            try:
                label_sets.append(shape_labels(path))
            except AnnotationError as exc:
                failed.append(str(exc))
                failed_paths.add(path)
        names, class_to_id = class_map_from_files(label_sets, args.ignore_label)
    out_dir = args.out or args.json_dir
    os.makedirs(os.path.join(out_dir, "mask_png"), exist_ok=True)
    with open(os.path.join(out_dir, "class_names.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(names) + "\n")

    converted = {}
    for path in paths:
        if path in failed_paths:
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            image, mask, data, warnings = convert_file(path, class_to_id)
        except AnnotationError as exc:
            failed.append(str(exc))
            continue
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        write_outputs(out_dir, stem, image, mask, names, args.ignore_label)
        if args.dataset_out:
            converted[stem] = (*image_file(data, image), mask)
        print(f"{path} -> {os.path.join(out_dir, 'mask_png', stem + '.png')}")

    print(f"{len(names)} classes ({', '.join(names)}) written to {os.path.join(out_dir, 'class_names.txt')}")
    if args.dataset_out and converted:
        n_train, n_test = write_dataset(args.dataset_out, converted, names, args.test_split, args.seed)
        print(f"data set: {n_train} train, {n_test} test pairs in {args.dataset_out} "
              f"(train.py --data_root {os.path.dirname(os.path.abspath(args.dataset_out))} "
              f"--dataset_name {os.path.basename(os.path.abspath(args.dataset_out))} --n_classes {len(names)})")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    print(f"converted {len(paths) - len(failed)} of {len(paths)} files" + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
