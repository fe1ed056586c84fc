"""Training on crops (`train.py --resize_op 3`): crop counts, crop positions, padding, and the decode cache.

Each training sample is an `input_height x input_width` window of the image at its own
resolution (after `--augment`'s full-image scale/rotation/flip/jitter, when on). An image
smaller than the window is padded at the bottom/right (image: `LETTERBOX_FILL` grey, label:
the ignore label), as mmsegmentation's RandomCrop + Pad do. `SegmentationDataset` draws
`crops_per_image` windows from every image each epoch and decodes each image once per
epoch (`CropCache`), however its crops fall into batches and threads.
"""
import threading

import numpy as np
from PIL import Image

from utils.errors import UserError
from utils.image import LETTERBOX_FILL

FLAG = "--crops_per_image"
EXIF_ORIENTATION = 0x0112


# === How many crops ===

def parse_crops_per_image(value):
    """'auto' (any case) or an int >= 1 (also given as text) -> 'auto' | int; anything else: UserError."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{FLAG} {value!r}: expected 'auto' or a whole number >= 1") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{FLAG} {value!r}: expected 'auto' or a whole number >= 1")
    return int(value)


def auto_crop_count(height, width, crop_h, crop_w):
    """The number of non-overlapping crop_h x crop_w windows the image holds, at least 1."""
    return max(1, (height // crop_h) * (width // crop_w))


def image_size(path):
    """(height, width) as OpenCV will decode the image, from the file header (pixels not decoded).

    An EXIF orientation of 5..8 (a quarter turn, which OpenCV applies) swaps the two. PNG's
    `getexif()` would decode the pixels, so for PNG only an eXIf chunk before them is seen.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.format == "PNG":
                orientation = 1
                if img.info.get("exif"):
                    exif = Image.Exif()
                    exif.load(img.info["exif"])
                    orientation = exif.get(EXIF_ORIENTATION, 1)
            else:
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        raise UserError(f"{path}: cannot be read as an image (its header gives no size)") from None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def crop_counts(image_paths, crop_h, crop_w, crops_per_image):
    """Crops per image (int array): `crops_per_image` for every image, or with 'auto' each image's
    `auto_crop_count` from its header size."""
    crops_per_image = parse_crops_per_image(crops_per_image)
    if crops_per_image != "auto":
        return np.full(len(image_paths), crops_per_image, dtype=np.int64)
    return np.array([auto_crop_count(*image_size(p), crop_h, crop_w) for p in image_paths], dtype=np.int64)


# === Where the crops go ===

def crop_positions(rng, height, width, crop_h, crop_w, count):
    """`count` (top, left) window corners in an image of height x width padded to at least the crop size.

    Windows come in rounds: a round is the grid of floor(H/h) x floor(W/w) non-overlapping windows
    (at least one) shifted by one random offset, in a random order, so `auto` (one round) covers the
    grid's share of the image, all of it when the crop divides the image, and every pixel over a
    few epochs. More crops than a round holds start a new round with a new offset; fewer take a
    random subset of the round.
    """
    pad_h, pad_w = max(height, crop_h), max(width, crop_w)
    rows, cols = max(1, pad_h // crop_h), max(1, pad_w // crop_w)
    positions = []
    while len(positions) < count:
        top0 = int(rng.integers(0, pad_h - rows * crop_h + 1))
        left0 = int(rng.integers(0, pad_w - cols * crop_w + 1))
        for cell in rng.permutation(rows * cols)[:count - len(positions)]:
            positions.append((top0 + int(cell // cols) * crop_h, left0 + int(cell % cols) * crop_w))
    return positions


def pad_to_crop(image, label, crop_h, crop_w, ignore_label):
    """Pad bottom/right to at least crop_h x crop_w (image: grey, label: `ignore_label`); no copy when large enough."""
    height, width = label.shape
    if height >= crop_h and width >= crop_w:
        return image, label
    pad_h, pad_w = max(height, crop_h), max(width, crop_w)
    padded_image = np.full((pad_h, pad_w, 3), LETTERBOX_FILL, dtype=image.dtype)
    padded_image[:height, :width] = image
    padded_label = np.full((pad_h, pad_w), ignore_label, dtype=label.dtype)
    padded_label[:height, :width] = label
    return padded_image, padded_label


def cut_crops(image, label, positions, crop_h, crop_w):
    """[(image window, label window)] views at `positions` (no copies)."""
    return [(image[t:t + crop_h, l:l + crop_w], label[t:t + crop_h, l:l + crop_w]) for t, l in positions]


# === One decode per image per epoch ===

class _Entry:
    __slots__ = ("lock", "crops", "served")

    def __init__(self):
        self.lock = threading.Lock()
        self.crops = None
        self.served = set()


class CropCache:
    """Thread-safe store of the crops of images whose crops are still being served.

    `get(key, k, n, load)` returns crop `k` of `n` for `key` (e.g. (epoch, image index)); the
    first caller for a key runs `load()` -> list of crops while later callers of that key wait on
    its lock, so an image whose crops straddle batches served by different threads is decoded
    once. The entry is dropped once all `n` crops have been served (a crop served twice counts
    once), so the cache holds only images whose crops are in flight. A failing `load()` leaves no
    entry: the next caller retries (and raises the same error). At most `max_entries` images are
    held: batches asked for far out of order (`model.fit(shuffle=True)` reorders them) evict the
    oldest entry, whose remaining crops are then decoded again (the same crops: they are drawn
    from the seed), so memory stays bounded whatever the order.
    """

    def __init__(self, max_entries=64):
        self._lock = threading.Lock()
        self._entries = {}
        self.max_entries = max(1, int(max_entries))

    def get(self, key, k, n, load):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                while len(self._entries) >= self.max_entries:
                    del self._entries[next(iter(self._entries))]
                entry = self._entries[key] = _Entry()
        with entry.lock:
            if entry.crops is None:
                try:
                    entry.crops = load()
                except BaseException:
                    with self._lock:
                        if self._entries.get(key) is entry:
                            del self._entries[key]
                    raise
            crop = entry.crops[k]
            entry.served.add(k)
            done = len(entry.served) >= n
        if done:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
        return crop

    def drop(self, keep):
        """Forget every entry whose key fails `keep(key)` (e.g. those of finished epochs)."""
        with self._lock:
            for key in [key for key in self._entries if not keep(key)]:
                del self._entries[key]

    def __len__(self):
        with self._lock:
            return len(self._entries)


__all__ = ["FLAG", "parse_crops_per_image", "auto_crop_count", "image_size", "crop_counts", "crop_positions",
           "pad_to_crop", "cut_crops", "CropCache"]
