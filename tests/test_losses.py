"""Every loss against hand-computed and independent numpy values, gradients, options, serialisation."""
import math

import numpy as np
import pytest

import keras
import tensorflow as tf

from conftest import run_without
from losses import LOSSES, accepted_options, add_loss_arguments, get_loss, loss_options
from losses.class_weights import median_frequency, parse_class_weights
from utils.errors import UserError

IGN = 255
S = 1e-5  # the default smooth
EPS = 1e-7


def call(name, labels, probs, n_classes, **options):
    fn = LOSSES[name]
    return float(fn(tf.constant(labels), tf.constant(probs, tf.float32), n_classes, IGN, **options))


# === Hand-computed: 3 pixels, 2 classes, the last pixel ignored ===
# labels 0, 1, 255; p(class 1) = .2, .6, .5. Per class over the 2 valid pixels:
# class 0: tp .8, fp .4, fn .2; class 1: tp .6, fp .2, fn .4.
HAND_LABELS = np.array([[[0, 1, IGN]]])
HAND_PROBS = np.array([[[[.8, .2], [.4, .6], [.5, .5]]]])
L8, L6 = -math.log(.8), -math.log(.6)
CE = (L8 + L6) / 2
DICE = 1 - ((1.6 + S) / (2.2 + S) + (1.2 + S) / (1.8 + S)) / 2
JACC = 1 - ((.8 + S) / (1.4 + S) + (.6 + S) / (1.2 + S)) / 2
TI0, TI1 = (.8 + S) / (.8 + .7 * .2 + .3 * .4 + S), (.6 + S) / (.6 + .7 * .4 + .3 * .2 + S)
HAND = [
    ("ce", {}, CE),
    ("weighted_ce", {}, CE),
    ("weighted_ce", {"class_weights": [1, 3]}, (L8 + 3 * L6) / 4),
    ("c_focal", {}, (.25 * .2 ** 2 * L8 + .25 * .4 ** 2 * L6) / 2),
    ("c_focal", {"class_weights": [1, 3], "focal_gamma": 1, "focal_alpha": .5},
     (.5 * .2 * L8 + 3 * .5 * .4 * L6) / 4),
    # foreground channel 1: pixel 0 is a negative with p .2, pixel 1 a positive with p .6
    ("b_focal", {}, (.75 * .2 ** 2 * L8 + .25 * .4 ** 2 * L6) / 2),
    ("dice", {}, DICE),
    ("bce_dice", {}, CE + DICE),  # 2 classes: BCE on channel 1 equals CE
    ("ce_dice", {}, CE + DICE),
    ("ce_dice", {"beta": 2.0}, CE + 1 - ((5 * .8 + S) / (5 * .8 + 4 * .2 + .4 + S)
                                         + (5 * .6 + S) / (5 * .6 + 4 * .4 + .2 + S)) / 2),
    ("g_dice", {}, 1 - (2 * (.5 * .8 + .5 * .6) + S) / (.5 * 2.2 + .5 * 1.8 + S)),  # one pixel each: w = .5, .5
    ("jaccard", {}, JACC),
    ("bce_jaccard", {}, CE + JACC),
    ("ce_jaccard", {}, CE + JACC),
    ("tversky", {}, 1 - (TI0 + TI1) / 2),
    ("tversky", {"tversky_alpha": .5, "tversky_beta": .5}, DICE),
    ("f_tversky", {}, ((1 - TI0) ** .75 + (1 - TI1) ** .75) / 2),
    ("f_tversky", {"ftversky_gamma": 1.0}, 1 - (TI0 + TI1) / 2),
]


@pytest.mark.parametrize("name,options,expected", HAND, ids=[f"{h[0]}-{i}" for i, h in enumerate(HAND)])
def test_hand_computed(name, options, expected):
    assert call(name, HAND_LABELS, HAND_PROBS, 2, **options) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_hand_table_covers_every_loss():
    assert {h[0] for h in HAND} == set(LOSSES)


# === Independent numpy references (float64, explicit loops) ===

def ref_pixels(labels, probs, per_pixel, weights=None):
    total = wsum = 0.0
    for idx in np.ndindex(labels.shape):
        label = labels[idx]
        if label == IGN:
            continue
        w = 1.0 if weights is None else weights[label]
        total += w * per_pixel(label, probs[idx])
        wsum += w
    return total / wsum


def clip(p):
    return np.clip(p, EPS, 1 - EPS)


def ce_px(label, p):
    return -math.log(clip(p[label]))


def c_focal_px(gamma, alpha):
    return lambda label, p: -alpha * (1 - clip(p[label])) ** gamma * math.log(clip(p[label]))


