"""train.py on crops (--resize_op 3) with validation at full resolution, and --max_minutes."""
import json
import os

import pytest

from conftest import assert_one_line_error, read_log, read_state, run_script, write_dataset

pytestmark = pytest.mark.slow


def train(root, dataset, save, *flags):
    return run_script("train.py", "--data_root", root, "--dataset_name", dataset, "--train_save_path", save,
                      "--model_name", "unet", "--input_height", 32, "--input_width", 32, "--n_classes", 2,
                      "--optimizer_name", "adam", "--lr", "0.01", "--workers", 1, "--tensorboard_images", 0, *flags)


# === --max_minutes ===

def test_max_minutes_stops_after_a_committed_epoch_and_resume_trains_on(tmp_path):
    write_dataset(str(tmp_path), size=(32, 32))
    save = str(tmp_path / "runs")
    result = train(str(tmp_path), "tiny", save, "--epochs", 3, "--validate", "false", "--max_minutes", "0.0001")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = os.path.join(save, "exp1", "unet")
    assert "time is up after epoch 1" in result.stdout
    assert read_state(run_dir)["epoch"] == 1 and len(read_log(run_dir)) == 1
    result = train(str(tmp_path), "tiny", save, "--resume", "auto", "--max_minutes", 0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_state(run_dir)["epoch"] == 3 and [row["epoch"] for row in read_log(run_dir)] == ["0", "1", "2"]


# === Crops, native validation, and test.py repeating it ===

def test_crop_run_validates_at_full_resolution_and_test_py_slides(tmp_path):
    """The best epoch's logged val_iou_score is the mIoU test.py computes on the same images with the best
    checkpoint (test.py's numpy confusion matrix against the callback's Keras metrics)."""
    root = str(tmp_path)
    write_dataset(root, size=(45, 70), n_train=4, n_test=2, splits=("train", "val"))
    save = str(tmp_path / "runs")
    result = train(root, "tiny", save, "--epochs", 2, "--resize_op", 3, "--crops_per_image", 2, "--stride", 20)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = os.path.join(save, "exp1", "unet")
    rows = read_log(run_dir)
    assert len(rows) == 2 and {"val_loss", "val_iou_score", "val_iou_score/class_1"} <= set(rows[0])
    with open(os.path.join(run_dir, "config.json")) as handle:
        config = json.load(handle)
    assert (config["resize_op"], config["inference_mode"], config["stride"]) == (3, "slide", 20)
    state = read_state(run_dir)
    best_row = rows[state["best_epoch"] - 1]
    out = str(tmp_path / "masks")
    result = run_script("test.py", "--weights_path", run_dir, "--test_images", os.path.join(root, "tiny", "val_image"),
                        "--mIOU", "true", "--val_annotations", os.path.join(root, "tiny", "val_label"),
                        "--output_path", out)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(out, "metrics.json")) as handle:
        scores = json.load(handle)
    assert scores["mIoU"] == pytest.approx(float(best_row["val_iou_score"]), abs=1e-5)
    import cv2
    assert cv2.imread(os.path.join(out, "val0.png"), cv2.IMREAD_GRAYSCALE).shape == (45, 70)


@pytest.mark.parametrize("flags, fragments", [
    (["--resize_op", 3, "--stride", 40], ["--stride 40", "at most the window"]),
    (["--stride", 10], ["--stride", "--resize_op 3"]),
    (["--resize_op", 3, "--crops_per_image", 0], ["--crops_per_image", "integer >= 1"]),
])
def test_bad_crop_flags(tmp_path, flags, fragments):
    write_dataset(str(tmp_path), size=(32, 32))
    result = train(str(tmp_path), "tiny", str(tmp_path / "runs"), "--epochs", 1, *flags)
    if "--crops_per_image" in flags:  # argparse's own error: one usage line and one error line
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert all(f in result.stderr for f in fragments), result.stderr
    else:
        assert_one_line_error(result, *fragments)


# === tools/benchmark_quality.py --table native ===

def test_benchmark_quality_native_rows_on_membrane(tmp_path):
    from conftest import shared_dataset
    shared_dataset("membrane")
    result = run_script("tools/benchmark_quality.py", "--table", "native", "--rows", "1,2", "--minutes", "0.0001",
                        "--size", 32, "--crops_per_image", 1, "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "native" / "results.json") as handle:
        resize_row, crop_row = json.load(handle)
    for row in (resize_row, crop_row):  # one epoch each: --max_minutes ends the run at the first epoch end
        assert row["epochs"] == 1 and 0 <= row["mIoU"] <= 1 and set(row["per_class_iou"]) == {"membrane", "cell"}
        assert "--max_minutes 0.0001" in row["train_command"] and "--validate false" in row["train_command"]
    assert "--resize_op 1" in resize_row["train_command"] and "--resize_op 3" in crop_row["train_command"]
    with open(os.path.join(tmp_path, "native", "row01", "unet", "config.json")) as handle:
        assert json.load(handle)["inference_mode"] == "slide"  # so test.py slid over the 512x512 slices
    table = (tmp_path / "native" / "table.md").read_text()
    assert "Every row trains for --max_minutes 0.0001" in table
    assert f"| `membrane unet, crops + slide (--resize_op 3)` | {crop_row['mIoU']:.4f} |" in table


def test_benchmark_quality_native_row_numbers_are_checked(tmp_path):
    result = run_script("tools/benchmark_quality.py", "--table", "native", "--rows", "4",
                        "--output_dir", str(tmp_path))
    assert_one_line_error(result, "--rows 4", "rows 1..3")
