"""Check a data set before training; print a report, exit 1 when it has errors.

    python tools/verify_dataset.py --data_root data --dataset_name demo --n_classes 2
    python tools/verify_dataset.py --data_root ../shared/datasets --dataset_name bbufdataset --n_classes 2 --cheap

`--data_root`, `--dataset_name`, `--n_classes`, `--ignore_label` mean what
they mean to train.py. Checked per split (train, val, test):

errors   (training would fail or learn garbage)
  - images without a label and labels without an image (paired by stem),
    two files of one folder with the same stem (a.png and a.jpg);
    labels saved as JPEG (lossy: class ids change at every edge);
  - image and label sizes that differ; images with an EXIF rotation
    (OpenCV rotates them on load, their labels do not);
  - label values that are neither a class (0..n_classes-1) nor the ignore
    label, naming the file; a data set of 0/255 masks gets its own message;
  - colour-coded (RGB) labels; files that cannot be decoded.
warnings (worth a look)
  - classes with no pixels in a split; per-class pixel shares are printed;
  - a mix of grayscale and colour images;
  - identical images with different labels, and images in two splits.

`--cheap` (what train.py runs before every training and every resume) reads
file headers only: pairing, image and label sizes, EXIF orientation,
grayscale/colour; it decodes no image, hashes nothing, and decodes only a
sample of 16 labels per split (their values; a 0/255 mask set). The other
labels' values are checked by train.py's batch generator as it reads each
label (a bad file stops training with its name, within the first epoch);
class pixel counts are made only when asked for (train.py's
`--class_weights auto`). Duplicates, colour-coded labels, undecodable pixels
and classes without pixels: the full check only.

Importable: `verify(data_root, dataset_name, n_classes, ignore_label=255,
cheap=True) -> Report` (implemented in utils/dataset_checks.py).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402
from utils.dataset_checks import (CHEAP_LABEL_SAMPLE, Report, SplitStats, count_classes,  # noqa: E402,F401
                                  verify)  # importable from here, as train.py does
from utils.errors import UserError, run_cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="data", help="folder holding the data sets")
    p.add_argument("--dataset_name", default="demo", help="data set folder under --data_root")
    p.add_argument("--n_classes", type=positive_int, default=2, help="number of classes, background included")
    p.add_argument("--ignore_label", type=int, default=255, help="label value excluded from loss and metrics")
    p.add_argument("--cheap", action="store_true",
                   help=f"file headers only, no image decoded or hashed, {CHEAP_LABEL_SAMPLE} labels per split decoded "
                        "(what train.py runs); pixel shares are not counted")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not 0 <= args.ignore_label <= 255:
        raise UserError(f"--ignore_label {args.ignore_label}: must be in 0..255")
    report = verify(args.data_root, args.dataset_name, args.n_classes, args.ignore_label, cheap=args.cheap)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
