"""Training metrics: hand-computed values, numpy references, Keras integration (log.csv, TensorBoard)."""
import csv
import math
import os

import numpy as np
import pytest

import keras

from losses import get_loss
from metrics import METRICS, get_metrics
from metrics.confusion import PerClassScores
from metrics.evaluation import confusion_matrix, summarize
from utils.errors import UserError

IGN = 255


def one_hot_probs(pred, n_classes):
    return np.eye(n_classes, dtype=np.float32)[pred]


def metric_value(name, labels_batches, pred_batches, n_classes):
    [metric] = get_metrics([name], n_classes, IGN)
    for labels, pred in zip(labels_batches, pred_batches):
        metric.update_state(labels, one_hot_probs(pred, n_classes))
    return float(metric.result())


# === Hand-computed ===
# labels 0 0 1 1 2 255, predictions 0 1 1 1 0 2 (the prediction at the ignored pixel does not count);
# class 3 occurs in neither. tp = 1 2 0, fp = 1 1 0, fn = 1 0 1 for classes 0 1 2.
HAND_LABELS = np.array([[[0, 0, 1], [1, 2, IGN]]])
HAND_PRED = np.array([[[0, 1, 1], [1, 0, 2]]])
HAND = {
    "accuracy": 3 / 5,
    "iou_score": (1 / 3 + 2 / 3 + 0) / 3,
    "jaccard_score": (1 / 3 + 2 / 3 + 0) / 3,
    "dice_score": (2 / 4 + 4 / 5 + 0) / 3,
    "f1_score": (2 / 4 + 4 / 5 + 0) / 3,
    "f2_score": (5 / (5 + 4 + 1) + 10 / (10 + 0 + 1) + 0) / 3,
}


@pytest.mark.parametrize("name", list(METRICS))
def test_hand_computed(name):
    assert metric_value(name, [HAND_LABELS], [HAND_PRED], 4) == pytest.approx(HAND[name], rel=1e-6)


def test_per_class_hand_computed():
    metric = PerClassScores({"iou_score": "iou", "f2_score": "f2"}, 4, IGN, class_names=["bg", "a b", "a?b", "x"])
    metric.update_state(HAND_LABELS, one_hot_probs(HAND_PRED, 4))
    result = {k: float(v) for k, v in metric.result().items()}
    assert list(result) == [f"{m}/{c}" for m in ("iou_score", "f2_score") for c in ("bg", "a_b", "a_b_2", "x")]
    assert result["iou_score/bg"] == pytest.approx(1 / 3)
    assert result["iou_score/a_b"] == pytest.approx(2 / 3)
    assert result["iou_score/a_b_2"] == 0.0
    assert math.isnan(result["iou_score/x"])  # absent from labels and predictions: undefined, not 0
    assert result["f2_score/a_b"] == pytest.approx(10 / 11)


# === Numpy reference over several batches ===

def reference(labels_batches, pred_batches, n_classes):
    cm = np.zeros((n_classes, n_classes))
    for labels, pred in zip(labels_batches, pred_batches):
        for t, p in zip(labels.ravel(), pred.ravel()):
            if t != IGN:
                cm[t, p] += 1
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    present = (tp + fp + fn) > 0
    per_class = {
        "iou": tp / np.maximum(tp + fp + fn, 1),
        "dice": 2 * tp / np.maximum(2 * tp + fp + fn, 1),
        "f1": 2 * tp / np.maximum(2 * tp + fp + fn, 1),
        "f2": 5 * tp / np.maximum(5 * tp + 4 * fn + fp, 1),
    }
    values = {"accuracy": tp.sum() / cm.sum()}
    for name, score in METRICS.items():
        if score != "accuracy":
            values[name] = per_class[score][present].mean()
    return values, per_class, present


@pytest.fixture(scope="module")
def batches():
    """3 batches of (2, 6, 7) labels with ignored pixels; class 4 never labelled, class 3 never predicted."""
    rng = np.random.default_rng(3)
    labels, preds = [], []
    for _ in range(3):
        t = rng.integers(0, 4, (2, 6, 7))
        t[rng.random(t.shape) < 0.15] = IGN
        p = np.where(rng.random(t.shape) < 0.6, np.where(t == IGN, 0, t), rng.integers(0, 5, t.shape))
        p[p == 3] = 4
        labels.append(t)
        preds.append(p)
    return labels, preds


