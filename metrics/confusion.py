"""Training metrics from a confusion matrix accumulated over the whole epoch.

Averaging per-batch (or per-image) scores is biased and, in the original,
summed over pixels and classes together so every region score collapsed into
pixel accuracy. Here each metric accumulates a (C, C) confusion matrix of
hard (argmax) predictions over every batch of the epoch and derives its score
from it; ignore-label pixels are excluded and classes absent from both labels
and predictions are left out of the mean.
"""
import keras
from keras import ops

# score name -> function of per-class (tp, fp, fn) -> per-class value
SCORES = {
    "iou": lambda tp, fp, fn: tp / (tp + fp + fn),
    "dice": lambda tp, fp, fn: 2 * tp / (2 * tp + fp + fn),
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


@keras.saving.register_keras_serializable(package="segmentation")
class ConfusionMatrixMetric(keras.metrics.Metric):
    """`score`: 'accuracy' (pixel accuracy) or a key of SCORES (mean over present classes).

    Counts are float32: exact to 2**24 per cell and below 1e-7 relative error beyond.
    """

    def __init__(self, score, n_classes, ignore_label=255, name=None, dtype=None):
        super().__init__(name=name or score, dtype=dtype)
        self.score = score
        self.n_classes = int(n_classes)
        self.ignore_label = int(ignore_label)
        self.matrix = self.add_variable(shape=(self.n_classes, self.n_classes), initializer="zeros",
                                        dtype="float32", name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        cm = confusion_matrix(y_true, y_pred, self.n_classes, self.ignore_label)
        self.matrix.assign(self.matrix + ops.cast(cm, "float32"))

    def per_class(self):
        cm = ops.convert_to_tensor(self.matrix)
        tp = ops.diagonal(cm)
        fp = ops.sum(cm, axis=0) - tp
        fn = ops.sum(cm, axis=1) - tp
        present = ops.cast((tp + fp + fn) > 0, "float32")
        values = SCORES[self.score](tp, fp, fn + (1.0 - present))  # +1 only where 0/0
        return values * present, present

    def result(self):
        if self.score == "accuracy":
            return ops.sum(ops.diagonal(self.matrix)) / ops.maximum(ops.sum(self.matrix), 1.0)
        values, present = self.per_class()
        return ops.sum(values) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.matrix.assign(ops.zeros_like(self.matrix))

    def get_config(self):
        config = super().get_config()
        config.update(score=self.score, n_classes=self.n_classes, ignore_label=self.ignore_label)
        return config
