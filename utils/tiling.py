"""Predict one image at its own size: resize, whole image, or sliding window, with flip and scale TTA.

Keras-free (numpy + OpenCV): `predict_image(image, predictor, prep, mode)` takes a
uint8 BGR image of any size and returns float32 (H, W, n_classes) probabilities
at that size. The three modes (mmsegmentation's names):

- `resize`: the image brought to the network size (`prep.resize_op` 1: stretched,
  2: letterboxed, 3: stretched as 1) and the probabilities resized back; a scale s
  asks the predictor for its legal size nearest to (s * input_h, s * input_w).
- `whole`: the image padded bottom/right (grey, `LETTERBOX_FILL`) to the smallest
  size the model takes, predicted in one pass, the padding cut off.
- `slide`: windows of the predictor's input size every `stride` pixels, the last
  one flush with the border; probabilities summed into one (H, W, C) float32
  accumulator and divided by how many windows cover each pixel. Windows are cut
  and normalised batch by batch, so memory is the image, the accumulator and one
  batch: never the stack of every window.

With `scales` the image is resized by each s (bilinear) before the mode (for `resize`:
the network size changes instead), and with `flip` each pass also runs on the
left-right mirrored image (its output mirrored back); the result is the mean of
every pass, each at (H, W).

The predictor protocol (`utils.inference.Predictor` implements it):
- `input_size` (H, W) and `n_classes`; `predictor(batch)` maps a float32 (B, h, w, 3)
  batch of `input_size` windows to (B, h, w, n_classes) probabilities;
- `at_size(h, w)`: a predictor for (h, w) inputs, or a one-line `UserError` when the
  model cannot take that size (only `whole` and `resize` at a scale other than 1 ask);
- `legal_size_at_least(h, w)` (`whole`) and `nearest_legal_size(h, w)` (`resize` with
  scales): the model's legal sizes.
"""
import math

import cv2
import numpy as np

from utils.errors import UserError
from utils.image import LETTERBOX_FILL, fit_image, normalize, restore_probabilities

MODES = ("resize", "whole", "slide")


# === Settings ===

def window_starts(length, window, stride):
    """Window offsets along one axis: 0, stride, 2 * stride ... below `length - window`, then
    `length - window` (the last window flush with the border). `[0]` when `length <= window`:
    the image is then padded up to the window."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def default_stride(window):
    """2/3 of the window, rounded (mmsegmentation's crop 64 / stride 42 ratio), at least 1."""
    return max(1, int(round(2 * window / 3)))


def check_stride(stride, window, flag="--stride"):
    """`stride` (an int, or None: 2/3 of each window side) -> (stride_h, stride_w); a stride of 0 or
    more than a window side is a `UserError` (the windows would leave gaps)."""
    window_h, window_w = window
    if stride is None:
        return default_stride(window_h), default_stride(window_w)
    stride = int(stride)
    if stride < 1 or stride > min(window_h, window_w):
        raise UserError(f"{flag} {stride}: must be in 1..{min(window_h, window_w)} (the {window_h}x{window_w} "
                        "window; a larger stride leaves pixels no window covers)")
    return stride, stride


def parse_scales(text, flag="--scales"):
    """'0.75,1.0,1.25' (or a sequence of numbers) -> tuple of positive finite floats, else a `UserError`."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scales = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise UserError(f"{flag} {text}: {str(item).strip()!r} is not a number "
                            "(expected a comma-separated list such as 0.75,1.0,1.25)") from None
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"{flag} {text}: every scale must be a positive number, got {item!s}".strip())
        scales.append(value)
    if not scales:
        raise UserError(f"{flag}: empty list (expected e.g. 1.0 or 0.75,1.0,1.25)")
    return tuple(scales)


# === The three modes (one pass each) ===

def _pad_to(image, height, width):
    """The uint8 image padded bottom/right with grey to at least height x width (itself when it fits)."""
    pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if not pad_h and not pad_w:
        return image
    return cv2.copyMakeBorder(np.ascontiguousarray(image), 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                              value=(LETTERBOX_FILL,) * 3)


def _resize_op(prep):
    return 2 if prep.resize_op == 2 else 1  # 3 (crops) has no fit of its own: stretch, as 1 does


def _network_inputs(images, prep, size):
    op = _resize_op(prep)
    return np.stack([normalize(fit_image(img, size[0], size[1], op), prep.image_init, prep.channel_order)
                     for img in images])


def _resize_size(predictor, scale):
    if scale == 1:
        return tuple(predictor.input_size)
    height, width = predictor.input_size
    return tuple(predictor.nearest_legal_size(max(1, round(scale * height)), max(1, round(scale * width))))


def _predict_resize(images, predictor, prep, scale, inputs=None):
    """`resize` for a list of images in one call -> list of (H_i, W_i, C) probabilities. `inputs`: the
    network inputs already made at the predictor's own size (used at scale 1 only)."""
    size = _resize_size(predictor, scale)
    net = predictor if size == tuple(predictor.input_size) else predictor.at_size(*size)
    probs = net(np.stack(inputs) if inputs is not None and scale == 1 else _network_inputs(images, prep, size))
    op = _resize_op(prep)
    return [restore_probabilities(prob, img.shape[0], img.shape[1], op) for img, prob in zip(images, probs)]


def _predict_whole(image, predictor, prep):
    height, width = image.shape[:2]
    size = tuple(predictor.legal_size_at_least(height, width))
    net = predictor if size == tuple(predictor.input_size) else predictor.at_size(*size)
    x = normalize(_pad_to(image, *size), prep.image_init, prep.channel_order)
    return np.ascontiguousarray(net(x[None])[0][:height, :width], dtype=np.float32)


def _predict_slide(image, predictor, prep, stride, batch_size):
    height, width = image.shape[:2]
    window_h, window_w = predictor.input_size
    stride_h, stride_w = check_stride(stride, (window_h, window_w))
    padded = _pad_to(image, window_h, window_w)
    full_h, full_w = padded.shape[:2]
    rows, cols = window_starts(full_h, window_h, stride_h), window_starts(full_w, window_w, stride_w)
    acc = np.zeros((full_h, full_w, predictor.n_classes), np.float32)
    # The windows form a grid, so the number covering pixel (y, x) is row_count[y] * col_count[x].
    row_count, col_count = np.zeros(full_h, np.float32), np.zeros(full_w, np.float32)
    for top in rows:
        row_count[top:top + window_h] += 1
    for left in cols:
        col_count[left:left + window_w] += 1
    batch = np.empty((min(batch_size, len(rows) * len(cols)), window_h, window_w, 3), np.float32)
    positions = []

    def flush():
        probs = predictor(batch[:len(positions)])
        for (top, left), prob in zip(positions, probs):
            acc[top:top + window_h, left:left + window_w] += prob
        positions.clear()

    for top in rows:
        for left in cols:
            batch[len(positions)] = normalize(padded[top:top + window_h, left:left + window_w], prep.image_init,
                                              prep.channel_order)
            positions.append((top, left))
            if len(positions) == len(batch):
                flush()
    if positions:
        flush()
    # In place, one axis at a time: dividing by the (H, W) product map would allocate it.
    acc /= row_count[:, None, None]
    acc /= col_count[None, :, None]
    return acc if (full_h, full_w) == (height, width) else np.ascontiguousarray(acc[:height, :width])


# === TTA: every scale and flip ===

def _scaled(image, scale):
    if scale == 1:
        return image
    height, width = image.shape[:2]
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_LINEAR)


