"""The loss registry: CLI name -> loss function, and the `get_loss` factory.

A loss function (losses/core.py) takes `(y_true, y_pred, n_classes,
ignore_label, **options)` with y_true class indices (B, H, W) and y_pred
probabilities (B, H, W, C); any option it does not take is a UserError.
`get_loss` wraps it in `SegmentationLoss` (losses/keras_loss.py), a
serialisable Keras loss whose config carries every option, so a checkpoint
reloads with the same maths.

This module itself imports no Keras: names and options are checked, and the
CLI flags built, before TensorFlow loads (`train.py --help` answers at once).
`LOSSES`, `SegmentationLoss` and `get_loss` load losses/keras_loss.py on
first use.

train.py wiring: `add_loss_arguments(parser)` adds the option flags and
`loss_options(args, class_counts)` turns the parsed flags into `**options`.
"""
import math

from losses.class_weights import check_class_weights, parse_class_weights
from utils.errors import UserError

# name -> the options its function takes (its keyword arguments after `ignore_label`, in order;
# tests/test_losses.py checks this table against the signatures).
LOSS_OPTIONS = {
    "ce": (),
    "weighted_ce": ("class_weights",),
    "b_focal": ("focal_gamma", "focal_alpha"),
    "c_focal": ("class_weights", "focal_gamma", "focal_alpha"),
    "dice": ("smooth",),
    "bce_dice": ("smooth",),
    "ce_dice": ("beta", "smooth"),
    "g_dice": ("smooth",),
    "jaccard": ("smooth",),
    "bce_jaccard": ("smooth",),
    "ce_jaccard": ("smooth",),
    "tversky": ("tversky_alpha", "tversky_beta", "smooth"),
    "f_tversky": ("tversky_alpha", "tversky_beta", "ftversky_gamma", "smooth"),
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



def check_loss_name(loss_name, n_classes):
    if loss_name not in LOSS_OPTIONS:
        raise UserError(f"--loss {loss_name!r} is unknown; valid names: {', '.join(LOSS_OPTIONS)}")
    if int(n_classes) < 2:
        raise UserError(f"--loss {loss_name} needs --n_classes >= 2 (background + classes); got {n_classes}")


def accepted_options(loss_name):
    """The option names a loss takes."""
    return list(LOSS_OPTIONS[loss_name])


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


# === The Keras loss, loaded on first use ===

def __getattr__(name):
    if name in ("LOSSES", "SegmentationLoss", "get_loss"):
        from losses import keras_loss
        return getattr(keras_loss, name)
    raise AttributeError(f"module 'losses' has no attribute {name!r}")


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
    `utils.dataset_checks.count_classes`); without them it stands in equal weights, so the name
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
