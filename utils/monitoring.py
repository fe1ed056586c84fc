"""What a user looks at while and after training: a TensorBoard panel of validation predictions and
a PNG of the loss and metric curves."""
import csv
import os

import keras
import numpy as np

from utils.image import voc_palette


class ValidationImages(keras.callbacks.Callback):
    """Each epoch, a TensorBoard image panel per validation sample: image | ground truth | prediction.

    `images` are preprocessed model inputs, `display` the same images as
    uint8 BGR at network size, `labels` their class-index masks. Written with
    `tf.summary`, so only on the TensorFlow backend (elsewhere it is a no-op).
    """

    def __init__(self, log_dir, images, display, labels, ignore_label):
        super().__init__()
        self.log_dir, self.images, self.display, self.labels = log_dir, images, display, labels
        self.ignore_label = ignore_label
        self.palette = voc_palette()
        self.writer = None

    @classmethod
    def from_pairs(cls, log_dir, pairs, prep, n_classes):
        """The panel for (image, label) file pairs, preprocessed by `prep` (data.Preprocessing)."""
        from data import load_pair
        from utils.image import fit_image, read_image
        inputs, labels = zip(*(load_pair(image, label, prep, n_classes) for image, label in pairs))
        display = [fit_image(read_image(image), prep.input_height, prep.input_width, prep.resize_op)
                   for image, _ in pairs]
        return cls(log_dir, np.stack(inputs), np.stack(display), np.stack(labels), prep.ignore_label)

    def panels(self, probs):
        predictions = probs.argmax(-1)
        rows = []
        for image, label, pred in zip(self.display, self.labels, predictions):
            truth = self.palette[label].copy()
            truth[label == self.ignore_label] = 255  # ignored pixels in white
            separator = np.full((image.shape[0], 4, 3), 255, np.uint8)
            rows.append(np.concatenate([image[..., ::-1], separator, truth, separator, self.palette[pred]], axis=1))
        return np.stack(rows)

    def on_epoch_end(self, epoch, logs=None):
        if keras.backend.backend() != "tensorflow":
            return
        import tensorflow as tf
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "validation_images"))
        outputs = self.model.predict_on_batch(self.images)
        probs = np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)
        with self.writer.as_default():
            tf.summary.image("validation: image | ground truth | prediction", self.panels(probs), step=epoch + 1,
                             max_outputs=len(self.images))
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:  # a later fit() (after --freeze_epochs) opens a new one
            self.writer.close()
            self.writer = None


def _number(text):
    """A log.csv cell as a float; CSVLogger writes 'NA' (and old rows '') where an epoch lacks a key."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return np.nan


def write_curves(log_path, png_path):
    """Plot every loss and metric column of log.csv (training solid, validation dashed) into one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    names = [k for k in rows[0] if k != "epoch" and not k.startswith("val_") and "/" not in k
             and k != "learning_rate"]
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        for key, style in ((name, "-"), ("val_" + name, "--")):
            if key in rows[0]:
                values = [_number(r[key]) for r in rows]
                axis.plot(epochs, values, style, marker=".", label="validation" if style == "--" else "train")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    tmp = png_path + ".tmp.png"
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, png_path)
    return png_path
