"""The metric registry: CLI name -> metric factory, and the `get_metrics` factory."""
from metrics.confusion import ConfusionMatrixMetric
from utils.errors import UserError

# name -> the confusion-matrix score it reports
METRICS = {
    "accuracy": "accuracy",
    "iou_score": "iou",
    "dice_score": "dice",
}


def get_metrics(names, n_classes, ignore_label=255):
    """Keras metrics for `names` (a list or a comma-separated string)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"--metrics {', '.join(unknown)} unknown; valid names: {', '.join(METRICS)}")
    return [ConfusionMatrixMetric(METRICS[n], n_classes, ignore_label, name=n) for n in names]