def _passes(scales, flip):
    return [(float(s), f) for s in scales for f in ((False, True) if flip else (False,))]


def _check_mode(mode):
    if mode not in MODES:
        raise UserError(f"--inference_mode {mode!r}: expected one of {', '.join(MODES)}")


def predict_image(image, predictor, prep, mode, stride=None, scales=(1.0,), flip=False, batch_size=4):
    """float32 (H, W, n_classes) probabilities of the uint8 BGR `image` at its own size.

    prep: `data.Preprocessing` (image_init, channel_order, resize_op are used); mode: one of MODES;
    stride: the slide step in pixels (None: 2/3 of the window); scales: the image scales whose
    passes are averaged; flip: also average the left-right mirrored passes; batch_size: windows per
    predictor call (`slide`).
    """
    return predict_images([image], predictor, prep, mode, stride, scales, flip, batch_size)[0]


def predict_images(images, predictor, prep, mode, stride=None, scales=(1.0,), flip=False, batch_size=4,
                   inputs=None):
    """`predict_image` for each image of `images`; `resize` sends them to the predictor in one batch
    (the caller chooses how many), the other modes one image at a time.

    inputs: `resize` only, the images' network inputs as training made them (`Preprocessing.load_image`:
    a JPEG decoded at a reduced scale), so that prediction sees the pixels training saw; `images` (the
    full decode) then only gives the output sizes and the other scales' inputs.
    """
    _check_mode(mode)
    scales = parse_scales(scales)
    if mode == "slide":
        check_stride(stride, predictor.input_size)
    results = [None] * len(images)
    passes = _passes(scales, flip)
    for scale, flipped in passes:
        if mode == "resize":  # the network size follows the scale; the image goes straight to it
            sources = [img[:, ::-1] if flipped else img for img in images]
            ready = None if inputs is None else [x[:, ::-1] if flipped else x for x in inputs]
            outputs = _predict_resize(sources, predictor, prep, scale, ready)
        else:
            outputs = [_one_pass(img, predictor, prep, mode, stride, scale, flipped, batch_size) for img in images]
        for i, probs in enumerate(outputs):
            probs = probs[:, ::-1] if flipped else probs
            if results[i] is None:
                results[i] = _owned(probs)
            else:
                results[i] += probs
    if len(passes) > 1:
        for probs in results:
            probs /= len(passes)
    return results


def _owned(probs):
    """`probs` itself when it can take the later passes in place, else a copy (a mirrored view, a
    read-only runtime buffer): one accumulator per image, not two."""
    whole_buffer = probs.base is None or getattr(probs.base, "size", None) == probs.size  # e.g. a reshape
    if probs.dtype == np.float32 and probs.flags.c_contiguous and probs.flags.writeable and whole_buffer:
        return probs
    return np.array(probs, dtype=np.float32, order="C")


def _one_pass(image, predictor, prep, mode, stride, scale, flipped, batch_size):
    """One `whole` or `slide` pass at one scale, resized back to the image's size; for `flipped` it is
    still mirrored (the caller mirrors it back)."""
    height, width = image.shape[:2]
    source = _scaled(image[:, ::-1] if flipped else image, scale)
    if mode == "whole":
        probs = _predict_whole(source, predictor, prep)
    else:
        probs = _predict_slide(source, predictor, prep, stride, batch_size)
    if probs.shape[:2] != (height, width):
        probs = restore_probabilities(probs, height, width, 1)
    return probs
