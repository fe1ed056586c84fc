"""Data-set checks: what train.py runs before every training and resume (cheap), and the full check.

`verify(data_root, dataset_name, n_classes, ignore_label=255, cheap=True) -> Report`;
tools/verify_dataset.py is the command line over it. Per split (train, val, test):

cheap (train.py, before every training and resume; file headers only: 0.3 s for 1,000 512x512 pairs)
  - pairing by stem (`utils.dataset_files.pair_by_stem`): unpaired files, repeated stems,
    labels saved as JPEG;
  - image and label sizes from the file headers (PIL reads the header at open and decodes
    pixels only when asked); an EXIF orientation other than 1 (OpenCV rotates the image on
    load, not its label); unreadable headers; the grayscale/colour mix from the header mode;
  - a sample of CHEAP_LABEL_SAMPLE labels per split, evenly spread, is decoded: their values
    are checked and, when all hold only 0 and 255, the split is a 0/255 mask set. That set
    passes every per-file check (255 is the ignore label) and would train on background alone,
    so it is worth the few decodes.
  Not done cheaply, and where it happens instead:
  - every label's values: `data.load_pair` checks each label as the batch generator reads it,
    so a bad file stops training with its name within the first epoch;
  - class pixel counts (`--class_weights auto`, the shares line): `report.splits[s].class_counts`
    decodes the split's labels on first access (and checks their values);
  - decoding images, duplicate images (hashes), colour-coded labels, missing classes:
    the full check only.
full (tools/verify_dataset.py without --cheap): decodes every image and label, checks every
  label's values, counts class pixels, finds grey images stored as colour, identical images
  (by pixels) with different labels or in two splits, classes without pixels.
"""
import hashlib
import os

import numpy as np
from PIL import Image

from utils.dataset_files import SPLITS, duplicate_message, jpeg_label_message, pair_by_stem
from utils.errors import UserError
from utils.image import check_label_values, read_image, read_label, size_mismatch

EXIF_ORIENTATION = 0x0112
MAX_LISTED = 10  # per kind of problem; the count is always given
CHEAP_LABEL_SAMPLE = 16  # labels decoded per split by a cheap check


# === Report ===

def count_classes(pairs, n_classes, ignore_label):
    """Per-value pixel counts (256 bins) of the pairs' labels; decodes every label.

    A label value that is neither a class nor `ignore_label` raises a `UserError` naming the file.
    """
    counts = np.zeros(256, dtype=np.int64)
    for _, label_path in pairs:
        counts += check_label_values(read_label(label_path), label_path, n_classes, ignore_label)
    return counts


class SplitStats:
    """One split of a `Report`.

    `pairs`: [(image_path, label_path)] paired by stem; `image_modes`: {"grayscale"|"colour": n};
    `class_counts`: per-value label pixel counts (256 bins). A full check counts as it decodes;
    in a cheap report the counts are computed on first access (every label of the split
    decoded, a bad value raises `UserError`), so a run that never reads them never pays.
    """

    def __init__(self, n_classes, ignore_label, pairs=()):
        self.n_classes, self.ignore_label = n_classes, ignore_label
        self.pairs = list(pairs)
        self.image_modes = {}
        self._counts = None

    @property
    def n_pairs(self):
        return len(self.pairs)

    @property
    def counted(self):
        """True once `class_counts` is known (full check, or after its first access)."""
        return self._counts is not None

    @property
    def class_counts(self):
        if self._counts is None:
            self._counts = count_classes(self.pairs, self.n_classes, self.ignore_label)
        return self._counts


class Report:
    """Outcome of `verify`: `errors` and `warnings` are one line each, naming the file."""

    def __init__(self, root, n_classes, ignore_label, cheap):
        self.root, self.n_classes, self.ignore_label, self.cheap = root, n_classes, ignore_label, cheap
        self.errors, self.warnings = [], []
        self.splits = {}  # split name -> SplitStats

    @property
    def ok(self):
        return not self.errors

    def class_shares(self, split):
        """Per-class pixel shares of a split (ignored pixels excluded); counts them if not yet counted."""
        counts = self.splits[split].class_counts[:self.n_classes].astype(np.float64)
        return counts / max(1.0, counts.sum())

    def format(self):
        lines = [f"data set {self.root} ({'cheap' if self.cheap else 'full'} check, --n_classes {self.n_classes}, "
                 f"--ignore_label {self.ignore_label})"]
        for name, stats in self.splits.items():
            modes = ", ".join(f"{m}: {c}" for m, c in sorted(stats.image_modes.items()))
            if not stats.counted:
                lines.append(f"  {name}: {stats.n_pairs} pairs; images {modes or '-'}; class pixel shares not "
                             "counted (cheap check)")
                continue
            counts = stats.class_counts
            ignored = counts[self.ignore_label] / max(1, counts.sum())
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

def _pair(split, image_dir, label_dir, report):
    found = pair_by_stem(image_dir, label_dir)
    report.errors.extend(duplicate_message(paths) for paths in found.duplicates)
    bad = _Limited(report.errors, f"unpaired files in {split}")
    for path in found.unpaired_images:
        bad.add(f"{path}: no label {os.path.splitext(os.path.basename(path))[0]}.png in {label_dir}")
    for path in found.unpaired_labels:
        bad.add(f"{path}: no image named {os.path.splitext(os.path.basename(path))[0]}.* in {image_dir}")
    bad.close()
    jpeg = _Limited(report.errors, f"JPEG labels in {split}")
    for path in found.jpeg_labels:
        jpeg.add(jpeg_label_message(path))
    jpeg.close()
    return found.pairs


