"""Make the embedded demo data set `data/demo` (synthetic, 2 classes, deterministic).

    python tools/make_demo_data.py [--out data/demo] [--seed 0]

Imitates the original's "small parts" set: bright, textured parts (class 1)
of several shapes on an unevenly lit, noisy background (class 0) with
distractor scratches that are not parts. Images are JPEG (as a camera gives),
labels 8-bit PNG class indices. Refuses to write into a non-empty folder.
"""
import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.errors import UserError, run_cli  # noqa: E402

SIZE = 256


def make_sample(rng):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 70 + 30 * ((np.cos(angle) * xx + np.sin(angle) * yy) / SIZE)
    image = light + rng.normal(0, 9, (SIZE, SIZE))
    label = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(rng.integers(1, 4)):  # parts
        mask = np.zeros((SIZE, SIZE), np.uint8)
        centre = (int(rng.integers(40, SIZE - 40)), int(rng.integers(40, SIZE - 40)))
        axes = (int(rng.integers(12, 40)), int(rng.integers(8, 28)))
        rot = float(rng.uniform(0, 180))
        kind = rng.integers(3)
        if kind == 0:
            cv2.ellipse(mask, centre, axes, rot, 0, 360, 1, -1)
        elif kind == 1:
            box = cv2.boxPoints((centre, (2 * axes[0], 2 * axes[1]), rot)).astype(np.int32)
            cv2.fillPoly(mask, [box], 1)
        else:  # a washer: ring with a hole that is background
            cv2.circle(mask, centre, axes[0] + 6, 1, -1)
            cv2.circle(mask, centre, max(4, axes[0] // 2), 0, -1)
        brightness = rng.uniform(150, 200)
        texture = rng.normal(0, 12, (SIZE, SIZE)) + 10 * np.sin(xx / rng.uniform(2, 5))
        image = np.where(mask == 1, brightness + texture, image)
        label[mask == 1] = 1
    for _ in range(rng.integers(2, 6)):  # scratches: bright but thin, not parts
        p1 = tuple(int(v) for v in rng.integers(0, SIZE, 2))
        p2 = tuple(int(v) for v in rng.integers(0, SIZE, 2))
        scratch = np.zeros((SIZE, SIZE), np.uint8)
        cv2.line(scratch, p1, p2, 1, 2)
        image = np.where((scratch == 1) & (label == 0), rng.uniform(140, 190), image)
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
    return image, label


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test", type=int, default=10)
    args = parser.parse_args()
    if os.path.isdir(args.out) and os.listdir(args.out):
        raise UserError(f"{args.out}: folder exists and is not empty; choose another --out")
    rng = np.random.default_rng(args.seed)
    for split, count in (("train", args.train), ("test", args.test)):
        os.makedirs(os.path.join(args.out, f"{split}_image"))
        os.makedirs(os.path.join(args.out, f"{split}_label"))
        for index in range(count):
            image, label = make_sample(rng)
            stem = f"{split}_{index:03d}"
            cv2.imwrite(os.path.join(args.out, f"{split}_image", stem + ".jpg"), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 85])
            cv2.imwrite(os.path.join(args.out, f"{split}_label", stem + ".png"), label)
    with open(os.path.join(args.out, "classes.txt"), "w", encoding="utf-8") as handle:
        handle.write("background\npart\n")
    print(f"wrote {args.train} train and {args.test} test pairs to {args.out}")


if __name__ == "__main__":
    run_cli(main)
