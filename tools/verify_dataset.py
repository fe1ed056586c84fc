"""Check a data set before training; print a report, exit 1 when it has errors.

    python tools/verify_dataset.py --data_root data --dataset_name demo --n_classes 2
    python tools/verify_dataset.py --data_root ../shared/datasets --dataset_name bbufdataset --n_classes 2 --cheap

`--data_root`, `--dataset_name`, `--n_classes`, `--ignore_label` mean what
they mean to train.py. Checked per split (train, val, test):

errors   (training would fail or learn garbage)
  - images without a label and labels without an image (paired by stem);
    labels saved as JPEG (lossy: class ids change at every edge);
  - image and label sizes that differ; images with an EXIF rotation
    (OpenCV rotates them on load, their labels do not);
  - label values that are neither a class (0..n_classes-1) nor the ignore
    label, naming the file; a data set of 0/255 masks gets its own message;
  - colour-coded (RGB) labels; files that cannot be decoded.
warnings (worth a look)
  - classes with no pixels in a split; per-class pixel shares are printed;
  - a mix of grayscale and colour images;
  - identical images with different labels, and images in two splits.

`--cheap` (what train.py runs) reads image headers and file bytes only;
the full check also decodes every image (corrupt files, colour files whose
channels are all equal, duplicates by pixels rather than by bytes).

Importable: `verify(data_root, dataset_name, n_classes, ignore_label=255,
cheap=True) -> Report`.
"""
import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.image import IMAGE_EXTS, LABEL_EXTS, read_image, read_label  # noqa: E402

SPLITS = ("train", "val", "test")
LOSSY_LABEL_EXTS = (".jpg", ".jpeg")
EXIF_ORIENTATION = 0x0112
MAX_LISTED = 10  # per kind of problem; the count is always given


# === Report ===

@dataclass
class SplitStats:
    n_pairs: int = 0
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    image_modes: dict = field(default_factory=dict)
    pairs: list = field(default_factory=list)  # [(image_path, label_path)] paired by stem


@dataclass
class Report:
    """Outcome of `verify`: `errors` and `warnings` are one line each, naming the file."""
    root: str
    n_classes: int
    ignore_label: int
    cheap: bool
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    splits: dict = field(default_factory=dict)  # split name -> SplitStats

    @property
    def ok(self):
        return not self.errors

    def class_shares(self, split):
        """Per-class pixel shares of a split (ignored pixels excluded)."""
        counts = self.splits[split].class_counts[:self.n_classes].astype(np.float64)
        return counts / max(1.0, counts.sum())

    def format(self):
        lines = [f"data set {self.root} ({'cheap' if self.cheap else 'full'} check, --n_classes {self.n_classes}, "
                 f"--ignore_label {self.ignore_label})"]
        for name, stats in self.splits.items():
            counts = stats.class_counts
            ignored = counts[self.ignore_label] / max(1, counts.sum())
            modes = ", ".join(f"{m}: {c}" for m, c in sorted(stats.image_modes.items()))
            lines.append(f"  {name}: {stats.n_pairs} pairs; images {modes or '-'}; ignored pixels {ignored:.3f}")
            lines.append("    class pixel shares: "
                         + ", ".join(f"{i}={s:.3f}" for i, s in enumerate(self.class_shares(name))))
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"  {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


class _Limited:
    """Collects problems of one kind; lists the first MAX_LISTED, counts the rest."""

    def __init__(self, sink, summary):
        self.sink, self.summary, self.count = sink, summary, 0

    def add(self, message):
        self.count += 1
        if self.count <= MAX_LISTED:
            self.sink.append(message)

    def close(self):
        if self.count > MAX_LISTED:
            self.sink.append(f"... and {self.count - MAX_LISTED} more {self.summary}")


# === Checks ===

def _files(folder):
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isfile(os.path.join(folder, n)))


