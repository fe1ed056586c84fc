"""Online (on-the-fly) augmentation for training: `train.py --augment`.

`build_augmenter(...)` returns `augment(image, label, rng) -> (image, label)`,
which `data.load_pair` applies to the ORIGINAL-size sample before its
resize. The output is already `input_height x input_width`, so that resize
is then a no-op. With `full_image=True` (training on crops, `--resize_op 3`)
there is no fit and no window: the output is the whole scaled (and rotated)
image, from which `SegmentationDataset` then cuts its crops
(mmsegmentation's RandomResize + RandomCrop).

Order: random scale -> rotation -> random crop/pad to the input size ->
flips -> colour jitter (image only). Geometry is applied to the label with
nearest-neighbour only, and every label pixel that no source pixel maps to
(padding, rotated-in corners) gets the ignore label, so it counts in no loss
or metric. All randomness comes from the `rng` argument (a
`numpy.random.Generator`), so a sample's augmentation is fixed by the seed
that made the generator.
"""
import math

import cv2
import numpy as np

from utils.errors import UserError
from utils.image import LETTERBOX_FILL

__all__ = ["build_augmenter", "OnlineAugmenter"]


# === Parameter checks ===

def _range(name, value, low=None):
    try:
        lo, hi = (float(value[0]), float(value[1]))
    except (TypeError, ValueError, IndexError):
        raise UserError(f"augment {name}: expected a (min, max) pair, got {value!r}") from None
    if lo > hi or (low is not None and lo <= low):
        raise UserError(f"augment {name}: expected {low if low is not None else '-inf'} < min <= max, "
                        f"got ({lo:g}, {hi:g})")
    return lo, hi


def _probability(name, value):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise UserError(f"augment {name}: probability must be in [0, 1], got {value:g}")
    return value


def _non_negative(name, value):
    value = float(value)
    if value < 0:
        raise UserError(f"augment {name}: must be >= 0, got {value:g}")
    return value


# === The augmenter ===

