"""Pure loss functions on (y_true class indices (B, H, W), y_pred probabilities (B, H, W, C)).

Every function excludes pixels whose label is `ignore_label` and returns a
scalar. Region scores (Dice/F-beta) sum tp, fp and fn per class over batch,
height and width, then average over classes (the article's formulation).
"""
from keras import ops

EPSILON = 1e-7
SMOOTH = 1e-5


def prepare(y_true, y_pred, n_classes, ignore_label):
    """-> (one-hot labels zeroed at ignored pixels, clipped probabilities zeroed there, valid mask)."""
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) == 4:  # (B, H, W, 1) labels
        y_true = ops.squeeze(y_true, axis=-1)
    valid = ops.cast(ops.not_equal(y_true, ignore_label), y_pred.dtype)
    safe = ops.where(ops.not_equal(y_true, ignore_label), y_true, 0)
    one_hot = ops.one_hot(safe, n_classes, dtype=y_pred.dtype) * valid[..., None]
    probs = ops.clip(y_pred, EPSILON, 1.0 - EPSILON) * valid[..., None]
    return one_hot, probs, valid


def class_counts(one_hot, probs):
    """Soft tp, fp, fn per class, summed over batch, height and width."""
    axes = tuple(range(len(one_hot.shape) - 1))
    tp = ops.sum(one_hot * probs, axis=axes)
    fp = ops.sum(probs, axis=axes) - tp
    fn = ops.sum(one_hot, axis=axes) - tp
    return tp, fp, fn


def cross_entropy(y_true, y_pred, n_classes, ignore_label=255):
    """Mean over non-ignored pixels of -log p(true class)."""
    one_hot, probs, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    log_p = ops.log(ops.clip(y_pred, EPSILON, 1.0))
    per_pixel = -ops.sum(one_hot * log_p, axis=-1)
    return ops.sum(per_pixel) / ops.maximum(ops.sum(valid), 1.0)


def fbeta_score(y_true, y_pred, n_classes, ignore_label=255, beta=1.0, smooth=SMOOTH):
    """Soft F-beta per class, averaged over classes; beta=1 is the Dice coefficient."""
    one_hot, probs, _ = prepare(y_true, y_pred, n_classes, ignore_label)
    tp, fp, fn = class_counts(one_hot, probs)
    b2 = beta ** 2
    score = ((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth)
    return ops.mean(score)


def dice_loss(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    return 1.0 - fbeta_score(y_true, y_pred, n_classes, ignore_label, beta=1.0, smooth=smooth)


def ce_dice_loss(y_true, y_pred, n_classes, ignore_label=255, beta=1.0, smooth=SMOOTH):
    """The article's loss: CE + (1 - F_beta)."""
    return (cross_entropy(y_true, y_pred, n_classes, ignore_label)
            + 1.0 - fbeta_score(y_true, y_pred, n_classes, ignore_label, beta=beta, smooth=smooth))
