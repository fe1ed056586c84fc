"""Offline data augmentation with Augmentor: write augmented copies of a training set.

    python augmentation.py --train_path data/demo/train_image --mask_path data/demo/train_label \\
        --augtrain_path data/demo_aug/train_image --augtrain_mask data/demo_aug/train_label

For every image, `--samples_per_image` (default 5, the original's number)
augmented image/mask pairs are written as `<stem>_aug<k>.<image ext>` and
`<stem>_aug<k>.png`, so the toolkit pairs them by stem. Default operations are
the original's: rotate (p 0.5, up to 5 degrees either way), flip left-right
(p 0.5), random zoom (p 0.5, area 0.8); distortion, skew and flip top-bottom
are available (probability 0 by default). Each operation runs with exactly its
probability (Augmentor's own pipeline rounds the draw to 0.1).

Why masks stay clean: Augmentor resamples every image of a pair, ground
truth included, bicubically -- unless the image is a palette ("P") PNG, which
Pillow always resamples nearest-neighbour. Masks are therefore passed through
the operations as palette images whose index k+1 stands for the k-th class
value, so the output holds only values present in the input masks. Index 0
is never used by the input, so any pixel an operation fills in (no source
pixel) is detectable and written as `--ignore_label`. Augmentor's rotate
(whose crop leaves a few filled pixels at the border: see its own TODO) is
replaced by one that crops the exact largest inner rectangle.

Images and masks are paired by file stem (their extensions may differ);
Augmentor itself pairs only identical file names. The input folders are only
read; the output folders are created and must be empty (or `--overwrite`).
"""
import argparse
import math
import os
import random
import sys

import numpy as np

from utils.cli import positive_int
from utils.errors import UserError, run_cli

JPEG_QUALITY = 95


# === Arguments ===

def probability(value):
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {value!r}")
    return number


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # === The seed's flags ===
    p.add_argument("--train_path", default="./data/images_prepped_train", help="input images")
    p.add_argument("--mask_path", default="./data/annotations_prepped_train", help="input masks (PNG, class ids)")
    p.add_argument("--augtrain_path", default="./data/new_img", help="output images (created)")
    p.add_argument("--augtrain_mask", default="./data/new_mask", help="output masks (created)")
    # === Additions ===
    p.add_argument("--samples_per_image", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0, help="same seed and inputs -> same outputs")
    p.add_argument("--ignore_label", type=int, default=255, help="mask value for pixels an operation fills in")
    p.add_argument("--overwrite", action="store_true", help="allow non-empty output folders")
    g = p.add_argument_group("operations (probability 0 disables one)")
    g.add_argument("--rotate_p", type=probability, default=0.5)
    g.add_argument("--rotate_degrees", type=int, default=5, help="maximum rotation either way (1..25)")
    g.add_argument("--flip_lr_p", type=probability, default=0.5, help="flip left-right")
    g.add_argument("--flip_tb_p", type=probability, default=0.0, help="flip top-bottom")
    g.add_argument("--zoom_p", type=probability, default=0.5)
    g.add_argument("--zoom_area", type=float, default=0.8, help="area share of the crop that is zoomed (0.1..1]")
    g.add_argument("--distortion_p", type=probability, default=0.0, help="random elastic distortion")
    g.add_argument("--distortion_grid", type=positive_int, default=4, help="grid cells per side")
    g.add_argument("--distortion_magnitude", type=positive_int, default=8)
    g.add_argument("--skew_p", type=probability, default=0.0, help="random perspective skew")
    g.add_argument("--skew_magnitude", type=float, default=0.2, help="(0, 1]")
    return p.parse_args(argv)


