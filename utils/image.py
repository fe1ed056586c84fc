"""Image and label I/O, resizing, letterboxing and normalisation.

Conventions used everywhere in the toolkit:
- images are uint8 arrays (H, W, 3) in OpenCV's BGR channel order, as the
  original toolkit read them (so `sub_mean` subtracts B, G, R means);
- labels are uint8 arrays (H, W) of class indices; they are only ever resized
  with nearest-neighbour interpolation, and padding uses the ignore label.
"""
import os

import cv2
import numpy as np
from PIL import Image

from utils.errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
LABEL_EXTS = (".png",)

IMAGE_INITS = ("divide", "sub_mean", "sub_and_divide")
# The channel order the network sees; images are read as BGR. ImageNet weights of TensorFlow-trained
# nets (MobileNet, Xception) expect RGB, those of Caffe ports (ResNet50, VGG16) BGR.
CHANNEL_ORDERS = ("bgr", "rgb")
# Caffe/VGG ImageNet means in B, G, R order (the original's `sub_mean`).
BGR_MEANS = np.array([103.939, 116.779, 123.68], dtype=np.float32)
# Grey used to pad letterboxed images (the usual letterbox convention).
LETTERBOX_FILL = 128


# === Reading ===

def read_image(path):
    """Read an image as uint8 (H, W, 3) BGR; grayscale images are expanded."""
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile: non-ASCII paths work on Windows
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: cannot be decoded as an image")
    return image


# JPEG scaled decoding: libjpeg decodes at 1/2, 1/4 or 1/8 scale straight from the DCT (an
# area-like average, several times cheaper than a full decode), to ceil(size / factor).
_REDUCED = {1: (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE),
            2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
            4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
            8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8)}
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_header(data):
    """(height, width, components, has_exif) from a JPEG's markers (uint8 array of the file), or None.

    None for anything that is not a JPEG with a readable frame header. `has_exif` is True when an
    APP1 Exif segment comes before the frame header: OpenCV applies its orientation, which may swap
    height and width, so callers treat such a file as one of unknown size.
    """
    view = memoryview(data)
    n = len(view)
    if n < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    pos, exif = 2, False
    while pos + 4 <= n:
        if view[pos] != 0xFF:
            return None
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        length = (view[pos + 2] << 8) | view[pos + 3]
        if marker == 0xE1 and bytes(view[pos + 4:pos + 8]) == b"Exif":
            exif = True
        if marker in _SOF_MARKERS:
            if pos + 10 > n:
                return None
            height, width = (view[pos + 5] << 8) | view[pos + 6], (view[pos + 7] << 8) | view[pos + 8]
            return (height, width, view[pos + 9], exif) if height and width else None
        pos += 2 + length
    return None


