"""The loss registry: CLI name -> loss function, and the `get_loss` factory.

A loss function takes `(y_true, y_pred, n_classes, ignore_label, **options)`
with y_true class indices (B, H, W) and y_pred probabilities (B, H, W, C).
The keyword arguments after `ignore_label` in its signature are the options
it accepts; any other option is a UserError. `get_loss` wraps the function
in `SegmentationLoss`, a serialisable Keras loss whose config carries every
option, so a checkpoint reloads with the same maths.

train.py wiring: `add_loss_arguments(parser)` adds the option flags and
`loss_options(args, class_counts)` turns the parsed flags into `**options`.
"""
import inspect
import math

import keras

from losses import core
from losses.class_weights import check_class_weights, parse_class_weights
from utils.errors import UserError

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

# option -> (check(value) -> bool, what a valid value is, CLI help)
SCALAR_OPTIONS = {
    "focal_gamma": (lambda v: v >= 0, ">= 0", "focusing exponent of b_focal/c_focal (default 2.0)"),
    "focal_alpha": (lambda v: 0 <= v <= 1, "in [0, 1]", "balance factor of b_focal/c_focal (default 0.25)"),
    "tversky_alpha": (lambda v: v >= 0, ">= 0", "weight of false negatives in tversky/f_tversky (default 0.7)"),
    "tversky_beta": (lambda v: v >= 0, ">= 0", "weight of false positives in tversky/f_tversky (default 0.3)"),
    "ftversky_gamma": (lambda v: v > 0, "> 0", "exponent of f_tversky, (1 - TI)^gamma (default 0.75)"),
    "beta": (lambda v: v > 0, "> 0", "beta of ce_dice's F-beta score (default 1.0)"),
    "smooth": (lambda v: v >= 0, ">= 0", "smoothing term of the region losses (default 1e-5)"),
}
OPTIONS = ("class_weights",) + tuple(SCALAR_OPTIONS)


def accepted_options(loss_name):
    """The option names a loss takes: its keyword arguments after `ignore_label`."""
    params = list(inspect.signature(LOSSES[loss_name]).parameters)
    return params[params.index("ignore_label") + 1:]


def check_options(loss_name, n_classes, options):
    """Validated options with plain Python values (JSON-serialisable for the model config)."""
    accepted = accepted_options(loss_name)
    checked = {}
    for key, value in options.items():
        if key not in accepted:
            takes = ", ".join(f"--{o}" for o in accepted) or "no options"
            kind = "is not a loss option" if key not in OPTIONS else f"is not used by --loss {loss_name}"
            raise UserError(f"--{key} {kind} (--loss {loss_name} takes: {takes})")
        if key == "class_weights":
            checked[key] = None if value is None else check_class_weights(value, n_classes)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"--{key} {value!r}: expected a number") from None
        rule, wanted, _ = SCALAR_OPTIONS[key]
        if not math.isfinite(number) or not rule(number):
            raise UserError(f"--{key} {value!r}: must be {wanted}")
        checked[key] = number
    return checked


# === The Keras loss ===

@keras.saving.register_keras_serializable(package="segmentation")
class SegmentationLoss(keras.losses.Loss):
    """A registered loss by name; `get_config` carries every option so checkpoints reload."""

    def __init__(self, loss_name, n_classes, ignore_label=255, options=None, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or loss_name, reduction=reduction, dtype=dtype)
        if loss_name not in LOSSES:
            raise UserError(f"--loss {loss_name!r} is unknown; valid names: {', '.join(LOSSES)}")
        if int(n_classes) < 2:
            raise UserError(f"--loss {loss_name} needs --n_classes >= 2 (background + classes); "
                            f"got {n_classes}")
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


# === Command line ===

def add_loss_arguments(parser):
    """Add --class_weights and the loss hyper-parameter flags (all default None: the loss's own default)."""
    group = parser.add_argument_group("loss options (only for the losses that use them)")
    group.add_argument("--class_weights", default=None,
                       help="weighted_ce/c_focal: 'w0,w1,...' (one per class) or 'auto' "
                            "(median-frequency weights from the training labels); default: equal")
    for key, (_, _, text) in SCALAR_OPTIONS.items():
        group.add_argument(f"--{key}", type=float, default=None, help=text)
    return group


def loss_options(args, class_counts=None):
    """The loss options the user set on the command line, as `get_loss(**options)` takes them.

    `--class_weights auto` needs `class_counts` (per-class label pixel counts,
    `data.scan_pairs`); without them it stands in equal weights, so the name
    and options can be checked before the data set is scanned.
    """
    options = {key: getattr(args, key) for key in SCALAR_OPTIONS if getattr(args, key, None) is not None}
    spec = getattr(args, "class_weights", None)
    if spec is not None and str(spec).strip():
        if str(spec).strip().lower() == "auto" and class_counts is None:
            options["class_weights"] = [1.0] * args.n_classes
        else:
            options["class_weights"] = parse_class_weights(spec, args.n_classes, class_counts)
    return options
