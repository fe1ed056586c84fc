"""Training metrics from a confusion matrix accumulated over the whole epoch.

Averaging per-batch (or per-image) scores is biased and, in the original,
summed over pixels and classes together so every region score collapsed into
pixel accuracy. Here each metric accumulates a (C, C) confusion matrix of
hard (argmax) predictions over every batch of the epoch and derives its score
from it; ignore-label pixels are excluded and classes absent from both labels
and predictions are left out of the mean.
"""
import re

import keras
from keras import ops

# score name -> function of per-class (tp, fp, fn) -> per-class value
SCORES = {
    "iou": lambda tp, fp, fn: tp / (tp + fp + fn),
    "dice": lambda tp, fp, fn: 2 * tp / (2 * tp + fp + fn),
    "f1": lambda tp, fp, fn: 2 * tp / (2 * tp + fp + fn),
    "f2": lambda tp, fp, fn: 5 * tp / (5 * tp + 4 * fn + fp),
}


def confusion_matrix(y_true, y_pred, n_classes, ignore_label):
    """(C, C) counts, rows = true class, columns = predicted class, ignore pixels dropped."""
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) == len(y_pred.shape):  # (B, H, W, 1) labels
        y_true = ops.squeeze(y_true, axis=-1)
    valid = ops.cast(ops.not_equal(y_true, ignore_label), "float32")
    true_1h = ops.one_hot(ops.where(ops.not_equal(y_true, ignore_label), y_true, 0), n_classes)
    pred_1h = ops.one_hot(ops.argmax(y_pred, axis=-1), n_classes)
    true_1h = ops.reshape(true_1h * valid[..., None], (-1, n_classes))
    pred_1h = ops.reshape(pred_1h, (-1, n_classes))
    return ops.matmul(ops.transpose(true_1h), pred_1h)


def per_class_scores(matrix, score):
    """-> (per-class `score` values, 0 where undefined; float mask of classes present in labels or predictions)."""
    cm = ops.convert_to_tensor(matrix)
    tp = ops.diagonal(cm)
    fp = ops.sum(cm, axis=0) - tp
    fn = ops.sum(cm, axis=1) - tp
    present = ops.cast((tp + fp + fn) > 0, "float32")
    values = SCORES[score](tp, fp, fn + (1.0 - present))  # +1 only where 0/0
    return values * present, present


class _ConfusionMetric(keras.metrics.Metric):
    """Accumulates a (C, C) float32 confusion matrix of argmax predictions over the epoch.

    float32 counts are exact to 2**24 per cell and within ~1e-7 relative error beyond.
    """

    def __init__(self, n_classes, ignore_label=255, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.n_classes = int(n_classes)
        self.ignore_label = int(ignore_label)
        self.matrix = self.add_variable(shape=(self.n_classes, self.n_classes), initializer="zeros",
                                        dtype="float32", name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        cm = confusion_matrix(y_true, y_pred, self.n_classes, self.ignore_label)
        self.matrix.assign(self.matrix + ops.cast(cm, "float32"))

    def reset_state(self):
        self.matrix.assign(ops.zeros(self.matrix.shape, dtype=self.matrix.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(n_classes=self.n_classes, ignore_label=self.ignore_label)
        return config


@keras.saving.register_keras_serializable(package="segmentation")
class ConfusionMatrixMetric(_ConfusionMetric):
    """`score`: 'accuracy' (pixel accuracy) or a key of SCORES (mean over present classes)."""

    def __init__(self, score, n_classes, ignore_label=255, name=None, dtype=None):
        if score != "accuracy" and score not in SCORES:
            raise ValueError(f"unknown score {score!r}; valid: accuracy, {', '.join(SCORES)}")
        super().__init__(n_classes, ignore_label, name=name or score, dtype=dtype)
        self.score = score

    def per_class(self):
        return per_class_scores(self.matrix, self.score)

    def result(self):
        if self.score == "accuracy":
            return ops.sum(ops.diagonal(self.matrix)) / ops.maximum(ops.sum(self.matrix), 1.0)
        values, present = self.per_class()
        return ops.sum(values) / ops.maximum(ops.sum(present), 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(score=self.score)
        return config


def log_key(text):
    """A class name as a log.csv column / TensorBoard tag fragment: letters, digits, _ . - only."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(text)).strip("_") or "class"


@keras.saving.register_keras_serializable(package="segmentation")
class PerClassScores(_ConfusionMetric):
    """Per-class values of several scores in one dict result, for log.csv and TensorBoard.

    `scores` maps a metric name to its score (e.g. {"iou_score": "iou"});
    `result()` is {"<metric>/<class name>": value}, NaN for a class absent
    from both labels and predictions. Keras flattens a dict result into the
    epoch logs (`val_` prefixed for validation), so CSVLogger and TensorBoard
    record every key; TensorBoard groups the tags by the part before "/".
    """

    def __init__(self, scores, n_classes, ignore_label=255, class_names=None, name="per_class", dtype=None):
        super().__init__(n_classes, ignore_label, name=name, dtype=dtype)
        unknown = [s for s in scores.values() if s not in SCORES]
        if unknown:
            raise ValueError(f"no per-class value for score(s) {unknown}; valid: {', '.join(SCORES)}")
        self.scores = dict(scores)
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(self.n_classes)]
        if len(self.class_names) != self.n_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.n_classes} classes")
        keys, seen = [], set()
        for i, raw in enumerate(self.class_names):
            key = log_key(raw)
            key = f"{key}_{i}" if key in seen else key
            seen.add(key)
            keys.append(key)
        self._keys = keys

    def result(self):
        out = {}
        nan = ops.convert_to_tensor(float("nan"), "float32")
        for metric_name, score in self.scores.items():
            values, present = per_class_scores(self.matrix, score)
            values = ops.where(present > 0, values, nan)
            for i, key in enumerate(self._keys):
                out[f"{metric_name}/{key}"] = values[i]
        return out

    def get_config(self):
        config = super().get_config()
        config.update(scores=self.scores, class_names=self.class_names)
        return config
