"""Pure loss functions on (y_true class indices (B, H, W), y_pred probabilities (B, H, W, C)).

Every function excludes pixels whose label is `ignore_label` and returns a
scalar. Two families:

- pixel losses (CE, focal, BCE): a per-pixel value from Keras' own loss
  functions (reduced over the channel axis, -1), then a mean over the
  non-ignored pixels (a weighted mean when class weights are given);
- region losses (Dice/F-beta, Jaccard, Tversky, generalized Dice): soft
  tp, fp and fn per class summed over batch, height and width, a score per
  class with `smooth` in numerator and denominator, then the mean over
  classes (the article's formulation). Keras' own Dice/Tversky losses put an
  epsilon only in the denominator (an absent class scores 0, not 1) and
  weight fp/fn the other way round, so these are written out here.

Binary variants (`bce`, `b_focal`) treat each foreground channel 1..C-1 of
the softmax output as an independent sigmoid-like probability.
"""
from keras import losses as keras_losses
from keras import ops

EPSILON = 1e-7  # keras.config.epsilon(): the clip of probabilities before a log
SMOOTH = 1e-5   # the article's smooth for region scores


# === Inputs ===

def prepare(y_true, y_pred, n_classes, ignore_label):
    """-> (labels int32 (B, H, W) with ignored pixels set to 0, one-hot zeroed there, valid mask float).

    Accepts (B, H, W) or (B, H, W, 1) labels of any numeric dtype (Keras
    hands losses float labels).
    """
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) == len(y_pred.shape):  # (B, H, W, 1) labels
        y_true = ops.squeeze(y_true, axis=-1)
    keep = ops.not_equal(y_true, ignore_label)
    labels = ops.where(keep, y_true, 0)
    valid = ops.cast(keep, y_pred.dtype)
    one_hot = ops.one_hot(labels, n_classes, dtype=y_pred.dtype) * valid[..., None]
    return labels, one_hot, valid


def _weighted_mean(per_pixel, weight):
    """sum(w * loss) / sum(w); 0 when every pixel is ignored (the weights carry no gradient)."""
    total = ops.sum(weight)
    return ops.sum(per_pixel * weight) / ops.where(total > 0, total, 1.0)


def _pixel_weights(labels, valid, class_weights, dtype):
    if class_weights is None:
        return valid
    table = ops.convert_to_tensor(class_weights, dtype=dtype)
    return ops.take(table, labels) * valid


def soft_counts(one_hot, y_pred, valid):
    """Soft tp, fp, fn per class over batch, height and width (ignored pixels contribute nothing).

    fp and fn are sums of non-negative products rather than differences of
    sums, so rounding can never make them negative. Probabilities are not
    clipped (the article clipped them because it shared them with its log):
    no log is taken here, and unclipped a one-hot prediction scores exactly
    1 on every class, including classes absent from labels and prediction.
    """
    probs = y_pred * valid[..., None]
    axes = tuple(range(len(y_pred.shape) - 1))
    tp = ops.sum(one_hot * probs, axis=axes)
    fp = ops.sum((1.0 - one_hot) * probs, axis=axes)
    fn = ops.sum(one_hot * (1.0 - probs), axis=axes)
    return tp, fp, fn


# === Pixel losses ===

def cross_entropy(y_true, y_pred, n_classes, ignore_label=255):
    """Mean over non-ignored pixels of -log p(true class)."""
    labels, _, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    per_pixel = keras_losses.sparse_categorical_crossentropy(labels, y_pred, axis=-1)
    return _weighted_mean(per_pixel, valid)


def weighted_cross_entropy(y_true, y_pred, n_classes, ignore_label=255, class_weights=None):
    """sum_i w[y_i] * -log p_i(y_i) / sum_i w[y_i] over non-ignored pixels i.

    The weighted mean (PyTorch's `CrossEntropyLoss(weight=...)`) keeps the
    loss's scale independent of the weights' scale; equal weights give `ce`.
    """
    labels, _, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    per_pixel = keras_losses.sparse_categorical_crossentropy(labels, y_pred, axis=-1)
    return _weighted_mean(per_pixel, _pixel_weights(labels, valid, class_weights, y_pred.dtype))


def categorical_focal(y_true, y_pred, n_classes, ignore_label=255, class_weights=None,
                      focal_gamma=2.0, focal_alpha=0.25):
    """Weighted mean over pixels of -alpha * (1 - p_t)^gamma * log p_t (Lin et al. 2017, softmax form)."""
    labels, one_hot, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    per_pixel = keras_losses.categorical_focal_crossentropy(
        one_hot, y_pred, alpha=focal_alpha, gamma=focal_gamma, axis=-1)
    return _weighted_mean(per_pixel, _pixel_weights(labels, valid, class_weights, y_pred.dtype))


def binary_cross_entropy(y_true, y_pred, n_classes, ignore_label=255):
    """Mean over pixels and foreground channels c >= 1 of -[y log p + (1 - y) log(1 - p)]."""
    _, one_hot, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    per_pixel = keras_losses.binary_crossentropy(one_hot[..., 1:], y_pred[..., 1:], axis=-1)
    return _weighted_mean(per_pixel, valid)


def binary_focal(y_true, y_pred, n_classes, ignore_label=255, focal_gamma=2.0, focal_alpha=0.25):
    """Mean over pixels and foreground channels of the class-balanced binary focal loss.

    Per element: -alpha (1-p)^gamma log p where y = 1, -(1-alpha) p^gamma log(1-p) where y = 0.
    """
    _, one_hot, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    per_pixel = keras_losses.binary_focal_crossentropy(
        one_hot[..., 1:], y_pred[..., 1:], apply_class_balancing=True,
        alpha=focal_alpha, gamma=focal_gamma, axis=-1)
    return _weighted_mean(per_pixel, valid)