def check_args(args):
    if not 1 <= args.rotate_degrees <= 25:
        raise UserError(f"--rotate_degrees {args.rotate_degrees}: must be in 1..25 (Augmentor's range)")
    if not 0.1 <= args.zoom_area <= 1.0:
        raise UserError(f"--zoom_area {args.zoom_area}: must be in 0.1..1")
    if not 0 < args.skew_magnitude <= 1:
        raise UserError(f"--skew_magnitude {args.skew_magnitude}: must be in (0, 1]")
    if not 0 <= args.ignore_label <= 255:
        raise UserError(f"--ignore_label {args.ignore_label}: must be in 0..255")
    inputs = {os.path.realpath(args.train_path), os.path.realpath(args.mask_path)}
    outputs = [os.path.realpath(args.augtrain_path), os.path.realpath(args.augtrain_mask)]
    for flag, out in zip(("--augtrain_path", "--augtrain_mask"), outputs):
        if out in inputs:
            raise UserError(f"{flag} {out}: is an input folder; augmentation never writes into its inputs")
    if outputs[0] == outputs[1]:
        raise UserError("--augtrain_path and --augtrain_mask must be different folders")


# === Operations ===

def largest_inner_rect(width, height, degrees):
    """(w, h) of the largest rectangle with the input's aspect ratio inside it rotated by `degrees`.

    Its corners, rotated back, must stay inside the original rectangle:
    k (w cos + h sin) <= w and k (w sin + h cos) <= h.
    """
    angle = math.radians(abs(degrees))
    sin_a, cos_a = math.sin(angle), math.cos(angle)
    k = min(width / (width * cos_a + height * sin_a), height / (width * sin_a + height * cos_a))
    return width * k, height * k


def make_rotate_operation(probability_, max_degrees):
    """Augmentor's RotateRange with an exact crop (no filled pixels at the border)."""
    from PIL import Image
    from Augmentor.Operations import RotateRange

    class RotateRangeExactCrop(RotateRange):
        def perform_operation(self, images):
            # The same draws as RotateRange: an integer angle, left or right.
            left = random.randint(self.max_left_rotation, 0)
            right = random.randint(0, self.max_right_rotation)
            rotation = left if random.randint(0, 1) == 0 else right
            if rotation == 0:
                return images
            out = []
            for image in images:
                width, height = image.size
                rotated = image.rotate(rotation, expand=True, resample=Image.BICUBIC)
                inner_w, inner_h = largest_inner_rect(width, height, rotation)
                big_w, big_h = rotated.size
                # Inward rounding plus one pixel: bicubic taps must not reach the fill.
                left_px = math.ceil((big_w - inner_w) / 2) + 1
                top_px = math.ceil((big_h - inner_h) / 2) + 1
                box = (left_px, top_px, big_w - left_px, big_h - top_px)
                out.append(rotated.crop(box).resize((width, height), resample=Image.BICUBIC))
            return out

    return RotateRangeExactCrop(probability_, max_degrees, max_degrees)


def build_operations(args):
    """Augmentor operations in the original's order, each with its probability."""
    import Augmentor
    pipeline = Augmentor.Pipeline()  # no source folder: Augmentor writes nothing itself
    if args.rotate_p > 0:
        pipeline.add_operation(make_rotate_operation(args.rotate_p, args.rotate_degrees))
    if args.flip_lr_p > 0:
        pipeline.flip_left_right(probability=args.flip_lr_p)
    if args.flip_tb_p > 0:
        pipeline.flip_top_bottom(probability=args.flip_tb_p)
    if args.zoom_p > 0:
        pipeline.zoom_random(probability=args.zoom_p, percentage_area=args.zoom_area)
    if args.distortion_p > 0:
        pipeline.random_distortion(probability=args.distortion_p, grid_width=args.distortion_grid,
                                   grid_height=args.distortion_grid, magnitude=args.distortion_magnitude)
    if args.skew_p > 0:
        pipeline.skew(probability=args.skew_p, magnitude=args.skew_magnitude)
    return pipeline.operations


# === Masks as palette images ===

def encode_mask(mask):
    """uint8 class ids -> ("P" image of codes 1..k, values) where code k+1 means values[k]."""
    from PIL import Image
    values = np.unique(mask)
    if len(values) > 255:
        raise UserError("a mask uses all 256 values; nothing is left to mark filled pixels")
    codes = (np.searchsorted(values, mask) + 1).astype(np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), codes.tobytes())
    image.putpalette([c for i in range(256) for c in (i, i, i)])
    return image, values


