"""The metric registry: CLI name -> confusion-matrix score, and the `get_metrics` factory.

Keras is imported only when a Keras metric is asked for, so the numpy
evaluation (`metrics.evaluation`, tools/evaluate.py) starts without it.
Importing `metrics.confusion` registers the metric classes for
`keras.models.load_model`; `get_metrics` does so.
"""
from utils.errors import UserError

# name -> the confusion-matrix score it reports (SCORES in metrics/confusion.py).
# iou_score/jaccard_score and f1_score/dice_score are the same numbers under
# the original's two names each.
METRICS = {
    "accuracy": "accuracy",
    "iou_score": "iou",
    "jaccard_score": "iou",
    "f1_score": "f1",
    "f2_score": "f2",
    "dice_score": "dice",
}


def parse_metric_names(names):
    """A list or a comma-separated string -> list of known names; an unknown name lists the valid ones."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"--metrics {', '.join(unknown)} unknown; valid names: {', '.join(METRICS)}")
    return names


def get_metrics(names, n_classes, ignore_label=255, per_class=False, class_names=None):
    """Keras metrics for `names` (a list or a comma-separated string).

    Each is a ConfusionMatrixMetric whose result is the epoch's mean over
    present classes (pixel accuracy for `accuracy`). With `per_class=True`
    one more metric, `PerClassScores`, adds "<name>/<class name>" values for
    every region metric in `names` to the epoch logs (log.csv, TensorBoard).
    """
    from metrics.confusion import ConfusionMatrixMetric, PerClassScores
    names = parse_metric_names(names)
    metrics = [ConfusionMatrixMetric(METRICS[n], n_classes, ignore_label, name=n) for n in names]
    scores = {n: METRICS[n] for n in names if METRICS[n] != "accuracy"}
    if per_class and scores:
        metrics.append(PerClassScores(scores, n_classes, ignore_label, class_names=class_names))
    return metrics


def __getattr__(name):
    if name in ("ConfusionMatrixMetric", "PerClassScores"):
        from metrics import confusion
        return getattr(confusion, name)
    raise AttributeError(f"module 'metrics' has no attribute {name!r}")
