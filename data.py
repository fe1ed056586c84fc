"""Data set discovery, checking and the batch generator.

Layout: `<data_root>/<dataset_name>/{train,val,test}_{image,label}/`.
Images (.jpg .jpeg .png .bmp .tif) and labels (.png, class indices) are
paired by file stem. `SegmentationDataset` is a `keras.utils.PyDataset`, so
it works on every Keras backend, decodes batches in parallel threads, and
holds only the batches in flight in memory.
"""
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

import keras

from utils.errors import UserError
from utils.image import (IMAGE_EXTS, LABEL_EXTS, check_label_values, fit_image, fit_label,
                         list_files, normalize, read_image, read_label)

SPLITS = ("train", "val", "test")


# === Discovery and pairing ===

def split_dirs(data_root, dataset_name, split):
    base = os.path.join(data_root, dataset_name)
    return os.path.join(base, f"{split}_image"), os.path.join(base, f"{split}_label")


def has_split(data_root, dataset_name, split):
    return all(os.path.isdir(d) for d in split_dirs(data_root, dataset_name, split))


def _by_stem(paths, folder):
    stems = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise UserError(
                f"{folder}: two files share the stem {stem!r} "
                f"({os.path.basename(stems[stem])}, {os.path.basename(path)}); stems must be unique"
            )
        stems[stem] = path
    return stems


def _short_list(names, limit=8):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def pair_files(image_dir, label_dir):
    """[(image_path, label_path)] paired by file stem, sorted by stem.

    Unpaired files are an error that lists them: pairing by sorted position
    (what the original did) silently mislabels a data set with a missing file.
    """
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise UserError(f"{folder}: folder not found")
    images = _by_stem(list_files(image_dir, IMAGE_EXTS), image_dir)
    labels = _by_stem(list_files(label_dir, LABEL_EXTS), label_dir)
    no_label = set(images) - set(labels)
    no_image = set(labels) - set(images)
    if no_label or no_image:
        parts = []
        if no_label:
            parts.append(f"images without a label in {label_dir}: {_short_list(no_label)}")
        if no_image:
            parts.append(f"labels without an image in {image_dir}: {_short_list(no_image)}")
        raise UserError("unpaired files: " + "; ".join(parts))
    if not images:
        raise UserError(f"{image_dir}: no images ({', '.join(IMAGE_EXTS)}) found")
    return [(images[stem], labels[stem]) for stem in sorted(images)]


def find_split(data_root, dataset_name, split):
    """Pairs of one split, or None when the split's folders do not exist."""
    if not has_split(data_root, dataset_name, split):
        return None
    return pair_files(*split_dirs(data_root, dataset_name, split))


def image_size(path):
    """(height, width) read from the file header, without decoding pixels."""
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read as an image ({exc})") from None


def scan_pairs(pairs, n_classes, ignore_label):
    """Check every label's values and every pair's sizes; return per-class pixel counts.

    Runs before training so that a bad file stops the run at once with its
    name, not in a worker thread halfway through an epoch.
    """
    counts = np.zeros(256, dtype=np.int64)
    for image_path, label_path in pairs:
        label = read_label(label_path)
        counts += check_label_values(label, label_path, n_classes, ignore_label)
        if image_size(image_path) != label.shape:
            raise UserError(
                f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from "
                f"image {image_path} size {image_size(image_path)[1]}x{image_size(image_path)[0]}"
            )
    return counts


# === Loading one sample ===

@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a network input; stored in the run config for test.py."""
    input_height: int
    input_width: int
    image_init: str = "divide"
    resize_op: int = 1
    ignore_label: int = 255

    def image(self, image):
        return normalize(fit_image(image, self.input_height, self.input_width, self.resize_op), self.image_init)

    def label(self, label):
        return fit_label(label, self.input_height, self.input_width, self.resize_op, self.ignore_label)


def load_pair(image_path, label_path, prep, n_classes, augmenter=None, rng=None):
    """Read, check, (augment,) resize and normalise one sample -> (float32 HxWx3, int32 HxW)."""
    image = read_image(image_path)
    label = read_label(label_path)
    if image.shape[:2] != label.shape:
        raise UserError(
            f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from "
            f"image size {image.shape[1]}x{image.shape[0]}"
        )
    if label.max() >= n_classes:  # only then can a value be out of range: the full check names it
        check_label_values(label, label_path, n_classes, prep.ignore_label)
    if augmenter is not None:
        image, label = augmenter(image, label, rng)
    return prep.image(image), prep.label(label).astype(np.int32)


# === Batch generator ===

class SegmentationDataset(keras.utils.PyDataset):
    """Batches of (images float32 (B, H, W, 3), labels int32 (B, H, W)).

    The order is a fresh permutation every epoch, drawn from
    `(seed, epoch)` alone, so a run (and a resumed run) is reproducible.
    `workers` threads decode batches in parallel (OpenCV releases the GIL).
    """

    def __init__(self, pairs, batch_size, prep, n_classes, shuffle=True, seed=0,
                 augmenter=None, workers=2, max_queue_size=8, start_epoch=0, label_copies=1):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if not pairs:
            raise UserError("the data set split is empty")
        self.pairs = list(pairs)
        self.batch_size = int(batch_size)
        self.prep = prep
        self.n_classes = n_classes
        self.shuffle = shuffle
        self.seed = seed
        self.augmenter = augmenter
        self.epoch = start_epoch
        self.label_copies = label_copies  # a model with an auxiliary head takes the labels once per output
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch):
        if not self.shuffle:
            return np.arange(len(self.pairs))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))

    def set_epoch(self, epoch):
        self.epoch = epoch
        self._order = self._permutation(epoch)

    def __len__(self):
        return math.ceil(len(self.pairs) / self.batch_size)

    def __getitem__(self, index):
        indices = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        images, labels = [], []
        for i in indices:
            # Per-sample RNG: the augmentation of a sample is independent of thread timing.
            rng = np.random.default_rng([self.seed, self.epoch, int(i)]) if self.augmenter else None
            image, label = load_pair(*self.pairs[i], self.prep, self.n_classes, self.augmenter, rng)
            images.append(image)
            labels.append(label)
        labels = np.stack(labels)
        return np.stack(images), (labels if self.label_copies == 1 else (labels,) * self.label_copies)

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)


def read_class_names(data_root, dataset_name, n_classes):
    """Class names from `<data_root>/<dataset_name>/classes.txt` (line = index), else class_0..."""
    path = os.path.join(data_root, dataset_name, "classes.txt")
    if not os.path.isfile(path):
        return default_class_names(n_classes)
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip()]
    return (names + default_class_names(n_classes)[len(names):])[:n_classes]


def default_class_names(n_classes):
    return [f"class_{i}" for i in range(n_classes)]

