"""The Keras side of the loss registry: CLI name -> loss function, `SegmentationLoss`, `get_loss`.

Importing this module registers `SegmentationLoss` for `keras.models.load_model`.
The names and options it accepts are declared keras-free in `losses/__init__.py`
(`LOSS_OPTIONS`); tests check that the table matches these functions' signatures.
"""
import keras

from losses import check_loss_name, check_options, core

LOSSES = {
    "ce": core.cross_entropy,
    "weighted_ce": core.weighted_cross_entropy,
    "b_focal": core.binary_focal,
    "c_focal": core.categorical_focal,
    "dice": core.dice_loss,
    "bce_dice": core.bce_dice_loss,
    "ce_dice": core.ce_dice_loss,
    "g_dice": core.generalized_dice_loss,
    "jaccard": core.jaccard_loss,
    "bce_jaccard": core.bce_jaccard_loss,
    "ce_jaccard": core.ce_jaccard_loss,
    "tversky": core.tversky_loss,
    "f_tversky": core.focal_tversky_loss,
}


# === The Keras loss ===

@keras.saving.register_keras_serializable(package="segmentation")
class SegmentationLoss(keras.losses.Loss):
    """A registered loss by name; `get_config` carries every option so checkpoints reload."""

    def __init__(self, loss_name, n_classes, ignore_label=255, options=None, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or loss_name, reduction=reduction, dtype=dtype)
        check_loss_name(loss_name, n_classes)
        self.loss_name = loss_name
        self.n_classes = int(n_classes)
        self.ignore_label = int(ignore_label)
        self.options = check_options(loss_name, self.n_classes, dict(options or {}))
        self.fn = LOSSES[loss_name]

    def call(self, y_true, y_pred):
        return _per_replica(self.fn(y_true, y_pred, self.n_classes, self.ignore_label, **self.options))

    def get_config(self):
        config = super().get_config()
        config.update(loss_name=self.loss_name, n_classes=self.n_classes,
                      ignore_label=self.ignore_label, options=self.options)
        return config


def _per_replica(loss):
    """Divide by the replica count under `tf.distribute`, as Keras does for the losses it reduces.

    Keras scales a loss by 1/replicas only when it reduces per-sample values
    itself; these losses return the scalar mean over valid pixels, which Keras
    passes through. The replicas' gradients are summed, so without this a
    two-device run would step twice as far (and report twice the loss).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / replicas
    return loss


def get_loss(name, n_classes, ignore_label=255, **options):
    """The loss `name` as a Keras loss; an unknown name lists the valid ones, a bad option says why."""
    return SegmentationLoss(name, n_classes, ignore_label, options)
