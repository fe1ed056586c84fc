"""Validation at each image's own resolution, for `train.py --resize_op 3` (training on crops).

A model trained on crops is used by sliding a window of its input size over
the full image (`utils.tiling.predict_image`, the code test.py runs), so
that is how it is validated: scored on full-resolution labels, the best
checkpoint is the one that predicts full images best. Keras' own validation
would batch equal-sized network inputs, which full images of different
sizes are not.

The scores are the training metrics' own classes, given the confusion matrix
of every validation pixel (never a per-image average), and the loss is the
training loss per image, averaged over images. They go into the epoch logs
under the names Keras gives validation values (`val_loss`, `val_<metric>`,
`val_<metric>/<class>`; with auxiliary heads `val_<main output>_<metric>`),
before `RunCommit` reads them, so log.csv, TensorBoard, the best checkpoint
and early stopping see them like any validation score.
"""
import keras
import numpy as np

from utils.errors import UserError


class NativeValidation(keras.callbacks.Callback):
    """Slide-window validation after every epoch; must come before RunCommit in the callback list.

    pairs: [(image path, label path)]; prep: data.Preprocessing of the run; metrics_factory():
    fresh metric objects as the model was compiled with (metrics.get_metrics); loss: the training
    loss (losses.SegmentationLoss); stride: the slide stride (None: 2/3 of the window).
    """

    def __init__(self, pairs, prep, n_classes, metrics_factory, loss, stride=None, batch_size=4):
        super().__init__()
        self.pairs, self.prep, self.n_classes = list(pairs), prep, int(n_classes)
        self.metrics_factory, self.loss = metrics_factory, loss
        self.stride, self.batch_size = stride, batch_size
        self.user_error = None

    def scores(self):
        """{log key: value} of the current model over every validation image."""
        from data import read_checked
        from metrics.evaluation import confusion_matrix
        from utils.inference import keras_predictor
        from utils.tiling import predict_image
        predictor = keras_predictor(self.model)  # the main head only; fresh each epoch: the current weights
        matrix = np.zeros((self.n_classes, self.n_classes), np.int64)
        losses = []
        for image_path, label_path in self.pairs:
            image, label, _ = read_checked(image_path, label_path, self.n_classes, self.prep.ignore_label)
            probs = predict_image(image, predictor, self.prep, "slide", stride=self.stride,
                                  batch_size=self.batch_size)
            matrix += confusion_matrix(label, probs.argmax(-1), self.n_classes, self.prep.ignore_label)
            if np.any(label != self.prep.ignore_label):  # the losses' mean over no valid pixel is undefined
                value = self.loss.fn(label[None].astype(np.int32), probs[None], self.n_classes,
                                     self.prep.ignore_label, **self.loss.options)
                losses.append(float(keras.ops.convert_to_numpy(value)))
        logs = {"loss": float(np.mean(losses)) if losses else float("nan")}
        prefix = f"{self.model.output_names[0]}_" if len(self.model.outputs) > 1 else ""
        for metric in self.metrics_factory():
            metric.matrix.assign(matrix.astype(np.float32))
            result = metric.result()
            values = result.items() if isinstance(result, dict) else [(metric.name, result)]
            for key, value in values:
                logs[prefix + key] = float(keras.ops.convert_to_numpy(value))
        return {f"val_{key}": value for key, value in logs.items()}

    def on_epoch_end(self, epoch, logs=None):
        try:
            scores = self.scores()
        except UserError as exc:
            self.user_error = exc
            raise
        if logs is not None:
            logs.update(scores)