def _header(path):
    """(height, width, mode, EXIF orientation) from the file header, pixels not decoded; None when unreadable.

    PNG's `getexif()` decodes the whole image to look for an eXIf chunk after the pixels, so
    for PNG only a chunk before them (which `Image.open` has already read) is seen.
    """
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                exif = Image.Exif()
                if img.info.get("exif"):
                    exif.load(img.info["exif"])
            else:
                exif = img.getexif()
            return img.size[1], img.size[0], img.mode, exif.get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        return None


def _sample(n, k):
    return set(np.linspace(0, n - 1, num=min(n, k)).round().astype(int).tolist()) if n and k else set()


def _check_split(split, pairs, stats, report, hashes):
    n_classes, ignore = report.n_classes, report.ignore_label
    values_bad = _Limited(report.errors, f"labels with bad values in {split}")
    size_bad = _Limited(report.errors, f"size mismatches in {split}")
    unread = _Limited(report.errors, f"unreadable files in {split}")
    decoded = set(range(len(pairs))) if not report.cheap else _sample(len(pairs), CHEAP_LABEL_SAMPLE)
    counts = np.zeros(256, np.int64)
    label_sets = []  # (label_path, values present) of the decoded labels
    for index, (image_path, label_path) in enumerate(pairs):
        header = _header(image_path)
        if header is None:
            unread.add(f"{image_path}: cannot be read as an image")
            continue
        height, width, mode, orientation = header
        if orientation not in (1, None):
            report.errors.append(f"{image_path}: EXIF orientation {orientation}; OpenCV rotates the image on load "
                                 "but not its label: save the image upright without the EXIF tag")
        if index in decoded:
            try:
                label = read_label(label_path)
            except UserError as exc:
                unread.add(str(exc))
                continue
            label_shape = label.shape
        else:
            label_header = _header(label_path)
            if label_header is None:
                unread.add(f"{label_path}: cannot be read as a label PNG")
                continue
            label_shape = label_header[:2]
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
            hashes.setdefault(digest, []).append((split, image_path, label_path))
        kind = "grayscale" if mode in ("L", "1", "I", "I;16", "LA") else "colour"
        stats.image_modes[kind] = stats.image_modes.get(kind, 0) + 1
        mismatch = size_mismatch(label_shape, label_path, (height, width), image_path)
        if mismatch:
            size_bad.add(mismatch)
        if index in decoded:
            try:
                label_counts = check_label_values(label, label_path, n_classes, ignore)
            except UserError as exc:
                values_bad.add(str(exc))
                label_counts = np.bincount(label.ravel(), minlength=256)
            counts += label_counts
            label_sets.append((label_path, set(np.flatnonzero(label_counts).tolist())))
    _check_zero_255(split, label_sets, report, sampled=report.cheap and len(label_sets) < len(pairs))
    for closer in (values_bad, size_bad, unread):
        closer.close()
    if len(stats.image_modes) > 1:
        report.warnings.append(f"{split}: a mix of grayscale and colour images ({stats.image_modes}); "
                               "the network sees 3 channels either way")
    if not report.cheap:
        stats._counts = counts
        missing = [i for i in range(n_classes) if counts[i] == 0]
        if missing and pairs:
            report.warnings.append(f"{split}: classes {missing} have no pixels (check --n_classes)")


def _check_zero_255(split, label_sets, report, sampled):
    """A 0/255 mask set: every (decoded) label holds only 0 and 255 -> an error; one such file -> a warning."""
    ignore = report.ignore_label
    if label_sets and all(s <= {0, 255} for _, s in label_sets) and any(255 in s for _, s in label_sets):
        hint = f"; with --ignore_label {ignore} the foreground would be ignored" if ignore == 255 else ""
        which = f"all {len(label_sets)} sampled labels" if sampled else f"all {len(label_sets)} labels"
        report.errors.insert(0, f"{split}: {which} hold only 0 and 255 (a 0/255 mask set, e.g. {label_sets[0][0]})"
                                f"{hint}; store class indices instead (label // 255)")
        return
    zero_255 = _Limited(report.warnings, f"0/255-only labels in {split}")
    for label_path, present in label_sets:
        if present == {0, 255}:
            zero_255.add(f"{label_path}: holds only 0 and 255; if 255 marks objects, not ignored "
                         "pixels, store class indices (label // 255)")
    zero_255.close()


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
    `report.splits[name].pairs` are the stem-paired files, `.class_counts` the per-value pixel
    counts (256 bins; computed on first access after a cheap check). What `cheap` leaves out:
    the module docstring.
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
        pairs = _pair(split, image_dir, label_dir, report)
        if not pairs:
            report.errors.append(f"{image_dir}: no image/label pairs")
        stats = report.splits[split] = SplitStats(report.n_classes, report.ignore_label, pairs)
        _check_split(split, pairs, stats, report, hashes)
    if "train" not in report.splits:
        raise UserError(f"{root}: no train_image/ and train_label/ folders")
    _check_duplicates(hashes, report)
    return report