class OnlineAugmenter:
    """Callable `(image_bgr_uint8 HxWx3, label_uint8 HxW, rng) -> (image, label)` at the input size.

    Geometry: the sample is first fitted to the input size (stretched, as
    `--resize_op 1` does, or aspect-preserving when `keep_aspect`, as
    letterbox does), then scaled by s ~ U(scale), rotated by
    a ~ U(-rotate, rotate) degrees with probability `rotate_p`, and a window of
    the input size is cut at a uniformly random position (when the scaled
    sample is smaller than the window it is placed at a random position and
    the rest is padding). Horizontal / vertical flips with `flip_lr_p` /
    `flip_ud_p`. Colour (image only): brightness and contrast factors
    ~ U(1 - b, 1 + b), saturation ~ U(1 - s, 1 + s), hue shift ~ U(-h, h)
    degrees, each drawn every call.

    `full_image`: no fit to the input size and no window: s scales the image's own size (aspect
    kept), and the output is the scaled image's rotated bounding box (round(extent) pixels), the
    rotated-in corners padding (grey image, ignore label). Flips and colour as above.
    """

    def __init__(self, input_height, input_width, ignore_label, scale=(0.5, 2.0), rotate=10.0, rotate_p=0.5,
                 flip_lr_p=0.5, flip_ud_p=0.0, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0,
                 keep_aspect=False, image_fill=LETTERBOX_FILL, full_image=False):
        if int(input_height) <= 0 or int(input_width) <= 0:
            raise UserError(f"augment: input size must be positive, got {input_height}x{input_width}")
        if not 0 <= int(ignore_label) <= 255:
            raise UserError(f"augment: ignore_label must be in 0..255, got {ignore_label}")
        self.height, self.width = int(input_height), int(input_width)
        self.ignore_label = int(ignore_label)
        self.scale = _range("scale", scale, low=0.0)
        self.rotate = _non_negative("rotate", rotate)
        self.rotate_p = _probability("rotate_p", rotate_p)
        self.flip_lr_p = _probability("flip_lr_p", flip_lr_p)
        self.flip_ud_p = _probability("flip_ud_p", flip_ud_p)
        self.brightness = _non_negative("brightness", brightness)
        self.contrast = _non_negative("contrast", contrast)
        self.saturation = _non_negative("saturation", saturation)
        self.hue = _non_negative("hue", hue)
        if self.brightness >= 1 or self.contrast >= 1 or self.saturation >= 1:
            raise UserError("augment: brightness, contrast and saturation must be < 1 (factors 1 +- value)")
        self.keep_aspect = bool(keep_aspect)
        self.image_fill = int(image_fill)
        self.full_image = bool(full_image)

    def config(self):
        """Every setting, for the run's config.json."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}

    # === Geometry ===

    def _matrix(self, src_h, src_w, rng):
        """2x3 affine map from source pixel centres to output pixel centres, the scale factors, the
        output (height, width), and the flips."""
        sy, sx = self.height / src_h, self.width / src_w
        if self.keep_aspect:
            sy = sx = min(sy, sx)
        if self.full_image:
            sy = sx = 1.0
        s = rng.uniform(*self.scale)
        sy, sx = sy * s, sx * s
        angle = rng.uniform(-self.rotate, self.rotate) if rng.random() < self.rotate_p else 0.0
        # The scaled (and rotated) sample's extent decides where the window may go.
        scaled_h, scaled_w = src_h * sy, src_w * sx
        rad = math.radians(angle)
        cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
        ext_w, ext_h = scaled_w * cos + scaled_h * sin, scaled_w * sin + scaled_h * cos
        # Window offset of the extent's top-left corner in output coordinates: a random
        # crop when the extent is larger, a random placement (padding) when smaller.
        # Whole-pixel offsets: at scale 1 without rotation the window is an exact crop.
        if self.full_image:  # the whole extent is the output
            out_h, out_w = max(1, int(round(ext_h))), max(1, int(round(ext_w)))
            ext_h, ext_w, off_x, off_y = out_h, out_w, 0, 0
        else:
            out_h, out_w = self.height, self.width
            off_x = round(rng.uniform(min(0.0, self.width - ext_w), max(0.0, self.width - ext_w)))
            off_y = round(rng.uniform(min(0.0, self.height - ext_h), max(0.0, self.height - ext_h)))
        # source -> centred at origin (pixel-centre convention) -> scale -> rotate -> place.
        centre = np.array([[1, 0, -(src_w - 1) / 2], [0, 1, -(src_h - 1) / 2], [0, 0, 1]])
        scale = np.diag([sx, sy, 1.0])
        rot = np.array([[math.cos(rad), math.sin(rad), 0], [-math.sin(rad), math.cos(rad), 0], [0, 0, 1]])
        place = np.array([[1, 0, off_x + (ext_w - 1) / 2], [0, 1, off_y + (ext_h - 1) / 2], [0, 0, 1]])
        matrix = place @ rot @ scale @ centre
        flip_lr = rng.random() < self.flip_lr_p
        flip_ud = rng.random() < self.flip_ud_p
        return matrix[:2], (sy, sx), (out_h, out_w), angle, flip_lr, flip_ud

    def _warp(self, image, label, matrix, factors, out_size, angle):
        size = (out_size[1], out_size[0])
        # A full image without rotation has no padding: its edge pixels must not blend with the fill.
        border = cv2.BORDER_REPLICATE if self.full_image and angle == 0 else cv2.BORDER_CONSTANT
        # Shrinking by more than 2x with a bilinear warp aliases: pre-shrink with INTER_AREA.
        shrink = min(factors)
        if shrink < 0.5:
            pre_h = max(1, int(round(image.shape[0] * factors[0] * 2)))
            pre_w = max(1, int(round(image.shape[1] * factors[1] * 2)))
            small = cv2.resize(image, (pre_w, pre_h), interpolation=cv2.INTER_AREA)
            # Re-express the matrix for the pre-shrunk image (pixel-centre convention).
            fy, fx = image.shape[0] / pre_h, image.shape[1] / pre_w
            to_orig = np.array([[fx, 0, (fx - 1) / 2], [0, fy, (fy - 1) / 2], [0, 0, 1]])
            img_matrix = (np.vstack([matrix, [0, 0, 1]]) @ to_orig)[:2]
        else:
            small, img_matrix = image, matrix
        out_image = cv2.warpAffine(small, img_matrix, size, flags=cv2.INTER_LINEAR,
                                   borderMode=border, borderValue=(self.image_fill,) * 3)
        out_label = cv2.warpAffine(label, matrix, size, flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=self.ignore_label)
        return out_image, out_label

    # === Colour ===

    def _jitter(self, image, rng):
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        h = rng.uniform(-self.hue, self.hue)
        if b == 1 and c == 1 and s == 1 and h == 0:
            return image
        x = image.astype(np.float32) * b
        mean = x.mean()
        x = (x - mean) * c + mean
        if s != 1:
            # Blend with the grey image (exact, unlike an 8-bit HSV round trip); grey stays grey.
            grey = x @ np.array([0.114, 0.587, 0.299], np.float32)
            x = grey[..., None] + (x - grey[..., None]) * s
        if h != 0:
            hsv = cv2.cvtColor(np.clip(np.rint(x), 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV_FULL)
            hsv[..., 0] = ((hsv[..., 0].astype(np.float32) + h * 256.0 / 360.0) % 256.0).astype(np.uint8)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).astype(np.float32)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    # === Call ===

    def __call__(self, image, label, rng):
        if image.ndim != 3 or image.dtype != np.uint8 or label.ndim != 2 or label.dtype != np.uint8:
            raise UserError(f"augment: expected uint8 HxWx3 image and HxW label, got {image.dtype} "
                            f"{image.shape} and {label.dtype} {label.shape}")
        if image.shape[:2] != label.shape:
            raise UserError(f"augment: image {image.shape[:2]} and label {label.shape} sizes differ")
        if rng is None:
            raise UserError("augment: an rng (numpy.random.Generator) is required for reproducibility")
        matrix, factors, out_size, angle, flip_lr, flip_ud = self._matrix(label.shape[0], label.shape[1], rng)
        image, label = self._warp(image, label, matrix, factors, out_size, angle)
        if flip_lr:
            image, label = image[:, ::-1], label[:, ::-1]
        if flip_ud:
            image, label = image[::-1], label[::-1]
        image = self._jitter(np.ascontiguousarray(image), rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


def build_augmenter(input_height, input_width, ignore_label, scale=(0.5, 2.0), rotate=10.0, rotate_p=0.5,
                    flip_lr_p=0.5, flip_ud_p=0.0, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0,
                    keep_aspect=False, full_image=False):
    """The online augmenter used by `train.py --augment` (see `OnlineAugmenter`).

    Returns `augment(image_bgr_uint8, label_uint8, rng) -> (image, label)`, both
    `input_height x input_width`; label values are input values or `ignore_label`.
    Pass `keep_aspect=True` with `--resize_op 2` (letterbox) so training sees
    the aspect ratio that test time sees. `full_image=True` for `--resize_op 3`
    (crops): the output is the whole augmented image at its scaled size
    (`input_height`/`input_width` are then unused but still checked), its
    rotated-in corners grey / `ignore_label`. Bad settings raise `UserError`.
    """
    return OnlineAugmenter(input_height, input_width, ignore_label, scale=scale, rotate=rotate,
                           rotate_p=rotate_p, flip_lr_p=flip_lr_p, flip_ud_p=flip_ud_p, brightness=brightness,
                           contrast=contrast, saturation=saturation, hue=hue, keep_aspect=keep_aspect,
                           full_image=full_image)
