"""Data-set evaluation in numpy: one confusion matrix over every image, then the scores.

As in mmsegmentation's IoUMetric: intersections and unions are accumulated
over the whole data set (never averaged per image). A class absent from both
labels and predictions has undefined IoU/Dice and is left out of the means.
"""
import json
import math
import os

import numpy as np

from utils.errors import UserError


def confusion_matrix(label, pred, n_classes, ignore_label=255):
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    label = np.asarray(label).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = label != ignore_label
    label, pred = label[keep], pred[keep]
    if label.size and (label.max() >= n_classes or label.min() < 0):
        raise ValueError(f"label value {int(label.max())} outside 0..{n_classes - 1}")
    if pred.size and (pred.max() >= n_classes or pred.min() < 0):
        raise ValueError(f"prediction value {int(pred.max())} outside 0..{n_classes - 1}")
    return np.bincount(label * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(numerator, denominator):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def summarize(matrix, class_names=None):
    """Scores from a confusion matrix.

    - aAcc: correctly classified pixels / all pixels;
    - mPA: mean over classes of recall (per-class pixel accuracy);
    - mIoU, mDice: means over classes present in labels or predictions;
    - FWIoU: IoU weighted by each class's share of label pixels.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n_classes = matrix.shape[0]
    names = list(class_names or [f"class_{i}" for i in range(n_classes)])
    tp = np.diag(matrix)
    label_pixels = matrix.sum(axis=1)
    pred_pixels = matrix.sum(axis=0)
    fp, fn = pred_pixels - tp, label_pixels - tp
    total = matrix.sum()
    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, pred_pixels)
    recall = _ratio(tp, label_pixels)
    freq = label_pixels / total if total else np.zeros(n_classes)

    def nanmean(values):
        return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")

    per_class = [
        {"index": i, "name": names[i], "IoU": _clean(iou[i]), "Dice": _clean(dice[i]),
         "precision": _clean(precision[i]), "recall": _clean(recall[i]),
         "label_pixels": int(label_pixels[i]), "pred_pixels": int(pred_pixels[i])}
        for i in range(n_classes)
    ]
    return {
        "mIoU": nanmean(iou),
        "mPA": nanmean(recall),
        "aAcc": float(tp.sum() / total) if total else float("nan"),
        "FWIoU": float(np.nansum(freq * np.nan_to_num(iou))),
        "mDice": nanmean(dice),
        "pixels": int(total),
        "per_class": per_class,
    }


def _clean(value):
    return None if np.isnan(value) else float(value)


def format_table(summary):
    """A per-class table followed by the summary line, as plain text."""
    rows = [f"{'class':<20} {'IoU':>8} {'Dice':>8} {'Prec':>8} {'Recall':>8} {'pixels':>12}"]

    def fmt(value):
        return f"{value:8.4f}" if value is not None else f"{'-':>8}"
    for c in summary["per_class"]:
        rows.append(f"{c['name'][:20]:<20} {fmt(c['IoU'])} {fmt(c['Dice'])} {fmt(c['precision'])} "
                    f"{fmt(c['recall'])} {c['label_pixels']:>12}")
    rows.append(" ".join(f"{key}={summary[key]:.4f}" for key in ("mIoU", "mPA", "aAcc", "FWIoU", "mDice")))
    return "\n".join(rows)


def _json_safe(value):
    """NaN -> None (JSON has no NaN), recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(output_path, summary, matrix, charts=False):
    """metrics.json, confusion_matrix.csv and, with charts=True, the PNG charts under `output_path`.

    test.py keeps charts=False and calls `write_charts` on a subfolder: its
    output folder holds the predicted `<stem>.png` masks, which chart PNGs
    beside them would pollute (tools/evaluate.py would take them for masks).
    """
    os.makedirs(output_path, exist_ok=True)
    with open(os.path.join(output_path, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(_json_safe(summary), handle, indent=2)
    names = [c["name"] for c in summary["per_class"]]
    with open(os.path.join(output_path, "confusion_matrix.csv"), "w", encoding="utf-8") as handle:
        handle.write("true\\pred," + ",".join(_csv_field(n) for n in names) + "\n")
        for name, row in zip(names, np.asarray(matrix, dtype=np.int64)):
            handle.write(_csv_field(name) + "," + ",".join(str(int(v)) for v in row) + "\n")
    if charts:
        write_charts(output_path, summary, matrix)


def _csv_field(text):
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


# === Charts ===

def write_charts(output_path, summary, matrix):
    """iou_per_class.png (bars) and confusion_matrix.png (row-normalised heat map); returns their paths.

    Uses matplotlib's Agg canvas directly: no display, no pyplot global state.
    """
    from metrics.charts import confusion_chart, iou_chart
    os.makedirs(output_path, exist_ok=True)
    paths = [os.path.join(output_path, "iou_per_class.png"), os.path.join(output_path, "confusion_matrix.png")]
    iou_chart(summary, paths[0])
    confusion_chart(summary, matrix, paths[1])
    return paths


# === Folders of saved masks ===

def read_class_names_file(path, n_classes, count_flag="--n_classes"):
    """`--class_names` file -> n_classes names; the rules: `utils.dataset_files.read_class_names`."""
    from utils.dataset_files import read_class_names
    return read_class_names(path, n_classes, flag="--class_names", count_flag=count_flag)


def pair_masks(pred_dir, label_dir):
    """[(prediction PNG, label PNG)] paired by file stem; a file without its partner is an error."""
    from utils.dataset_files import paired_files
    from utils.image import LABEL_EXTS
    return paired_files(pred_dir, label_dir, image_word="prediction", label_word="label", image_exts=LABEL_EXTS,
                        image_flag="--pred_dir", label_flag="--label_dir")


def evaluate_folders(pred_dir, label_dir, n_classes, ignore_label=255):
    """The data set's (C, C) confusion matrix from saved masks, and the number of pairs."""
    from utils.image import check_label_values, check_same_size, read_label
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    pairs = pair_masks(pred_dir, label_dir)
    for pred_path, label_path in pairs:
        pred, label = read_label(pred_path), read_label(label_path)
        check_same_size(pred.shape, pred_path, label.shape, label_path, what="prediction", ref_what="label")
        check_label_values(label, label_path, n_classes, ignore_label)
        if pred.size and int(pred.max()) >= n_classes:
            raise UserError(f"{pred_path}: prediction value {int(pred.max())} outside 0..{n_classes - 1} "
                            f"(--n_classes {n_classes})")
        matrix += confusion_matrix(label, pred, n_classes, ignore_label)
    return matrix, len(pairs)
