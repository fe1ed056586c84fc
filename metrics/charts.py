"""PNG charts of an evaluation summary: per-class IoU bars and a normalised confusion matrix.

Drawn on matplotlib's Agg canvas (`Figure` + `FigureCanvasAgg`), so no
display and no pyplot backend selection are involved.
"""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_INCHES = 30        # above ~60 classes the labels shrink instead of the figure growing
ANNOTATE_CELLS_UP_TO = 20


def _labels(summary):
    return [f"{c['index']}: {c['name']}" for c in summary["per_class"]]


def _font(n):
    return 9 if n <= 30 else max(4, int(9 * 30 / n))


def iou_chart(summary, path):
    """Horizontal IoU bars, one per class (top = class 0), mIoU as a dashed line; 'n/a' for absent classes."""
    per_class = summary["per_class"]
    n = len(per_class)
    fig = Figure(figsize=(8, min(MAX_INCHES, 1.5 + 0.35 * n)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ious = [c["IoU"] for c in per_class]
    ys = np.arange(n)
    ax.barh(ys, [v if v is not None else 0.0 for v in ious], color="#4878b0")
    for y, value in zip(ys, ious):
        text = f"{value:.3f}" if value is not None else "n/a (absent)"
        ax.text(min(value or 0.0, 0.86) + 0.01, y, text, va="center", fontsize=_font(n))
    miou = summary.get("mIoU")
    if miou is not None and np.isfinite(miou):
        ax.axvline(miou, color="#c03030", linestyle="--", linewidth=1, label=f"mIoU {miou:.4f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(ys, _labels(summary), fontsize=_font(n))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU = TP / (TP + FP + FN), over all pixels of the data set")
    ax.set_title(f"Per-class IoU ({summary.get('pixels', 0):,} labelled pixels)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def confusion_chart(summary, matrix, path):
    """Rows = true class normalised to 1 (recall on the diagonal); a class without label pixels is grey."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    rows = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rows > 0, matrix / np.maximum(rows, 1), np.nan)
    side = min(MAX_INCHES, 3.5 + 0.45 * n)
    fig = Figure(figsize=(side + 1.2, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = _blues()
    image = ax.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    if n <= ANNOTATE_CELLS_UP_TO:
        for i in range(n):
            for j in range(n):
                if not np.isfinite(share[i, j]):
                    if j == (n - 1) // 2:  # one note per empty row, mid-row
                        ax.text(j + 0.5 * ((n - 1) % 2), i, "no label pixels", ha="center", va="center", fontsize=_font(n))
                    continue
                ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=_font(n),
                        color="white" if share[i, j] > 0.5 else "black")
    labels = _labels(summary)
    ax.set_xticks(np.arange(n), labels, rotation=45, ha="right", fontsize=_font(n))
    ax.set_yticks(np.arange(n), labels, fontsize=_font(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix, each row normalised to 1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _blues():
    from matplotlib import colormaps
    return colormaps["Blues"].with_extremes(bad="#d0d0d0")