def decode_mask(image, values, ignore_label):
    lut = np.full(256, ignore_label, dtype=np.uint8)
    lut[1:len(values) + 1] = values
    return lut[np.asarray(image, dtype=np.uint8)]


# === Pairing and I/O ===

def pair_by_stem(image_dir, mask_dir):
    """[(stem, image_path, mask_path)] sorted by stem; problems are `utils.dataset_files.paired_files`'s errors."""
    from utils.dataset_files import paired_files
    pairs = paired_files(image_dir, mask_dir, label_word="mask", image_flag="--train_path", label_flag="--mask_path")
    return [(os.path.splitext(os.path.basename(image))[0], image, mask) for image, mask in pairs]


def read_pair(image_path, mask_path):
    """(PIL image upright as OpenCV reads it, mask class ids, mask PIL mode, mask palette or None)."""
    from PIL import Image, ImageOps
    from utils.image import check_same_size, read_label
    try:
        with Image.open(image_path) as img:
            image = ImageOps.exif_transpose(img)  # cv2.imread (data.py) honours EXIF orientation too
            image = image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
    except (OSError, ValueError) as exc:
        raise UserError(f"{image_path}: cannot be read as an image ({exc})") from None
    mask = read_label(mask_path)
    with Image.open(mask_path) as m:
        mode, palette = m.mode, (m.getpalette() if m.mode == "P" else None)
    check_same_size(mask.shape, mask_path, (image.size[1], image.size[0]), image_path, what="mask")
    return image, mask, mode, palette


def save_image(image, path):
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jpg", ".jpeg"):
        image.save(path, quality=JPEG_QUALITY)
    else:
        image.save(path)


def save_mask(mask, path, palette):
    from PIL import Image
    if palette is None:
        Image.fromarray(mask).save(path)  # 8-bit grayscale of class ids
        return
    out = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    out.putpalette(palette)
    out.save(path)


def prepare_output(folder, overwrite):
    os.makedirs(folder, exist_ok=True)
    existing = [n for n in os.listdir(folder) if not n.startswith(".")]
    if existing and not overwrite:
        raise UserError(f"{folder}: not empty ({len(existing)} files); choose an empty folder or pass --overwrite")


# === Main ===

def augment_pair(operations, image, mask, n_samples, ignore_label):
    """`n_samples` augmented (PIL image, uint8 mask, filled-in pixel count); randomness from `random`."""
    encoded, values = encode_mask(mask)
    samples = []
    for _ in range(n_samples):
        pair = [image, encoded]
        for operation in operations:
            if random.random() < operation.probability:
                pair = operation.perform_operation(pair)
        codes = np.asarray(pair[1], dtype=np.uint8)
        samples.append((pair[0], decode_mask(codes, values, ignore_label), int(np.count_nonzero(codes == 0))))
    return samples


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    pairs = pair_by_stem(args.train_path, args.mask_path)
    operations = build_operations(args)
    prepare_output(args.augtrain_path, args.overwrite)
    prepare_output(args.augtrain_mask, args.overwrite)
    from tqdm import tqdm
    filled = 0
    for stem, image_path, mask_path in tqdm(pairs, desc="augmenting", unit="image"):
        image, mask, _, palette = read_pair(image_path, mask_path)
        # Seeded per image: an image's samples do not change when other images are added.
        random.seed(f"{args.seed}:{stem}")
        np.random.seed(random.getrandbits(32))  # the few Augmentor operations that use numpy
        ext = os.path.splitext(image_path)[1].lower()
        samples = augment_pair(operations, image, mask, args.samples_per_image, args.ignore_label)
        for k, (out_image, out_mask, n_filled) in enumerate(samples):
            filled += n_filled
            save_image(out_image, os.path.join(args.augtrain_path, f"{stem}_aug{k}{ext}"))
            save_mask(out_mask, os.path.join(args.augtrain_mask, f"{stem}_aug{k}.png"), palette)
    total = len(pairs) * args.samples_per_image
    print(f"wrote {total} image/mask pairs ({args.samples_per_image} per image) to {args.augtrain_path} and "
          f"{args.augtrain_mask}" + (f"; {filled} filled-in mask pixels set to {args.ignore_label}" if filled else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