def _pair(split, image_dir, label_dir, report):
    images, labels, lossy = {}, {}, []
    for name in _files(image_dir):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTS:
            if stem in images:
                report.errors.append(f"{image_dir}: {images[stem]} and {name} share the stem {stem!r}")
            images[stem] = name
    for name in _files(label_dir):
        stem, ext = os.path.splitext(name)
        if ext.lower() in LOSSY_LABEL_EXTS:
            lossy.append(os.path.join(label_dir, name))
            labels.setdefault(stem, None)  # its image is not "unlabelled": the label is just unusable
        elif ext.lower() in LABEL_EXTS:
            labels[stem] = name
    bad = _Limited(report.errors, f"unpaired files in {split}")
    for stem in sorted(set(images) - set(labels)):
        bad.add(f"{os.path.join(image_dir, images[stem])}: no label {stem}.png in {label_dir}")
    for stem in sorted(set(labels) - set(images)):
        if labels[stem] is not None:
            bad.add(f"{os.path.join(label_dir, labels[stem])}: no image named {stem}.* in {image_dir}")
    bad.close()
    jpeg = _Limited(report.errors, f"JPEG labels in {split}")
    for path in lossy:
        jpeg.add(f"{path}: label saved as JPEG; JPEG compression changes class ids at every edge, "
                 "save labels as PNG")
    jpeg.close()
    return [(os.path.join(image_dir, images[s]), os.path.join(label_dir, labels[s]))
            for s in sorted(set(images) & set(labels)) if labels[s] is not None]


def _image_header(path):
    """(height, width, mode, exif orientation) from the header; None when unreadable."""
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(EXIF_ORIENTATION, 1) if img.format in ("JPEG", "TIFF", "PNG") else 1
            return img.size[1], img.size[0], img.mode, orientation
    except (OSError, ValueError):
        return None


def _check_split(split, pairs, stats, report, hashes):
    n_classes, ignore = report.n_classes, report.ignore_label
    values_bad = _Limited(report.errors, f"labels with bad values in {split}")
    size_bad = _Limited(report.errors, f"size mismatches in {split}")
    unread = _Limited(report.errors, f"unreadable files in {split}")
    label_sets = []
    for image_path, label_path in pairs:
        header = _image_header(image_path)
        if header is None:
            unread.add(f"{image_path}: cannot be read as an image")
            continue
        height, width, mode, orientation = header
        if orientation not in (1, None):
            report.errors.append(f"{image_path}: EXIF orientation {orientation}; OpenCV rotates the image on load "
                                 "but not its label: save the image upright without the EXIF tag")
        try:
            label = read_label(label_path)
        except UserError as exc:
            unread.add(str(exc))
            continue
        if not report.cheap:
            try:
                pixels = read_image(image_path)
            except UserError as exc:
                unread.add(str(exc))
                continue
            if mode not in ("L", "1", "P") and np.array_equal(pixels[..., 0], pixels[..., 1]) \
                    and np.array_equal(pixels[..., 0], pixels[..., 2]):
                mode = "L"  # a grey picture stored as colour
            digest = hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
        else:
            with open(image_path, "rb") as handle:
                digest = hashlib.sha1(handle.read()).hexdigest()
        kind = "grayscale" if mode in ("L", "1", "I", "I;16", "LA") else "colour"
        stats.image_modes[kind] = stats.image_modes.get(kind, 0) + 1
        hashes.setdefault(digest, []).append((split, image_path, label_path))
        if label.shape != (height, width):
            size_bad.add(f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from image "
                         f"{os.path.basename(image_path)} size {width}x{height}")
        counts = np.bincount(label.ravel(), minlength=256)
        stats.class_counts += counts
        present = set(np.flatnonzero(counts).tolist())
        label_sets.append(present)
        bad = sorted(v for v in present if v >= n_classes and v != ignore)
        if bad:
            values_bad.add(f"{label_path}: label values {sorted(present)[:12]} include {bad[:5]} outside "
                           f"0..{n_classes - 1} (and not --ignore_label {ignore})")
    # A 0/255 data set: every label holds only 0 and 255 (or 0/1/254/255 after resampling).
    if label_sets and all(s <= {0, 255} for s in label_sets) and any(255 in s for s in label_sets):
        hint = (f"; with --ignore_label {ignore} the foreground would be ignored" if ignore == 255 else "")
        report.errors.insert(0, f"{split}: all {len(label_sets)} labels hold only 0 and 255 (a 0/255 mask set, "
                                f"e.g. {pairs[0][1]}){hint}; store class indices instead (label // 255)")
    else:
        zero_255 = _Limited(report.warnings, f"0/255-only labels in {split}")
        for (_, label_path), present in zip(pairs, label_sets):
            if present == {0, 255}:
                zero_255.add(f"{label_path}: holds only 0 and 255; if 255 marks objects, not ignored "
                             "pixels, store class indices (label // 255)")
        zero_255.close()
    for closer in (values_bad, size_bad, unread):
        closer.close()
    stats.n_pairs = len(pairs)
    stats.pairs = pairs
    if len(stats.image_modes) > 1:
        report.warnings.append(f"{split}: a mix of grayscale and colour images ({stats.image_modes}); "
                               "the network sees 3 channels either way")
    missing = [i for i in range(n_classes) if stats.class_counts[i] == 0]
    if missing and pairs:
        report.warnings.append(f"{split}: classes {missing} have no pixels (check --n_classes)")


