"""Data set discovery, loading one sample, and the batch generator.

Layout: `<data_root>/<dataset_name>/{train,val,test}_{image,label}/`.
Images (.jpg .jpeg .png .bmp .tif) and labels (.png, class indices) are
paired by file stem (`utils.dataset_files`); the checks train.py runs first
are `utils.dataset_checks.verify`. `SegmentationDataset` is a
`keras.utils.PyDataset`, so it works on every Keras backend, decodes batches
in parallel threads, and holds only the batches in flight in memory. With
`--resize_op 3` its samples are crops of the images at their own resolution
(`utils.crops`).
"""
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

import keras

from utils.dataset_files import SPLITS, default_class_names, paired_files  # noqa: F401  (test.py imports them here)
from utils.dataset_files import read_class_names as read_names_file
from utils import crops as crop_tools
from utils.errors import UserError
from utils.image import (check_label_values, check_same_size, fit_image, fit_label, normalize, normalize_into,
                         read_image, read_image_for, read_label)

RESIZE_OPS = (1, 2, 3)  # 1: resize, 2: letterbox, 3: crops at the image's own resolution


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

    resize_op: 1 resize to the input size, 2 letterbox (grey padding, ignore-label padding in
    labels), 3 none: the image keeps its own resolution (training cuts input-sized crops from it,
    `SegmentationDataset`), so `image()` only normalises and `label()` returns the label as it is.
    channel_order: the order of the channels the network sees ("bgr", as images are read, or "rgb",
    what ImageNet weights of MobileNet/MobileNetV2/Xception expect); see utils.image.normalize.
    """
    input_height: int
    input_width: int
    image_init: str = "divide"
    resize_op: int = 1
    ignore_label: int = 255
    channel_order: str = "bgr"

    def __post_init__(self):
        if self.resize_op not in RESIZE_OPS:
            raise UserError(f"--resize_op {self.resize_op!r}: expected 1 (resize), 2 (letterbox) or 3 (crops)")

    def image(self, image, source_size=None):
        """uint8 BGR image -> float32 network input (`source_size`: see `utils.image.letterbox_image`)."""
        if self.resize_op == 3:
            return normalize(image, self.image_init, self.channel_order)
        return normalize(fit_image(image, self.input_height, self.input_width, self.resize_op, source_size),
                         self.image_init, self.channel_order)

    def image_into(self, image, out, source_size=None):
        """`image(image, source_size)` written into `out` (float32 (H, W, 3)), e.g. a slot of a batch."""
        if self.resize_op != 3:
            image = fit_image(image, self.input_height, self.input_width, self.resize_op, source_size)
        return normalize_into(image, self.image_init, self.channel_order, out)

    def label(self, label):
        if self.resize_op == 3:
            return label
        return fit_label(label, self.input_height, self.input_width, self.resize_op, self.ignore_label)

    def load_image(self, path):
        """Read and fit one image file -> (float32 network input, (height, width) of the file).

        Uses JPEG scaled decoding (`utils.image.read_image_for`): the same pixels as training
        without `--augment` sees, so prediction should read through here too.
        """
        image, source_size = read_image_for(path, self.input_height, self.input_width, self.resize_op)
        return self.image(image, source_size), source_size


def read_checked(image_path, label_path, n_classes, ignore_label, prep=None):
    """Read one pair and check it -> (uint8 BGR image, uint8 label, (source_h, source_w)).

    With `prep` (resize_op 1/2, no augmentation: the image only has to be fitted) a JPEG image is
    decoded at a reduced scale (`utils.image.read_image_for`); the size check always compares the
    label with the image file's own size. This is where every label's values are checked during
    training: train.py's data set check (`verify(..., cheap=True)`) reads headers only, so a value
    that is neither a class nor the ignore label raises a `UserError` naming the file when its
    batch is first drawn. The check costs one `max()` when every value is a class.
    """
    if prep is not None:
        image, source_size = read_image_for(image_path, prep.input_height, prep.input_width, prep.resize_op)
    else:
        image = read_image(image_path)
        source_size = image.shape[:2]
    label = read_label(label_path)
    check_same_size(label.shape, label_path, source_size, image_path)
    if label.max() >= n_classes:  # only then can a value be out of range: the full check names it
        check_label_values(label, label_path, n_classes, ignore_label)
    return image, label, source_size


def load_pair(image_path, label_path, prep, n_classes, augmenter=None, rng=None):
    """Read, check, (augment,) resize and normalise one sample -> (float32 HxWx3, int32 HxW).

    The reference path (full decode): `SegmentationDataset` batches the same samples, reading
    JPEGs at a reduced scale when no augmenter needs the full image. Checks: `read_checked`.
    """
    image, label, _ = read_checked(image_path, label_path, n_classes, prep.ignore_label)
    if augmenter is not None:
        image, label = augmenter(image, label, rng)
    return prep.image(image), prep.label(label).astype(np.int32)


# === Batch generator ===

class SegmentationDataset(keras.utils.PyDataset):
    """Batches of (images float32 (B, H, W, 3), labels int32 (B, H, W)), H x W the input size.

    The order is a fresh permutation every epoch, drawn from `(seed, epoch)` alone, so a run
    (and a resumed run, `start_epoch`) is reproducible; an augmented sample's randomness comes
    from `(seed, epoch, image index)`. `workers` threads build batches in parallel (OpenCV and
    numpy release the GIL), each written straight into one preallocated batch: read in order
    (`model.fit(..., shuffle=False)`: the order is already shuffled here), the batches after
    the one asked for are built ahead by this data set's own pool (`threads`), and Keras sees
    `workers == 1` (its enqueuer restarts a pool every epoch and waits 0.1 s to drain it). A
    batch not built ahead (read out of order, as `model.fit`'s default `shuffle=True` reads
    them) is shared out among the threads sample by sample. Either way a batch's content depends
    on `(seed, epoch, index)` only, never on the threads. A bad sample
    raises `UserError` (see `read_checked`); the first one is also kept in `user_error`, because
    `model.fit` on the TensorFlow backend re-raises it wrapped.

    resize_op 1/2: one sample per image; without an augmenter JPEGs are decoded at a reduced
    scale (`utils.image.read_image_for`, bounded difference from `load_pair`'s full decode).

    resize_op 3 (crops): `crops_per_image` ('auto' or an int >= 1, `utils.crops`) input-sized
    crops per image and epoch; 'auto' = floor(H/h) * floor(W/w) (at least 1) from each image's
    header size. An epoch is every crop of every image: images in the `(seed, epoch)`
    permutation, each image's crops consecutive, crop positions from
    `(seed, epoch, image index, 1)` (`utils.crops.crop_positions`), so a run resumed at
    `start_epoch` draws the crops an uninterrupted one draws. `len()` = ceil(total crops / batch).
    An image smaller than the crop is padded bottom/right (grey, `prep.ignore_label`). The
    augmenter, when given, must be built with `full_image=True`: it transforms the whole image
    once per epoch, then the crops are cut. Each image is decoded once per epoch (`CropCache`).
    """

    def __init__(self, pairs, batch_size, prep, n_classes, shuffle=True, seed=0,
                 augmenter=None, workers=2, max_queue_size=8, start_epoch=0, label_copies=1,
                 crops_per_image="auto"):
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.threads = max(1, int(workers))
        self._pool = None
        self._ahead = {}  # (epoch, batch index) -> Future of a batch built ahead
        self._ahead_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._next = None  # the batch index an in-order reader asks for next
        if not pairs:
            raise UserError("the data set split is empty")
        self.pairs = list(pairs)
        self.batch_size = int(batch_size)
        self.prep = prep
        self.n_classes = n_classes
        self.shuffle = shuffle
        self.seed = seed
        self.augmenter = augmenter
        self.label_copies = label_copies  # a model with an auxiliary head takes the labels once per output
        self.crops_per_image = crop_tools.parse_crops_per_image(crops_per_image)
        self.crops = prep.resize_op == 3
        if self.crops and augmenter is not None and not getattr(augmenter, "full_image", False):
            raise UserError("--augment with --resize_op 3 needs the full-image augmenter "
                            "(utils.augment.build_augmenter(..., full_image=True))")
        self.counts = (crop_tools.crop_counts([image for image, _ in self.pairs], prep.input_height,
                                              prep.input_width, self.crops_per_image) if self.crops else None)
        # In order, only images whose crops straddle the batches in flight are held.
        self._cache = crop_tools.CropCache(max_entries=2 * (self.threads + max_queue_size) + 2)
        self.user_error = None  # the first UserError a batch raised: see __getitem__
        self.set_epoch(start_epoch)

    def _permutation(self, epoch):
        if not self.shuffle:
            return np.arange(len(self.pairs))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))

    def set_epoch(self, epoch):
        order = self._permutation(epoch)
        samples = order
        if self.crops:
            # (image index, crop index) per sample; an image's crops consecutive.
            counts = self.counts[order]
            samples = np.stack([np.repeat(order, counts),
                                np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)], 1)
            self._cache.drop(lambda key: key[0] == epoch)  # crops left over by a cut-short epoch
        # One tuple, replaced at once: a batch in flight keeps the epoch it started with.
        self._epoch_state = (epoch, order, samples)
        self.epoch, self._order = epoch, order
        with self._ahead_lock:
            for key in [key for key in self._ahead if key[0] != epoch]:
                self._ahead.pop(key).cancel()
            self._next = None

    def __len__(self):
        return math.ceil(len(self._epoch_state[2]) / self.batch_size)

    def __getitem__(self, index):
        state = self._epoch_state
        if self.threads == 1:
            return self._batch(state, index)
        with self._ahead_lock:
            future = self._ahead.pop((state[0], index), None)
            if index == 0 or index == self._next:
                self._build_ahead(state, range(index + 1, min(len(self), index + 1 + self.threads)))
            self._next = index + 1
        # Not built ahead (the first batch, or batches read out of order, as model.fit(shuffle=True)
        # reads them): this batch's samples are shared out among the threads instead.
        return future.result() if future is not None else self._batch(state, index, split=self.threads)

    def _build_ahead(self, state, indices):
        for index in indices:
            if (state[0], index) not in self._ahead:
                self._ahead[(state[0], index)] = self._executor().submit(self._batch, state, index)

    def _executor(self):
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="SegmentationDataset")
        return self._pool

    def _batch(self, state, index, split=1):
        """Batch `index` of the epoch in `state`; `split` > 1: built by this thread and split - 1 pool threads
        (the pool's threads themselves never split, so none of them waits on another)."""
        epoch, samples = state[0], state[2][index * self.batch_size:(index + 1) * self.batch_size]
        h, w = self.prep.input_height, self.prep.input_width
        images = np.empty((len(samples), h, w, 3), np.float32)
        labels = np.empty((len(samples), h, w), np.int32)

        def fill(rows):
            try:
                for j in rows:
                    if self.crops:
                        i, k = int(samples[j][0]), int(samples[j][1])
                        image, label = self._cache.get((epoch, i), k, int(self.counts[i]),
                                                       lambda: self._crops(epoch, i))
                        self.prep.image_into(image, images[j])
                    else:
                        image, label, source_size = self._sample(epoch, int(samples[j]))
                        self.prep.image_into(image, images[j], source_size)
                        label = self.prep.label(label)
                    labels[j] = label
            except UserError as exc:
                # TensorFlow's tf.data re-raises it as InvalidArgumentError (message and traceback
                # folded together), so the caller reads the original here to print one line.
                self.user_error = self.user_error or exc
                raise
        parts = np.array_split(np.arange(len(samples)), max(1, min(split, len(samples))))
        helpers = [self._executor().submit(fill, rows) for rows in parts[1:]]
        fill(parts[0])
        for helper in helpers:
            helper.result()
        return images, (labels if self.label_copies == 1 else (labels,) * self.label_copies)

    def _rng(self, epoch, i, *stream):
        return np.random.default_rng([self.seed, epoch, i, *stream])

    def _sample(self, epoch, i):
        """(image, label, source size) of pair i, augmented (at the input size) when an augmenter is set."""
        # Per-sample RNG: the augmentation of a sample is independent of thread timing.
        reduced = None if self.augmenter else self.prep
        image, label, source_size = read_checked(*self.pairs[i], self.n_classes, self.prep.ignore_label, reduced)
        if self.augmenter:
            image, label = self.augmenter(image, label, self._rng(epoch, i))
            source_size = None
        return image, label, source_size

    def _crops(self, epoch, i):
        """Every crop of image i in this epoch: one decode (and one augmentation), then windows."""
        image, label, _ = read_checked(*self.pairs[i], self.n_classes, self.prep.ignore_label)
        if self.augmenter:
            image, label = self.augmenter(image, label, self._rng(epoch, i))
        h, w = self.prep.input_height, self.prep.input_width
        positions = crop_tools.crop_positions(self._rng(epoch, i, 1), *label.shape, h, w, int(self.counts[i]))
        image, label = crop_tools.pad_to_crop(image, label, h, w, self.prep.ignore_label)
        return crop_tools.cut_crops(image, label, positions, h, w)

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)
