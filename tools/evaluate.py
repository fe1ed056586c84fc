"""Score saved prediction masks against label masks (mIoU and friends), without a model.

    python tools/evaluate.py --pred_dir data/output --label_dir data/demo/test_label --n_classes 2

Predictions and labels are PNGs of class indices paired by file stem (what
test.py writes: `<output_path>/<stem>.png`). One confusion matrix is
accumulated over every pixel of the data set (ignore-label pixels left out),
then: per-class IoU, Dice, precision, recall and pixel counts; mIoU, mDice
and mPA over the classes present in labels or predictions; aAcc; FWIoU.
Prints the per-class table and writes to a new folder (`--output_path`, or
`<output_path>_2`... when it is not empty): metrics.json,
confusion_matrix.csv, iou_per_class.png and confusion_matrix.png.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred_dir", required=True, help="folder of predicted masks (PNG class indices)")
    p.add_argument("--label_dir", required=True, help="folder of label masks (PNG class indices)")
    p.add_argument("--n_classes", type=positive_int, required=True, help="number of classes, background included")
    p.add_argument("--ignore_label", type=int, default=255, help="label value left out of every score")
    p.add_argument("--class_names", default=None, help="text file, one class name per line")
    p.add_argument("--output_path", default="data/evaluation", help="report folder (a new one if it is not empty)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from utils.model_files import check_folder, check_text_file
    check_folder(args.pred_dir, "--pred_dir")
    check_folder(args.label_dir, "--label_dir")
    if args.class_names:  # a binary file would otherwise fail in the UTF-8 decoder with a traceback
        check_text_file(args.class_names, "--class_names")
    if os.path.isfile(args.output_path):
        raise UserError(f"--output_path {args.output_path}: a file, expected a folder for the report")
    from metrics.evaluation import evaluate_folders, format_table, summarize, write_report
    from utils.dataset_files import read_class_names
    from utils.paths import new_output_dir

    if not args.n_classes <= args.ignore_label <= 255:
        raise UserError(f"--ignore_label {args.ignore_label} must be in {args.n_classes}..255 "
                        f"(above the class ids of --n_classes {args.n_classes})")
    names = read_class_names(args.class_names, args.n_classes, flag="--class_names") if args.class_names else None
    matrix, n_pairs = evaluate_folders(args.pred_dir, args.label_dir, args.n_classes, args.ignore_label)
    summary = summarize(matrix, names)
    summary.update(pred_dir=args.pred_dir, label_dir=args.label_dir, images=n_pairs,
                   ignore_label=args.ignore_label)
    print(format_table(summary))
    out_dir = new_output_dir(args.output_path)
    write_report(out_dir, summary, matrix, charts=True)
    print(f"{n_pairs} masks: mIoU {summary['mIoU']:.4f}; report in {out_dir} "
          "(metrics.json, confusion_matrix.csv, iou_per_class.png, confusion_matrix.png)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