def b_focal_px(gamma, alpha):
    def px(label, p):
        terms = []
        for c in range(1, len(p)):
            q = clip(p[c])
            terms.append(-alpha * (1 - q) ** gamma * math.log(q) if label == c
                         else -(1 - alpha) * q ** gamma * math.log(1 - q))
        return np.mean(terms)
    return px


def bce_px(label, p):
    return np.mean([-math.log(clip(p[c])) if label == c else -math.log(1 - clip(p[c])) for c in range(1, len(p))])


def ref_counts(labels, probs):
    n_classes = probs.shape[-1]
    tp, fp, fn, ref = (np.zeros(n_classes) for _ in range(4))
    for idx in np.ndindex(labels.shape):
        label = labels[idx]
        if label == IGN:
            continue
        for c in range(n_classes):
            p = float(probs[idx][c])
            if label == c:
                tp[c] += p
                fn[c] += 1 - p
                ref[c] += 1
            else:
                fp[c] += p
    return tp, fp, fn, ref


def ref_region(name, labels, probs, smooth=S, beta=1.0, ta=.7, tb=.3, gamma=.75):
    tp, fp, fn, ref = ref_counts(labels, probs)
    if name == "fbeta":
        b2 = beta ** 2
        return 1 - np.mean(((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth))
    if name == "jaccard":
        return 1 - np.mean((tp + smooth) / (tp + fp + fn + smooth))
    ti = (tp + smooth) / (tp + ta * fn + tb * fp + smooth)
    if name == "tversky":
        return 1 - np.mean(ti)
    if name == "f_tversky":
        return np.mean((1 - ti) ** gamma)
    assert name == "g_dice"
    w = np.array([1 / r ** 2 if r else 0.0 for r in ref])
    w[ref == 0] = w.max()
    w = w / w.sum()
    return 1 - (2 * np.sum(w * tp) + smooth) / (np.sum(w * (2 * tp + fp + fn)) + smooth)


@pytest.fixture(scope="module")
def batch():
    """B=2, H=3, W=5, C=4 (every axis a different size), 5 ignored pixels, class 3 absent from the labels."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, (2, 3, 5))
    labels[0, 0, :3] = IGN
    labels[1, 2, 4] = IGN
    labels[1, 1, 0] = IGN
    logits = rng.normal(0, 1.5, (2, 3, 5, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels, probs.astype(np.float32)


W = [0.5, 1.0, 2.0, 3.0]


def numpy_table(labels, probs):
    ce = ref_pixels(labels, probs, ce_px)
    bce = ref_pixels(labels, probs, bce_px)
    dice, jacc = ref_region("fbeta", labels, probs), ref_region("jaccard", labels, probs)
    return [
        ("ce", {}, ce),
        ("weighted_ce", {"class_weights": W}, ref_pixels(labels, probs, ce_px, W)),
        ("c_focal", {}, ref_pixels(labels, probs, c_focal_px(2.0, .25))),
        ("c_focal", {"class_weights": W, "focal_gamma": 3.0, "focal_alpha": .4},
         ref_pixels(labels, probs, c_focal_px(3.0, .4), W)),
        ("b_focal", {}, ref_pixels(labels, probs, b_focal_px(2.0, .25))),
        ("b_focal", {"focal_gamma": 0.5, "focal_alpha": .9}, ref_pixels(labels, probs, b_focal_px(.5, .9))),
        ("dice", {}, dice),
        ("dice", {"smooth": 1.0}, ref_region("fbeta", labels, probs, smooth=1.0)),
        ("bce_dice", {}, bce + dice),
        ("ce_dice", {}, ce + dice),
        ("ce_dice", {"beta": 2.0}, ce + ref_region("fbeta", labels, probs, beta=2.0)),
        ("g_dice", {}, ref_region("g_dice", labels, probs)),
        ("jaccard", {}, jacc),
        ("bce_jaccard", {}, bce + jacc),
        ("ce_jaccard", {}, ce + jacc),
        ("tversky", {}, ref_region("tversky", labels, probs)),
        ("tversky", {"tversky_alpha": .2, "tversky_beta": .9}, ref_region("tversky", labels, probs, ta=.2, tb=.9)),
        ("f_tversky", {}, ref_region("f_tversky", labels, probs)),
        ("f_tversky", {"ftversky_gamma": 2.0}, ref_region("f_tversky", labels, probs, gamma=2.0)),
    ]


def test_numpy_references(batch):
    labels, probs = batch
    table = numpy_table(labels, probs)
    assert {t[0] for t in table} == set(LOSSES)
    for name, options, expected in table:
        assert call(name, labels, probs, 4, **options) == pytest.approx(expected, rel=2e-5, abs=1e-6), (name, options)


def test_ignored_pixels_change_nothing(batch):
    labels, probs = batch
    other = probs.copy()
    other[labels == IGN] = np.array([0.0, 0.0, 0.0, 1.0], np.float32)  # a confident "class 3" where ignored
    for name in LOSSES:
        assert call(name, labels, other, 4) == pytest.approx(call(name, labels, probs, 4), rel=1e-6), name


def test_all_ignored_is_zero_not_nan():
    labels = np.full((1, 2, 2), IGN)
    probs = np.full((1, 2, 2, 3), 1 / 3, np.float32)
    for name in LOSSES:
        value = call(name, labels, probs, 3)
        # f_tversky's floor: (1 - TI) >= 1e-7, so (1e-7)^0.75 = 5.6e-6 per class
        assert math.isfinite(value) and abs(value) < 1e-5, (name, value)


def test_g_dice_weights_are_the_papers_without_smoothing(batch):
    """Scaling the weights to sum 1 changes nothing but the smooth term: with smooth=0, raw 1/r^2 weights."""
    labels, probs = batch
    tp, fp, fn, ref = ref_counts(labels, probs)
    w = np.where(ref > 0, 1 / np.maximum(ref, 1) ** 2, 0)
    w[ref == 0] = w.max()
    expected = 1 - 2 * np.sum(w * tp) / np.sum(w * (2 * tp + fp + fn))
    assert call("g_dice", labels, probs, 4, smooth=0.0) == pytest.approx(expected, rel=1e-5)


def test_keras_pixel_losses_reduce_the_channel_axis():
    """The Keras functions used per pixel return (B, H, W): the mean/sum ran over the last axis."""
    y = tf.one_hot(tf.zeros((2, 3, 5), tf.int32), 4)
    p = tf.fill((2, 3, 5, 4), 0.25)
    assert keras.losses.binary_crossentropy(y[..., 1:], p[..., 1:], axis=-1).shape == (2, 3, 5)
    assert keras.losses.binary_focal_crossentropy(y[..., 1:], p[..., 1:], axis=-1).shape == (2, 3, 5)
    assert keras.losses.categorical_focal_crossentropy(y, p, axis=-1).shape == (2, 3, 5)
    assert keras.losses.sparse_categorical_crossentropy(tf.zeros((2, 3, 5), tf.int32), p).shape == (2, 3, 5)


# === Gradients and minimum ===

@pytest.mark.parametrize("name", list(LOSSES))
def test_finite_gradients_zero_at_ignored_pixels(name, batch):
    labels, _ = batch
    rng = np.random.default_rng(1)
    onehot = np.eye(4)[np.where(labels == IGN, 0, labels)]
    for logits in (rng.normal(0, 2, (2, 3, 5, 4)), 20.0 * onehot):  # random; near-perfect (saturated softmax)
        var = tf.Variable(logits, dtype=tf.float32)
        with tf.GradientTape() as tape:
            loss = LOSSES[name](tf.constant(labels), tf.nn.softmax(var), 4, IGN)
        grad = tape.gradient(loss, var).numpy()
        assert np.all(np.isfinite(grad)), name
        assert np.all(grad[labels == IGN] == 0), name
    var = tf.Variable(rng.normal(0, 2, (2, 3, 5, 4)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = LOSSES[name](tf.constant(labels), tf.nn.softmax(var), 4, IGN)
    assert np.abs(tape.gradient(loss, var).numpy()).max() > 1e-6, name


@pytest.mark.parametrize("name", list(LOSSES))
def test_perfect_prediction_is_lowest(name, batch):
    labels, _ = batch
    perfect = np.eye(4, dtype=np.float32)[np.where(labels == IGN, 0, labels)]
    best = call(name, labels, perfect, 4)
    assert abs(best) < 1e-4, (name, best)
    rng = np.random.default_rng(2)
    for noise in (0.02, 0.2, 1.0):
        for _ in range(5):
            mixed = (1 - noise) * perfect + noise * rng.dirichlet(np.ones(4), labels.shape).astype(np.float32)
            assert call(name, labels, mixed, 4) > best, (name, noise)


# === Factory, options, serialisation ===

def test_unknown_name_lists_valid_names():
    with pytest.raises(UserError, match="valid names: ce, weighted_ce"):
        get_loss("focal", 2)


@pytest.mark.parametrize("name,options,message", [
    ("ce", {"focal_gamma": 2.0}, "is not used by --loss ce"),
    ("dice", {"gamma": 2.0}, "is not a loss option"),
    ("weighted_ce", {"class_weights": [1, 2, 3]}, "3 values for 2 classes"),
    ("weighted_ce", {"class_weights": [1, -1]}, "non-negative"),
    ("weighted_ce", {"class_weights": [0, 0]}, "not all 0"),
    ("b_focal", {"focal_alpha": 1.5}, "in \\[0, 1\\]"),
    ("f_tversky", {"ftversky_gamma": 0}, "> 0"),
    ("tversky", {"tversky_alpha": "x"}, "expected a number"),
])
def test_bad_options_are_user_errors(name, options, message):
    with pytest.raises(UserError, match=message):
        get_loss(name, 2, **options)


def test_accepted_options():
    assert accepted_options("ce") == []
    assert accepted_options("c_focal") == ["class_weights", "focal_gamma", "focal_alpha"]
    assert accepted_options("f_tversky") == ["tversky_alpha", "tversky_beta", "ftversky_gamma", "smooth"]


def test_keras_free_option_table_matches_the_loss_signatures():
    """losses.LOSS_OPTIONS answers flag checks before Keras loads; it must say what the functions take."""
    import inspect
    from losses import LOSS_OPTIONS
    assert set(LOSS_OPTIONS) == set(LOSSES)
    for name, function in LOSSES.items():
        params = list(inspect.signature(function).parameters)
        assert LOSS_OPTIONS[name] == tuple(params[params.index("ignore_label") + 1:]), name


def test_loss_names_and_options_check_without_keras():
    done = run_without("import losses; losses.check_options('c_focal', 2, {'focal_gamma': 1.0}); "
                       "losses.check_loss_name('dice', 2)", modules=("keras",))
    assert done.returncode == 0, done.stderr


def test_config_round_trip_keeps_options(batch):
    labels, probs = batch
    loss = get_loss("c_focal", 4, IGN, class_weights=np.array(W), focal_gamma=3)
    config = keras.saving.serialize_keras_object(loss)
    assert config["config"]["options"] == {"class_weights": W, "focal_gamma": 3.0}
    again = keras.saving.deserialize_keras_object(config)
    assert float(again(labels, probs)) == pytest.approx(float(loss(labels, probs)), rel=1e-6)


def _tiny_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, (2, 8, 8))
    y[:, 0] = IGN
    return x, y


def test_every_loss_trains_in_a_compiled_model():
    """Graph mode, as train.py runs it: two SGD steps, the second with a lower loss."""
    x, y = _tiny_batch()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1, activation="softmax")])
    for name in LOSSES:
        model.compile(optimizer="sgd", loss=get_loss(name, 3, IGN))
        first, second = model.train_on_batch(x, y), model.train_on_batch(x, y)
        assert math.isfinite(first) and second < first, (name, first, second)


def test_compiled_model_saves_and_reloads(tmp_path):
    x, y = _tiny_batch()
    for name in ("weighted_ce", "f_tversky", "g_dice"):
        options = {"class_weights": [1, 2, 3]} if name == "weighted_ce" else {}
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(3, 1, activation="softmax")])
        model.compile(optimizer="sgd", loss=get_loss(name, 3, IGN, **options))
        model.train_on_batch(x, y)
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        assert loaded.loss.options == model.loss.options
        assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)


def test_one_class_is_refused():
    with pytest.raises(UserError, match="n_classes >= 2"):
        get_loss("dice", 1)


def test_cli_flags_become_options():
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_classes", type=int, default=3)
    add_loss_arguments(parser)
    args = parser.parse_args(["--class_weights", "auto", "--focal_gamma", "1.5"])
    assert loss_options(args) == {"focal_gamma": 1.5, "class_weights": [1.0, 1.0, 1.0]}  # placeholder check
    counts = np.zeros(256, np.int64)
    counts[:3] = [600, 300, 100]
    assert loss_options(args, counts)["class_weights"] == pytest.approx([0.5, 1.0, 3.0])
    assert loss_options(parser.parse_args([])) == {}
    assert loss_options(parser.parse_args(["--class_weights", "1,2,3"])) == {"class_weights": [1.0, 2.0, 3.0]}
    with pytest.raises(UserError, match="expected 'auto' or comma-separated"):
        loss_options(parser.parse_args(["--class_weights", "1;2;3"]))


# === Median-frequency weights ===

def test_median_frequency_by_hand():
    # frequencies .6 .3 .1 -> median .3 -> weights .5 1 3; an absent class gets 1
    assert median_frequency([600, 300, 100]) == pytest.approx([0.5, 1.0, 3.0])
    assert median_frequency([600, 0, 300, 100]) == pytest.approx([0.5, 1.0, 1.0, 3.0])
    # 256 counts from count_classes (ignore-label bin at 255) with n_classes
    counts = np.zeros(256)
    counts[[0, 1, 255]] = [300, 100, 10 ** 6]
    assert median_frequency(counts, 2) == pytest.approx([200 / 300, 200 / 100])
    with pytest.raises(UserError, match="no pixel"):
        median_frequency([0, 0])


def test_parse_class_weights():
    assert parse_class_weights(None, 2) is None
    assert parse_class_weights(" 1, 2.5 ", 2) == [1.0, 2.5]
    assert parse_class_weights("AUTO", 2, counts=[1, 3]) == pytest.approx([2.0, 2 / 3])
