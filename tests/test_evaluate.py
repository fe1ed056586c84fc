"""tools/evaluate.py against an independent confusion matrix, its outputs and its errors."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

sys.path.insert(0, os.path.join(ROOT, "tools"))
import evaluate  # noqa: E402

IGN = 255
N = 5


def write_masks(root, seed=0, sizes=((17, 23), (31, 12), (8, 40), (25, 25))):
    """Random predictions and labels (class 4 never labelled, some pixels ignored) -> (pred_dir, label_dir, pairs)."""
    rng = np.random.default_rng(seed)
    pred_dir, label_dir = os.path.join(root, "pred"), os.path.join(root, "label")
    os.makedirs(pred_dir)
    os.makedirs(label_dir)
    pairs = []
    for i, size in enumerate(sizes):
        label = rng.integers(0, 4, size).astype(np.uint8)
        label[rng.random(size) < 0.1] = IGN
        pred = np.where(rng.random(size) < 0.5, np.where(label == IGN, 0, label), rng.integers(0, N, size))
        pred = pred.astype(np.uint8)
        cv2.imwrite(os.path.join(label_dir, f"img{i}.png"), label)
        cv2.imwrite(os.path.join(pred_dir, f"img{i}.png"), pred)
        pairs.append((pred, label))
    return pred_dir, label_dir, pairs


def independent_scores(pairs):
    labels = np.concatenate([lab.ravel() for _, lab in pairs]).astype(float)
    preds = np.concatenate([p.ravel() for p, _ in pairs]).astype(float)
    keep = labels != IGN
    cm, _, _ = np.histogram2d(labels[keep], preds[keep], bins=N, range=[[-0.5, N - 0.5], [-0.5, N - 0.5]])
    tp = np.diag(cm)
    rows, cols = cm.sum(1), cm.sum(0)
    union = rows + cols - tp
    iou = [tp[c] / union[c] if union[c] else None for c in range(N)]
    dice = [2 * tp[c] / (rows[c] + cols[c]) if union[c] else None for c in range(N)]
    recall = [tp[c] / rows[c] if rows[c] else None for c in range(N)]
    precision = [tp[c] / cols[c] if cols[c] else None for c in range(N)]

    def mean(values):
        return float(np.mean([v for v in values if v is not None]))
    return cm, {
        "mIoU": mean(iou), "mDice": mean(dice), "mPA": mean(recall),
        "aAcc": tp.sum() / cm.sum(),
        "FWIoU": sum(rows[c] / cm.sum() * iou[c] for c in range(N) if rows[c]),
        "IoU": iou, "Dice": dice, "precision": precision, "recall": recall,
        "label_pixels": rows.tolist(), "pred_pixels": cols.tolist(),
    }


def run(pred_dir, label_dir, out, *extra):
    return evaluate.main(["--pred_dir", pred_dir, "--label_dir", label_dir, "--n_classes", str(N),
                          "--output_path", out, *extra])


def test_agrees_with_independent_confusion_matrix(tmp_path, capsys):
    pred_dir, label_dir, pairs = write_masks(str(tmp_path))
    out = str(tmp_path / "report")
    assert run(pred_dir, label_dir, out) == 0
    cm, expected = independent_scores(pairs)
    with open(os.path.join(out, "metrics.json")) as handle:
        got = json.load(handle)
    for key in ("mIoU", "mDice", "mPA", "aAcc", "FWIoU"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert got["pixels"] == int(cm.sum()) and got["images"] == 4
    for c, row in enumerate(got["per_class"]):
        for key in ("IoU", "Dice", "precision", "recall"):
            if expected[key][c] is None:
                assert row[key] is None, (key, c)
            else:
                assert row[key] == pytest.approx(expected[key][c], abs=1e-6), (key, c)
        assert row["label_pixels"] == expected["label_pixels"][c]
        assert row["pred_pixels"] == expected["pred_pixels"][c]
    assert expected["IoU"][4] is not None and expected["recall"][4] is None  # class 4: predicted, never labelled
    with open(os.path.join(out, "confusion_matrix.csv"), newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["true\\pred"] + [f"class_{i}" for i in range(N)]
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], dtype=np.int64), cm.astype(np.int64))
    printed = capsys.readouterr().out
    assert "class_4" in printed and f"mIoU={expected['mIoU']:.4f}" in printed


def test_charts_are_readable_pngs(tmp_path):
    pred_dir, label_dir, _ = write_masks(str(tmp_path))
    out = str(tmp_path / "report")
    run(pred_dir, label_dir, out)
    for name in ("iou_per_class.png", "confusion_matrix.png"):
        image = cv2.imread(os.path.join(out, name))
        assert image is not None and min(image.shape[:2]) >= 200, name
        assert image.std() > 10, name  # not a blank canvas


def test_never_overwrites_and_uses_class_names(tmp_path):
    pred_dir, label_dir, _ = write_masks(str(tmp_path))
    out = str(tmp_path / "report")
    run(pred_dir, label_dir, out)
    first = open(os.path.join(out, "metrics.json")).read()
    names = tmp_path / "names.txt"
    names.write_text("background\nroad, sign\ncar\n")
    run(pred_dir, label_dir, out, "--class_names", str(names))
    assert open(os.path.join(out, "metrics.json")).read() == first
    with open(os.path.join(out + "_2", "metrics.json")) as handle:
        got = [c["name"] for c in json.load(handle)["per_class"]]
    assert got == ["background", "road, sign", "car", "class_3", "class_4"]
    with open(os.path.join(out + "_2", "confusion_matrix.csv"), newline="") as handle:
        assert next(csv.reader(handle))[2] == "road, sign"


def test_reads_a_test_py_output_folder(tmp_path):
    """test.py's folder: masks at the top, color/, overlay/ and charts/ subfolders that are not masks."""
    from metrics.evaluation import summarize, write_charts
    pred_dir, label_dir, pairs = write_masks(str(tmp_path))
    for sub in ("color", "overlay"):
        os.makedirs(os.path.join(pred_dir, sub))
        cv2.imwrite(os.path.join(pred_dir, sub, "img0.png"), np.zeros((3, 3), np.uint8))
    cm, expected = independent_scores(pairs)
    write_charts(os.path.join(pred_dir, "charts"), summarize(cm), cm)
    out = str(tmp_path / "report")
    run(pred_dir, label_dir, out)
    with open(os.path.join(out, "metrics.json")) as handle:
        assert json.load(handle)["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-6)


@pytest.mark.parametrize("break_it,message", [
    (lambda p, lab: os.remove(os.path.join(p, "img1.png")), "labels without a prediction.*img1"),
    (lambda p, lab: cv2.imwrite(os.path.join(p, "extra.png"), np.zeros((4, 4), np.uint8)),
     "predictions without a label.*extra"),
    (lambda p, lab: cv2.imwrite(os.path.join(p, "img0.png"), np.full((17, 23), 7, np.uint8)),
     "prediction value 7 outside 0..4"),
    (lambda p, lab: cv2.imwrite(os.path.join(p, "img0.png"), np.zeros((17, 22), np.uint8)),
     "prediction size 22x17 differs"),
    (lambda p, lab: cv2.imwrite(os.path.join(lab, "img2.png"), np.full((8, 40), 9, np.uint8)),
     "img2.png: label values"),
])
def test_bad_inputs_are_user_errors(tmp_path, break_it, message):
    pred_dir, label_dir, _ = write_masks(str(tmp_path))
    break_it(pred_dir, label_dir)
    with pytest.raises(UserError, match=message):
        run(pred_dir, label_dir, str(tmp_path / "report"))


def test_bad_flags_are_user_errors(tmp_path):
    pred_dir, label_dir, _ = write_masks(str(tmp_path))
    with pytest.raises(UserError, match="--ignore_label 3 must be in 5..255"):
        run(pred_dir, label_dir, str(tmp_path / "r"), "--ignore_label", "3")
    names = tmp_path / "names.txt"
    names.write_text("\n".join("abcdef"))
    with pytest.raises(UserError, match="6 names for 5 classes"):
        run(pred_dir, label_dir, str(tmp_path / "r"), "--class_names", str(names))


def test_command_line_one_line_error_and_success(tmp_path):
    pred_dir, label_dir, _ = write_masks(str(tmp_path))
    script = os.path.join(ROOT, "tools", "evaluate.py")
    bad = subprocess.run([sys.executable, script, "--pred_dir", str(tmp_path / "nope"), "--label_dir", label_dir,
                          "--n_classes", "5"], capture_output=True, text=True, cwd=str(tmp_path))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: --pred_dir {tmp_path / 'nope'}: folder not found"]
    good = subprocess.run([sys.executable, script, "--pred_dir", pred_dir, "--label_dir", label_dir,
                           "--n_classes", "5", "--output_path", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert good.returncode == 0, good.stderr
    assert sorted(os.listdir(tmp_path / "r")) == ["confusion_matrix.csv", "confusion_matrix.png",
                                                  "iou_per_class.png", "metrics.json"]


def test_does_not_import_keras(tmp_path):
    """Scoring saved masks needs numpy only: no seconds spent importing TensorFlow."""
    pred_dir, label_dir, _ = write_masks(str(tmp_path))
    code = (f"import sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tools')!r}]; import evaluate; "
            f"evaluate.main(['--pred_dir', {pred_dir!r}, '--label_dir', {label_dir!r}, '--n_classes', '5', "
            f"'--output_path', {str(tmp_path / 'r')!r}]); print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"