def reduced_factor(height, width, min_height, min_width):
    """The largest JPEG scale divisor (8, 4, 2, else 1) whose decode is still >= min_height x min_width."""
    for factor in (8, 4, 2):
        if -(-height // factor) >= min_height and -(-width // factor) >= min_width:
            return factor
    return 1


def read_image_for(path, height, width, resize_op):
    """Read an image for fitting to `height x width` -> (uint8 BGR image, (source_h, source_w)).

    A JPEG (no Exif segment) is decoded at the smallest 1/2, 1/4 or 1/8 scale that is still at or
    above the size `fit_image` will resize it to (the input size for `resize_op` 1, the letterboxed
    size for 2), so the returned image may be smaller than the file; `(source_h, source_w)` is
    always the file's own size (pass it to `fit_image`). The scaled decode averages blocks of
    pixels, so its fitted result differs from `fit_image(read_image(path))` (which samples the
    full image bilinearly and aliases on a large shrink) by a few grey levels: see
    tests/test_pipeline_equivalence.py. Other files, and `resize_op` 3: `read_image`.
    A grayscale JPEG is decoded as grey and expanded (identical values, cheaper).
    """
    data = np.fromfile(path, dtype=np.uint8)
    header = jpeg_header(data) if data.size else None
    if header is not None and not header[3] and resize_op in (1, 2):
        src_h, src_w, components, _ = header
        need_h, need_w = (height, width) if resize_op == 1 else letterbox_geometry(src_h, src_w, height, width)[2:]
        factor = reduced_factor(src_h, src_w, need_h, need_w)
        colour_flag, grey_flag = _REDUCED[factor]
        image = cv2.imdecode(data, grey_flag if components == 1 else colour_flag)
        if image is not None and image.shape[:2] == (-(-src_h // factor), -(-src_w // factor)):
            return (cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image), (src_h, src_w)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: cannot be decoded as an image")
    return image, image.shape[:2]


def read_label(path):
    """Read a label PNG as uint8 (H, W) class indices.

    Palette ("P") PNGs give their indices, grayscale PNGs their values, and a
    3-channel PNG is accepted only when its channels are equal; a
    colour-coded label is an error because its colours are not class ids.
    """
    data = np.fromfile(path, dtype=np.uint8)
    # Fast path: an 8-bit grayscale PNG (IHDR bit depth 8, colour type 0) decodes with OpenCV in half
    # PIL's time; every other kind (palette, 16-bit, RGB) needs PIL's view of the file.
    if data.size > 26 and data[:8].tobytes() == b"\x89PNG\r\n\x1a\n" and data[24] == 8 and data[25] == 0:
        label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if label is not None and label.ndim == 2:
            return label
    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.array(img)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read as a label PNG ({exc})") from None
    if mode in ("P", "L", "1"):
        return array.astype(np.uint8)
    if mode in ("I", "I;16", "I;16B", "I;16L"):
        if array.size and array.max() > 255:
            raise UserError(f"{path}: 16-bit label with values above 255; class ids must fit in 8 bits")
        return array.astype(np.uint8)
    if mode in ("RGB", "RGBA", "LA"):
        channels = array[..., :3] if mode != "LA" else array[..., :1]
        if mode == "RGBA" and np.any(array[..., 3] != 255):
            raise UserError(f"{path}: label has a transparent alpha channel; save it as a single-channel PNG")
        first = channels[..., 0]
        if all(np.array_equal(first, channels[..., c]) for c in range(1, channels.shape[-1])):
            return first.astype(np.uint8)
        raise UserError(
            f"{path}: colour-coded label (its channels differ); labels must be single-channel "
            "PNGs of class indices (or palette PNGs)"
        )
    raise UserError(f"{path}: unsupported label PNG mode {mode!r}")


def list_files(folder, extensions):
    """Files in `folder` (not recursive, hidden names and sub-folders left out) whose extension is in
    `extensions`, sorted."""
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if os.path.splitext(name)[1].lower() in extensions and not name.startswith(".")
        and os.path.isfile(os.path.join(folder, name))
    )


def size_mismatch(shape, path, ref_shape, ref_path, what="label", ref_what="image"):
    """The toolkit's one wording of "these two files differ in size", or None when they agree.

    `shape` and `ref_shape` are (height, width[, channels]) (an array's `.shape` or a header's
    size); messages give width x height, as image tools do:
    "<path>: label size 40x30 differs from image <ref_path> size 48x40".
    """
    (height, width), (ref_height, ref_width) = tuple(shape[:2]), tuple(ref_shape[:2])
    if (height, width) == (ref_height, ref_width):
        return None
    return (f"{path}: {what} size {width}x{height} differs from {ref_what} {ref_path} "
            f"size {ref_width}x{ref_height}")


def check_same_size(shape, path, ref_shape, ref_path, what="label", ref_what="image"):
    """Raise `UserError(size_mismatch(...))` when the two (height, width) differ."""
    message = size_mismatch(shape, path, ref_shape, ref_path, what, ref_what)
    if message:
        raise UserError(message)


def check_label_values(label, path, n_classes, ignore_label):
    """Raise a `UserError` naming `path` if `label` holds a value that is neither a class nor ignored."""
    counts = np.bincount(label.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    bad = [int(v) for v in present if v >= n_classes and v != ignore_label]
    if not bad:
        return counts
    found = ", ".join(str(int(v)) for v in present[:12]) + (" ..." if len(present) > 12 else "")
    hint = ""
    if set(present.tolist()) <= {0, 255} or set(present.tolist()) <= {0, 1, 254, 255}:
        hint = " (this looks like a 0/255 mask: store class indices, e.g. label // 255)"
    raise UserError(
        f"{path}: label values {{{found}}} include {bad[:5]} outside 0..{n_classes - 1} "
        f"(--n_classes {n_classes}, --ignore_label {ignore_label}){hint}"
    )


# === Resizing ===

def resize_image(image, height, width):
    """Bilinear, as the original toolkit and mmsegmentation resize images. INTER_AREA anti-aliases a
    large shrink a little better but costs ~10x (2.2 ms vs 0.23 ms for 512x512 -> 224x224), which
    made it the input pipeline's slowest step."""
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_label(label, height, width):
    """Nearest-neighbour: any other interpolation invents class ids at borders."""
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)


def letterbox_geometry(src_h, src_w, dst_h, dst_w):
    """(top, left, new_h, new_w) of the scaled image centred in a dst canvas."""
    scale = min(dst_h / src_h, dst_w / src_w)
    new_h = max(1, min(dst_h, int(round(src_h * scale))))
    new_w = max(1, min(dst_w, int(round(src_w * scale))))
    return (dst_h - new_h) // 2, (dst_w - new_w) // 2, new_h, new_w


def letterbox_image(image, height, width, source_size=None):
    """Letterbox with grey padding; `source_size` (h, w): the size whose geometry to use when `image` is a
    reduced decode of a larger file (see `read_image_for`), so the layout matches the file's own."""
    src_h, src_w = source_size or image.shape[:2]
    top, left, new_h, new_w = letterbox_geometry(src_h, src_w, height, width)
    canvas = np.full((height, width, 3), LETTERBOX_FILL, dtype=image.dtype)
    canvas[top:top + new_h, left:left + new_w] = resize_image(image, new_h, new_w)
    return canvas


def letterbox_label(label, height, width, ignore_label):
    """Letterbox a label; the padding gets `ignore_label` so it counts in no loss or metric."""
    top, left, new_h, new_w = letterbox_geometry(label.shape[0], label.shape[1], height, width)
    canvas = np.full((height, width), ignore_label, dtype=label.dtype)
    canvas[top:top + new_h, left:left + new_w] = resize_label(label, new_h, new_w)
    return canvas


def fit_image(image, height, width, resize_op, source_size=None):
    """`resize_op` 1: plain resize; 2 (and anything else, e.g. a display thumbnail of a `resize_op` 3
    image): letterbox. `source_size`: see `letterbox_image`."""
    if resize_op == 1:
        return resize_image(image, height, width)
    return letterbox_image(image, height, width, source_size)


def fit_label(label, height, width, resize_op, ignore_label):
    if resize_op == 1:
        return resize_label(label, height, width)
    return letterbox_label(label, height, width, ignore_label)


def restore_probabilities(probs, orig_h, orig_w, resize_op):
    """Map network-size class probabilities (h, w, C) back to the original image size.

    Probabilities are resized bilinearly (then argmax-ed by the caller), which
    gives smoother borders than resizing the hard mask; letterbox padding is
    cropped away first.
    """
    height, width = probs.shape[:2]
    if resize_op == 2:
        top, left, new_h, new_w = letterbox_geometry(orig_h, orig_w, height, width)
        probs = probs[top:top + new_h, left:left + new_w]
    channels = probs.shape[-1]
    # cv2.resize handles at most 512 channels and drops a trailing axis of 1.
    if channels <= 512:
        out = cv2.resize(np.ascontiguousarray(probs), (orig_w, orig_h), interpolation=cv2.INTER_LINEAR)
        return out.reshape(orig_h, orig_w, channels)
    parts = [restore_probabilities(probs[..., i:i + 512], orig_h, orig_w, 1) for i in range(0, channels, 512)]
    return np.concatenate(parts, axis=-1)


# === Normalisation ===

def normalize(image, image_init, channel_order="bgr"):
    """uint8 BGR image -> float32 network input, its channels in `channel_order` ("bgr" or "rgb").

    divide: x / 255 (range [0, 1]); sub_and_divide: x / 127.5 - 1 (range [-1, 1]);
    sub_mean: x - (103.939, 116.779, 123.68) per B, G, R channel (each mean stays with its colour
    whatever the order). sub_and_divide + rgb is `keras.applications.mobilenet.preprocess_input` of the
    RGB image, sub_mean + bgr that of `keras.applications.vgg16` / `resnet50`.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise UserError(f"--channel_order {channel_order!r}: expected one of {', '.join(CHANNEL_ORDERS)}")
    x = image.astype(np.float32)
    if image_init == "divide":
        x = x / 255.0
    elif image_init == "sub_and_divide":
        x = x / 127.5 - 1.0
    elif image_init == "sub_mean":
        x = x - BGR_MEANS
    else:
        raise UserError(f"--image_init {image_init!r}: expected one of {', '.join(IMAGE_INITS)}")
    return np.ascontiguousarray(x[..., ::-1]) if channel_order == "rgb" else x


def normalize_into(image, image_init, channel_order, out):
    """`normalize(image, image_init, channel_order)` written into `out` (float32, image's shape), e.g. one
    slot of a preallocated batch: the same float32 operations, without the two temporary arrays."""
    if channel_order not in CHANNEL_ORDERS:
        raise UserError(f"--channel_order {channel_order!r}: expected one of {', '.join(CHANNEL_ORDERS)}")
    src = image[..., ::-1] if channel_order == "rgb" else image
    if image_init == "divide":
        np.divide(src, np.float32(255.0), out=out)
    elif image_init == "sub_and_divide":
        np.divide(src, np.float32(127.5), out=out)
        out -= np.float32(1.0)
    elif image_init == "sub_mean":
        np.subtract(src, BGR_MEANS[::-1] if channel_order == "rgb" else BGR_MEANS, out=out)
    else:
        raise UserError(f"--image_init {image_init!r}: expected one of {', '.join(IMAGE_INITS)}")
    return out


# === Colour ===

def voc_palette(n=256):
    """The PASCAL VOC colour map (RGB), the de-facto palette of segmentation masks."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def write_png(path, array, palette=None):
    """Write a uint8 array as PNG; with `palette`, as a palette PNG that keeps the indices."""
    array = np.ascontiguousarray(array)
    if palette is None:
        Image.fromarray(array).save(path)
        return
    # frombytes keeps the raw indices; convert("P") would re-quantise them.
    img = Image.frombytes("P", (array.shape[1], array.shape[0]), array.astype(np.uint8).tobytes())
    img.putpalette(palette.reshape(-1).tolist())
    img.save(path)
