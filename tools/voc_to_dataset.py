"""Convert a PASCAL VOC segmentation set into the toolkit's layout.

    python tools/voc_to_dataset.py --voc_root VOCdevkit/VOC2007 --out data/voc2007
    python train.py --data_root data --dataset_name voc2007 --n_classes 21

Reads `ImageSets/Segmentation/<split>.txt` (default: train and val), and for
every id copies `JPEGImages/<id>.jpg` to `<out>/<split>_image/` and
`SegmentationClass/<id>.png` to `<out>/<split>_label/`, byte for byte: the
labels stay palette PNGs whose indices are the class ids (0 = background,
1..20 the VOC classes) and 255 marks the object borders and "difficult"
pixels, which train.py/test.py ignore with the default `--ignore_label 255`.
Writes `classes.txt` (the 21 VOC names). train.py validates on `val_*`.

Before copying, every listed id is checked: image and label present, same
size, label values in 0..n_classes-1 or 255. Problems are listed (with file
names) and nothing is written.
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.image import check_label_values, read_label, size_mismatch  # noqa: E402

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
TOOLKIT_SPLITS = ("train", "val", "test")
MAX_LISTED = 10


def read_ids(voc_root, split):
    path = os.path.join(voc_root, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found (is --voc_root the VOC2007 / VOC2012 folder?)")
    with open(path, encoding="utf-8") as handle:
        ids = [line.split()[0] for line in handle if line.strip()]
    if not ids:
        raise UserError(f"{path}: lists no ids")
    return ids


def check_split(voc_root, ids, n_classes, ignore_label, problems):
    """Check one split's files; return [(image_path, label_path)]."""
    from PIL import Image
    pairs = []
    for image_id in ids:
        image_path = os.path.join(voc_root, "JPEGImages", f"{image_id}.jpg")
        label_path = os.path.join(voc_root, "SegmentationClass", f"{image_id}.png")
        missing = [p for p in (image_path, label_path) if not os.path.isfile(p)]
        if missing:
            problems.append(f"{', '.join(missing)}: listed but missing")
            continue
        try:
            label = read_label(label_path)
            with Image.open(image_path) as img:
                size = (img.size[1], img.size[0])
        except (UserError, OSError) as exc:
            problems.append(str(exc))
            continue
        mismatch = size_mismatch(label.shape, label_path, size, image_path)
        if mismatch:
            problems.append(mismatch)
        try:
            check_label_values(label, label_path, n_classes, ignore_label)
        except UserError as exc:
            problems.append(str(exc))
        pairs.append((image_path, label_path))
    return pairs


def resolve_root(voc_root):
    """Accept VOCdevkit itself when it holds exactly one VOC20xx folder."""
    if os.path.isdir(os.path.join(voc_root, "JPEGImages")) or not os.path.isdir(voc_root):
        return voc_root
    years = sorted(n for n in os.listdir(voc_root) if n.startswith("VOC")
                   and os.path.isdir(os.path.join(voc_root, n, "JPEGImages")))
    if len(years) == 1:
        return os.path.join(voc_root, years[0])
    if years:
        raise UserError(f"--voc_root {voc_root}: holds {', '.join(years)}; name one of them")
    return voc_root


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voc_root", required=True, help="e.g. VOCdevkit/VOC2007 (holds JPEGImages, SegmentationClass)")
    p.add_argument("--out", required=True, help="output data set folder, e.g. data/voc2007")
    p.add_argument("--splits", default="train,val", help="comma-separated ImageSets/Segmentation lists to convert "
                   "(train, val, test)")
    p.add_argument("--n_classes", type=positive_int, default=len(VOC_CLASSES))
    p.add_argument("--ignore_label", type=int, default=255)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in TOOLKIT_SPLITS]
    if unknown or not splits:
        raise UserError(f"--splits {args.splits}: each must be one of {', '.join(TOOLKIT_SPLITS)} "
                        "(the toolkit's split folders)")
    args.voc_root = resolve_root(args.voc_root)
    for sub in ("JPEGImages", "SegmentationClass"):
        if not os.path.isdir(os.path.join(args.voc_root, sub)):
            raise UserError(f"--voc_root {args.voc_root}: no {sub}/ folder")
    if os.path.isdir(args.out) and os.listdir(args.out):
        raise UserError(f"--out {args.out}: not empty; choose a new folder")

    problems, plan = [], {}
    ids_by_split = {split: read_ids(args.voc_root, split) for split in splits}
    for split, ids in ids_by_split.items():
        plan[split] = check_split(args.voc_root, ids, args.n_classes, args.ignore_label, problems)
    overlap = set(ids_by_split.get("train", ())) & set(ids_by_split.get("val", ()))
    if overlap:
        problems.append(f"train.txt and val.txt share {len(overlap)} ids (e.g. {sorted(overlap)[0]})")
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise UserError(f"{len(problems)} problem(s) in {args.voc_root}; nothing written:\n  {listed}{more}")

    for split, pairs in plan.items():
        image_dir = os.path.join(args.out, f"{split}_image")
        label_dir = os.path.join(args.out, f"{split}_label")
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        for image_path, label_path in pairs:
            shutil.copyfile(image_path, os.path.join(image_dir, os.path.basename(image_path)))
            shutil.copyfile(label_path, os.path.join(label_dir, os.path.basename(label_path)))
        print(f"{split}: {len(pairs)} pairs -> {image_dir}, {label_dir}")
    names = list(VOC_CLASSES[:args.n_classes]) + [f"class_{i}" for i in range(len(VOC_CLASSES), args.n_classes)]
    with open(os.path.join(args.out, "classes.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(names) + "\n")
    root, name = os.path.split(os.path.abspath(args.out))
    print(f"train with: python train.py --data_root {root} --dataset_name {name} --n_classes {args.n_classes}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