def test_epoch_accumulation_matches_numpy(batches):
    labels, preds = batches
    expected, _, present = reference(labels, preds, 5)
    assert present.tolist() == [True] * 5  # class 3 only labelled, class 4 only predicted
    for name in METRICS:
        assert metric_value(name, labels, preds, 5) == pytest.approx(expected[name], rel=1e-6), name


def test_epoch_mean_differs_from_mean_of_batch_means(batches):
    """Why accumulate: averaging per-batch IoUs would give another number here."""
    labels, preds = batches
    per_batch = np.mean([metric_value("iou_score", [t], [p], 5) for t, p in zip(labels, preds)])
    assert abs(metric_value("iou_score", labels, preds, 5) - per_batch) > 1e-3


def test_per_class_matches_numpy_and_reset(batches):
    labels, preds = batches
    _, per_class, _ = reference(labels, preds, 5)
    metrics = get_metrics("accuracy,iou_score,f2_score", 5, IGN, per_class=True)
    assert [m.name for m in metrics] == ["accuracy", "iou_score", "f2_score", "per_class"]
    per = metrics[-1]
    for t, p in zip(labels, preds):
        per.update_state(t, one_hot_probs(p, 5))
    result = per.result()
    assert sorted(result) == sorted(f"{m}/class_{i}" for m in ("iou_score", "f2_score") for i in range(5))
    for i in range(5):
        assert float(result[f"iou_score/class_{i}"]) == pytest.approx(per_class["iou"][i], rel=1e-6)
        assert float(result[f"f2_score/class_{i}"]) == pytest.approx(per_class["f2"][i], rel=1e-6)
    per.reset_state()
    assert all(math.isnan(float(v)) for v in per.result().values())


def test_labels_with_channel_axis(batches):
    labels, preds = batches
    a = metric_value("iou_score", labels, preds, 5)
    b = metric_value("iou_score", [t[..., None] for t in labels], preds, 5)
    assert a == b


def test_unknown_metric_lists_valid_names():
    with pytest.raises(UserError, match="valid names: accuracy, iou_score, jaccard_score"):
        get_metrics("accuracy,miou", 2)


def test_config_round_trip():
    for metric in get_metrics("f2_score", 3, 200, per_class=True, class_names=["a", "b", "c"]):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
        assert type(again) is type(metric) and again.get_config() == metric.get_config()


# === In a Keras model ===

def tiny_model(n_classes):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6, 7, 3)), keras.layers.Conv2D(n_classes, 1, activation="softmax")])


def test_training_metric_equals_numpy_evaluation(batches):
    labels = np.concatenate(batches[0])
    x = np.random.default_rng(4).normal(size=labels.shape + (3,)).astype(np.float32)
    model = tiny_model(5)
    model.compile(loss=get_loss("ce", 5, IGN), metrics=get_metrics(list(METRICS), 5, IGN, per_class=True))
    logs = model.evaluate(x, labels, batch_size=2, verbose=0, return_dict=True)
    pred = model.predict(x, batch_size=2, verbose=0).argmax(-1)
    summary = summarize(confusion_matrix(labels, pred, 5, IGN))
    assert logs["accuracy"] == pytest.approx(summary["aAcc"], rel=1e-6)
    assert logs["iou_score"] == pytest.approx(summary["mIoU"], rel=1e-6)
    assert logs["dice_score"] == pytest.approx(summary["mDice"], rel=1e-6)
    for c in summary["per_class"]:
        expected = c["IoU"] if c["IoU"] is not None else float("nan")
        np.testing.assert_allclose(logs[f"iou_score/class_{c['index']}"], expected, rtol=1e-6)


