"""The loss registry: CLI name -> loss function, and the `get_loss` factory.

A loss function takes `(y_true, y_pred, n_classes, ignore_label, **options)`
with y_true class indices (B, H, W) and y_pred probabilities (B, H, W, C).
`get_loss` wraps it in `SegmentationLoss`, a serialisable Keras loss.
"""
import keras

from losses.core import ce_dice_loss, cross_entropy, dice_loss
from utils.errors import UserError

LOSSES = {
    "ce": cross_entropy,
    "dice": dice_loss,
    "ce_dice": ce_dice_loss,
}


@keras.saving.register_keras_serializable(package="segmentation")
class SegmentationLoss(keras.losses.Loss):
    """A registered loss by name; `get_config` carries every option so checkpoints reload."""

    def __init__(self, loss_name, n_classes, ignore_label=255, options=None, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or loss_name, reduction=reduction, dtype=dtype)
        if loss_name not in LOSSES:
            raise UserError(f"--loss {loss_name!r} is unknown; valid names: {', '.join(LOSSES)}")
        self.loss_name = loss_name
        self.n_classes = int(n_classes)
        self.ignore_label = int(ignore_label)
        self.options = dict(options or {})
        self.fn = LOSSES[loss_name]

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, self.n_classes, self.ignore_label, **self.options)

    def get_config(self):
        config = super().get_config()
        config.update(loss_name=self.loss_name, n_classes=self.n_classes,
                      ignore_label=self.ignore_label, options=self.options)
        return config


def get_loss(name, n_classes, ignore_label=255, **options):
    """The loss `name` as a Keras loss; an unknown name lists the valid ones."""
    return SegmentationLoss(name, n_classes, ignore_label, options)
