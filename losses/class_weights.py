"""Class weights for `weighted_ce` and `c_focal`: parsing `--class_weights` and median-frequency balancing."""
import math

import numpy as np

from utils.errors import UserError


def median_frequency(counts, n_classes=None):
    """Median-frequency balancing (Eigen & Fergus 2015): w_c = median(f) / f_c, f_c = pixels_c / all pixels.

    `counts` are per-class label pixel counts (e.g. `utils.dataset_checks.count_classes`, whose
    array has 256 entries; `n_classes` keeps the first n). The median is over
    classes that occur; a class that never occurs gets weight 1.0, the
    median class's weight (it has no pixel to weigh in training anyway).
    The frequency is over all labelled pixels, not the original paper's
    "pixels of images containing c", which needs per-image counts.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if n_classes is not None:
        counts = counts[:n_classes]
    present = counts > 0
    if not present.any():
        raise UserError("--class_weights auto: the training labels hold no pixel of any class")
    freq = counts / counts.sum()
    median = float(np.median(freq[present]))
    return [median / f if p else 1.0 for f, p in zip(freq.tolist(), present.tolist())]


def check_class_weights(weights, n_classes):
    """A list of n_classes finite, non-negative floats, not all 0 -> list of float; else UserError."""
    if isinstance(weights, str):
        return parse_class_weights(weights, n_classes)
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise UserError(f"--class_weights {weights!r}: expected numbers") from None
    if len(values) != n_classes:
        raise UserError(f"--class_weights has {len(values)} values for {n_classes} classes (--n_classes)")
    if any(not math.isfinite(v) or v < 0 for v in values) or not any(v > 0 for v in values):
        raise UserError(f"--class_weights {','.join(f'{v:g}' for v in values)}: weights must be finite, "
                        "non-negative and not all 0")
    return values


def parse_class_weights(text, n_classes, counts=None):
    """'w0,w1,...' -> list; 'auto' -> median_frequency(counts); '' or None -> None (equal weights)."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if text.lower() == "auto":
        if counts is None:
            raise ValueError("class_weights 'auto' needs the training labels' class pixel counts")
        return median_frequency(counts, n_classes)
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--class_weights {text!r}: expected 'auto' or comma-separated numbers "
                        "like 1,2.5") from None
    return check_class_weights(values, n_classes)