def test_per_class_values_reach_log_csv_and_tensorboard(tmp_path, batches):
    import tensorflow as tf
    labels = np.concatenate(batches[0])[:4]
    x = np.random.default_rng(5).normal(size=labels.shape + (3,)).astype(np.float32)
    model = tiny_model(5)
    model.compile(optimizer="sgd", loss=get_loss("ce", 5, IGN),
                  metrics=get_metrics("iou_score", 5, IGN, per_class=True, class_names=list("abcde")))
    log_csv, log_dir = str(tmp_path / "log.csv"), str(tmp_path / "log")
    model.fit(x, labels, batch_size=2, epochs=2, validation_data=(x, labels), verbose=0,
              callbacks=[keras.callbacks.CSVLogger(log_csv), keras.callbacks.TensorBoard(log_dir)])
    with open(log_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for key in ("iou_score/a", "iou_score/e", "val_iou_score/a", "val_iou_score/e"):
        assert key in rows[0]
    # validation ran on the training data after the epoch's updates: recompute it
    pred = model.predict(x, verbose=0).argmax(-1)
    expected = summarize(confusion_matrix(labels, pred, 5, IGN))["per_class"][0]["IoU"]
    assert float(rows[1]["val_iou_score/a"]) == pytest.approx(expected, rel=1e-6)
    tags = set()
    for root, _, files in os.walk(os.path.join(log_dir, "validation")):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                tags.update(v.tag for v in event.summary.value)
    assert {"epoch_iou_score", "epoch_iou_score/a", "epoch_iou_score/e"} <= tags


# === The confusion count's fast paths (bincount, two-class comparison, one count per step) ===

def test_two_class_ties_go_to_class_0_as_argmax():
    probs = np.array([[[[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]]], np.float32)
    [metric] = get_metrics(["accuracy"], 2, IGN)
    metric.update_state(np.array([[[0, 1, 0]]]), probs)
    assert float(metric.result()) == 1.0
    metric.reset_state()
    metric.update_state(np.array([[[1, 1, 0]]]), probs)
    assert float(metric.result()) == pytest.approx(2 / 3)


def test_a_numpy_batch_changed_in_place_is_counted_again(batches):
    """The per-step reuse of the matrix holds only for immutable tensors: a reused numpy buffer is recounted."""
    labels, preds = batches
    metrics = get_metrics(["iou_score", "dice_score"], 5, IGN)
    label_buffer, prob_buffer = labels[0].copy(), one_hot_probs(preds[0], 5)
    for t, p in zip(labels, preds):
        label_buffer[...], prob_buffer[...] = t, one_hot_probs(p, 5)
        for metric in metrics:
            metric.update_state(label_buffer, prob_buffer)
    expected, _, _ = reference(labels, preds, 5)
    assert float(metrics[0].result()) == pytest.approx(expected["iou_score"], rel=1e-6)
    assert float(metrics[1].result()) == pytest.approx(expected["dice_score"], rel=1e-6)


@pytest.mark.parametrize("n_classes,jit", [(2, True), (5, True), (2, False)])
def test_compiled_step_metrics_equal_numpy_evaluation(batches, n_classes, jit):
    """Every metric of a compiled (and XLA) step shares one count; each still equals the numpy evaluation."""
    labels = np.concatenate(batches[0])
    labels = np.where(labels == IGN, IGN, labels % n_classes)
    x = np.random.default_rng(5).normal(size=labels.shape + (3,)).astype(np.float32)
    model = tiny_model(n_classes)
    model.compile(loss=get_loss("ce", n_classes, IGN), jit_compile=jit,
                  metrics=get_metrics(list(METRICS), n_classes, IGN, per_class=True))
    logs = model.evaluate(x, labels, batch_size=2, verbose=0, return_dict=True)
    pred = model.predict(x, batch_size=2, verbose=0).argmax(-1)
    summary = summarize(confusion_matrix(labels, pred, n_classes, IGN))
    assert logs["accuracy"] == pytest.approx(summary["aAcc"], rel=1e-6)
    assert logs["iou_score"] == pytest.approx(summary["mIoU"], rel=1e-6)
    assert logs["jaccard_score"] == pytest.approx(summary["mIoU"], rel=1e-6)
    assert logs["dice_score"] == pytest.approx(summary["mDice"], rel=1e-6)
    for c in summary["per_class"]:
        expected = c["IoU"] if c["IoU"] is not None else float("nan")
        np.testing.assert_allclose(logs[f"iou_score/class_{c['index']}"], expected, rtol=1e-6)