# === Region losses ===

def fbeta_score(y_true, y_pred, n_classes, ignore_label=255, beta=1.0, smooth=SMOOTH):
    """Soft F-beta per class, averaged over classes; beta=1 is the Dice coefficient."""
    _, one_hot, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    tp, fp, fn = soft_counts(one_hot, y_pred, valid)
    b2 = beta ** 2
    return ops.mean(((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth))


def jaccard_score(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    """Soft IoU per class, (tp + s) / (tp + fp + fn + s), averaged over classes."""
    _, one_hot, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    tp, fp, fn = soft_counts(one_hot, y_pred, valid)
    return ops.mean((tp + smooth) / (tp + fp + fn + smooth))


def tversky_index(y_true, y_pred, n_classes, ignore_label=255, tversky_alpha=0.7, tversky_beta=0.3,
                  smooth=SMOOTH):
    """Per-class Tversky index (tp + s) / (tp + alpha fn + beta fp + s), shape (C,)."""
    _, one_hot, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    tp, fp, fn = soft_counts(one_hot, y_pred, valid)
    return (tp + smooth) / (tp + tversky_alpha * fn + tversky_beta * fp + smooth)


def dice_loss(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    return 1.0 - fbeta_score(y_true, y_pred, n_classes, ignore_label, beta=1.0, smooth=smooth)


def jaccard_loss(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    return 1.0 - jaccard_score(y_true, y_pred, n_classes, ignore_label, smooth=smooth)


def tversky_loss(y_true, y_pred, n_classes, ignore_label=255, tversky_alpha=0.7, tversky_beta=0.3,
                 smooth=SMOOTH):
    """1 - mean over classes of the Tversky index (Salehi et al. 2017); alpha weighs fn."""
    return 1.0 - ops.mean(tversky_index(y_true, y_pred, n_classes, ignore_label, tversky_alpha,
                                        tversky_beta, smooth))


def focal_tversky_loss(y_true, y_pred, n_classes, ignore_label=255, tversky_alpha=0.7, tversky_beta=0.3,
                       ftversky_gamma=0.75, smooth=SMOOTH):
    """Mean over classes of (1 - TI_c)^gamma (Abraham & Khan 2019: gamma = 1/(4/3) = 0.75).

    1 - TI is floored at EPSILON: d/dx x^0.75 is infinite at 0, which a
    perfectly predicted class would otherwise reach.
    """
    ti = tversky_index(y_true, y_pred, n_classes, ignore_label, tversky_alpha, tversky_beta, smooth)
    return ops.mean(ops.power(ops.maximum(1.0 - ti, EPSILON), ftversky_gamma))


def generalized_dice_loss(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    """1 - 2 sum_c w_c tp_c / sum_c w_c (2 tp_c + fp_c + fn_c), w_c = 1 / (label pixels of c)^2.

    Sudre et al. 2017. A class absent from the batch's labels has an infinite
    weight; as in the authors' NiftyNet code (and MONAI) it takes the largest
    weight of the present classes, so predicting it is still penalised. The
    weights are then scaled to sum to 1: the ratio does not change, and
    `smooth` stays negligible (raw weights of ~1e-12 would drown in it).
    """
    _, one_hot, valid = prepare(y_true, y_pred, n_classes, ignore_label)
    tp, fp, fn = soft_counts(one_hot, y_pred, valid)
    counts = ops.sum(one_hot, axis=tuple(range(len(y_pred.shape) - 1)))
    present = counts > 0
    weights = ops.where(present, 1.0 / ops.square(ops.maximum(counts, 1.0)), 0.0)
    weights = ops.where(present, weights, ops.max(weights))
    total = ops.sum(weights)
    weights = ops.where(total > 0, weights / ops.where(total > 0, total, 1.0), 1.0 / n_classes)
    numerator = 2.0 * ops.sum(weights * tp) + smooth
    denominator = ops.sum(weights * (2.0 * tp + fp + fn)) + smooth
    return 1.0 - numerator / denominator


# === Sums ===

def ce_dice_loss(y_true, y_pred, n_classes, ignore_label=255, beta=1.0, smooth=SMOOTH):
    """The article's loss: CE + (1 - F_beta)."""
    return (cross_entropy(y_true, y_pred, n_classes, ignore_label)
            + 1.0 - fbeta_score(y_true, y_pred, n_classes, ignore_label, beta=beta, smooth=smooth))


def bce_dice_loss(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    """BCE on the foreground channels + Dice loss over all classes."""
    return (binary_cross_entropy(y_true, y_pred, n_classes, ignore_label)
            + dice_loss(y_true, y_pred, n_classes, ignore_label, smooth=smooth))


def ce_jaccard_loss(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    return (cross_entropy(y_true, y_pred, n_classes, ignore_label)
            + jaccard_loss(y_true, y_pred, n_classes, ignore_label, smooth=smooth))


def bce_jaccard_loss(y_true, y_pred, n_classes, ignore_label=255, smooth=SMOOTH):
    """BCE on the foreground channels + Jaccard loss over all classes."""
    return (binary_cross_entropy(y_true, y_pred, n_classes, ignore_label)
            + jaccard_loss(y_true, y_pred, n_classes, ignore_label, smooth=smooth))
