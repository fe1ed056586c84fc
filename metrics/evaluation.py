"""Data-set evaluation in numpy: one confusion matrix over every image, then the scores.

As in mmsegmentation's IoUMetric: intersections and unions are accumulated
over the whole data set (never averaged per image). A class absent from both
labels and predictions has undefined IoU/Dice and is left out of the means.
"""
import json
import os

import numpy as np


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


def write_report(output_path, summary, matrix):
    """metrics.json and confusion_matrix.csv under `output_path`."""
    os.makedirs(output_path, exist_ok=True)
    with open(os.path.join(output_path, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    names = [c["name"] for c in summary["per_class"]]
    with open(os.path.join(output_path, "confusion_matrix.csv"), "w", encoding="utf-8") as handle:
        handle.write("true\\pred," + ",".join(names) + "\n")
        for name, row in zip(names, np.asarray(matrix, dtype=np.int64)):
            handle.write(name + "," + ",".join(str(int(v)) for v in row) + "\n")