def _check_duplicates(hashes, report):
    dup = _Limited(report.warnings, "groups of duplicate images")
    for group in hashes.values():
        if len(group) < 2:
            continue
        first_split, first_image, first_label = group[0]
        reference = read_label(first_label)
        for split, image_path, label_path in group[1:]:
            label = read_label(label_path)
            where = "" if split == first_split else f" (in {first_split} and {split}: a leak between splits)"
            if label.shape != reference.shape:
                dup.add(f"{image_path} and {first_image} are identical images with labels of different sizes{where}")
            elif not np.array_equal(label, reference):
                n = int(np.count_nonzero(label != reference))
                dup.add(f"{image_path} and {first_image} are identical images whose labels differ in {n} pixels"
                        f"{where}")
            elif where:
                dup.add(f"{image_path} and {first_image} are identical samples{where}")
    dup.close()


def verify(data_root, dataset_name, n_classes, ignore_label=255, cheap=True):
    """Check `<data_root>/<dataset_name>` and return a `Report` (never raises for problems it finds).

    Raises `UserError` only when the data set folder or its train split is missing.
    `report.ok` is False when training would fail or learn from wrong labels;
    `report.splits[name].pairs` are the stem-paired files, `.class_counts` the
    per-value pixel counts (256 bins).
    """
    root = os.path.join(data_root, dataset_name)
    if not os.path.isdir(root):
        raise UserError(f"{root}: data set folder not found (see --data_root and --dataset_name)")
    report = Report(root=root, n_classes=int(n_classes), ignore_label=int(ignore_label), cheap=bool(cheap))
    hashes = {}
    for split in SPLITS:
        image_dir = os.path.join(root, f"{split}_image")
        label_dir = os.path.join(root, f"{split}_label")
        if not os.path.isdir(image_dir) and not os.path.isdir(label_dir):
            continue
        for folder in (image_dir, label_dir):
            if not os.path.isdir(folder):
                report.errors.append(f"{folder}: folder missing (its partner folder exists)")
        if not (os.path.isdir(image_dir) and os.path.isdir(label_dir)):
            continue
        stats = report.splits.setdefault(split, SplitStats())
        pairs = _pair(split, image_dir, label_dir, report)
        if not pairs:
            report.errors.append(f"{image_dir}: no image/label pairs")
        _check_split(split, pairs, stats, report, hashes)
    if "train" not in report.splits:
        raise UserError(f"{root}: no train_image/ and train_label/ folders")
    _check_duplicates(hashes, report)
    return report


# === CLI ===

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="data", help="folder holding the data sets")
    p.add_argument("--dataset_name", default="demo", help="data set folder under --data_root")
    p.add_argument("--n_classes", type=positive_int, default=2, help="number of classes, background included")
    p.add_argument("--ignore_label", type=int, default=255, help="label value excluded from loss and metrics")
    p.add_argument("--cheap", action="store_true", help="headers and bytes only (what train.py runs)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not 0 <= args.ignore_label <= 255:
        raise UserError(f"--ignore_label {args.ignore_label}: must be in 0..255")
    report = verify(args.data_root, args.dataset_name, args.n_classes, args.ignore_label, cheap=args.cheap)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
