"""Data set discovery, loading one sample, and the batch generator.

Layout: `<data_root>/<dataset_name>/{train,val,test}_{image,label}/`.
Images (.jpg .jpeg .png .bmp .tif) and labels (.png, class indices) are
paired by file stem (`utils.dataset_files`); the checks train.py runs first
are `utils.dataset_checks.verify`. `SegmentationDataset` is a
`keras.utils.PyDataset`, so it works on every Keras backend, decodes batches
in parallel threads, and holds only the batches in flight in memory.
"""
import math
import os
from dataclasses import dataclass

import numpy as np

import keras

from utils.dataset_files import SPLITS, default_class_names, paired_files  # noqa: F401  (test.py imports them here)
from utils.dataset_files import read_class_names as read_names_file
from utils.errors import UserError
from utils.image import check_label_values, check_same_size, fit_image, fit_label, normalize, read_image, read_label


# === Discovery and pairing ===

def split_dirs(data_root, dataset_name, split):
    base = os.path.join(data_root, dataset_name)
    return os.path.join(base, f"{split}_image"), os.path.join(base, f"{split}_label")


def has_split(data_root, dataset_name, split):
    return all(os.path.isdir(d) for d in split_dirs(data_root, dataset_name, split))


def pair_files(image_dir, label_dir):
    """[(image_path, label_path)] paired by file stem, sorted by stem; `utils.dataset_files.paired_files`.

    Unpaired files, a stem repeated in one folder and JPEG labels are errors that name the
    files: pairing by sorted position (what the original did) silently mislabels a data set
    with a missing file.
    """
    return paired_files(image_dir, label_dir)


def find_split(data_root, dataset_name, split):
    """Pairs of one split, or None when the split's folders do not exist."""
    if not has_split(data_root, dataset_name, split):
        return None
    return pair_files(*split_dirs(data_root, dataset_name, split))


def read_class_names(data_root, dataset_name, n_classes):
    """Class names from `<data_root>/<dataset_name>/classes.txt`, else class_0...

    The file's rules (blank lines, too many names, repeated names): `utils.dataset_files.read_class_names`.
    """
    path = os.path.join(data_root, dataset_name, "classes.txt")
    if not os.path.isfile(path):
        return default_class_names(n_classes)
    return read_names_file(path, n_classes)


# === Loading one sample ===

@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a network input; stored in the run config for test.py.

    channel_order: the order of the channels the network sees ("bgr", as images are read, or "rgb",
    what ImageNet weights of MobileNet/MobileNetV2/Xception expect); see utils.image.normalize.
    """
    input_height: int
    input_width: int
    image_init: str = "divide"
    resize_op: int = 1
    ignore_label: int = 255
    channel_order: str = "bgr"

    def image(self, image):
        return normalize(fit_image(image, self.input_height, self.input_width, self.resize_op), self.image_init,
                         self.channel_order)

    def label(self, label):
        return fit_label(label, self.input_height, self.input_width, self.resize_op, self.ignore_label)


def load_pair(image_path, label_path, prep, n_classes, augmenter=None, rng=None):
    """Read, check, (augment,) resize and normalise one sample -> (float32 HxWx3, int32 HxW).

    This is where every label's values are checked during training: train.py's data set check
    (`verify(..., cheap=True)`) reads headers only, so a value that is neither a class nor the
    ignore label raises a `UserError` naming the file when its batch is first drawn.
    """
    image = read_image(image_path)
    label = read_label(label_path)
    check_same_size(label.shape, label_path, image.shape, image_path)
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
    A bad sample raises `UserError` (see `load_pair`); the first one is also kept in
    `user_error`, because `model.fit` on the TensorFlow backend re-raises it wrapped.
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
        self.user_error = None  # the first UserError a batch raised: see __getitem__

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
            try:
                image, label = load_pair(*self.pairs[i], self.prep, self.n_classes, self.augmenter, rng)
            except UserError as exc:
                # TensorFlow's tf.data re-raises it as InvalidArgumentError (message and traceback
                # folded together), so the caller reads the original here to print one line.
                self.user_error = self.user_error or exc
                raise
            images.append(image)
            labels.append(label)
        labels = np.stack(labels)
        return np.stack(images), (labels if self.label_copies == 1 else (labels,) * self.label_copies)

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)
