"""train.py -> test.py end to end on tiny data, resume, and one-line errors for bad input."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, read_log, read_state, run_script, write_dataset

run = run_script

pytestmark = pytest.mark.slow


def train_args(root, save, *extra):
    return ["--data_root", root, "--dataset_name", "tiny", "--input_height", 32, "--input_width", 32,
            "--train_save_path", save, "--train_batch_size", 2, "--optimizer_name", "adam", *extra]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_dataset(root, n_train=4, n_test=2)
    save = str(tmp_path_factory.mktemp("weights"))
    result = run("train.py", *train_args(root, save, "--epochs", 2))
    assert result.returncode == 0, result.stdout + result.stderr
    return root, save, os.path.join(save, "exp1", "unet"), result.stdout


def test_train_writes_run_folder(trained_run):
    _, _, run_dir, stdout = trained_run
    state = json.load(open(os.path.join(run_dir, "state.json")))
    assert state["epoch"] == 2 and state["monitor"] == "val_iou_score"
    best = state["best_checkpoint"]
    assert best.startswith("unet.0") and best.endswith(f"-{state['best_score']:.6f}.keras")
    assert os.path.isfile(os.path.join(run_dir, best))
    assert os.path.isfile(os.path.join(run_dir, "resume-epoch002.keras"))
    assert not os.path.exists(os.path.join(run_dir, "resume-epoch001.keras"))  # superseded, removed
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["model_name"] == "unet" and config["input_height"] == 32 and config["n_classes"] == 2
    assert [row["epoch"] for row in read_log(run_dir)] == ["0", "1"]
    assert {"val_iou_score", "val_loss", "iou_score", "accuracy"} <= set(read_log(run_dir)[0])
    assert os.path.isdir(os.path.join(run_dir, "log"))
    assert "validating on the test split" in stdout


def test_class_weights_auto_are_median_frequency_of_the_training_labels(trained_run, tmp_path):
    root, _, _, _ = trained_run
    label_dir = os.path.join(root, "tiny", "train_label")
    counts = sum(np.bincount(cv2.imread(os.path.join(label_dir, name), cv2.IMREAD_UNCHANGED).ravel(), minlength=2)
                 for name in os.listdir(label_dir))
    freq = counts / counts.sum()
    expected = np.median(freq) / freq  # two classes: the median is their mean
    save = str(tmp_path / "w")
    result = run("train.py", *train_args(root, save, "--epochs", 1, "--loss", "weighted_ce", "--class_weights", "auto"))
    assert result.returncode == 0, result.stderr
    assert "class weights: " + ", ".join(f"{w:.3f}" for w in expected) in result.stdout
    config = json.load(open(os.path.join(save, "exp1", "unet", "config.json")))
    np.testing.assert_allclose(config["loss_options"]["class_weights"], expected, rtol=1e-6)


def test_rerun_without_resume_refuses_to_overwrite(trained_run):
    root, save, run_dir, _ = trained_run
    assert_one_line_error(run("train.py", *train_args(root, save, "--epochs", 2)), "already holds a run",
                          "--resume auto")


def test_test_py_writes_masks_at_original_size_and_metrics(trained_run, tmp_path):
    root, _, run_dir, _ = trained_run
    out = tmp_path / "out"
    result = run("test.py", "--weights_path", run_dir, "--mIOU", "true", "--output_path", out)
    assert result.returncode == 0, result.stderr
    masks = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert masks == ["test0.png", "test1.png"]
    mask = cv2.imread(str(out / "test0.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 1}
    assert os.path.isfile(out / "color" / "test0.png") and os.path.isfile(out / "overlay" / "test0.jpg")
    metrics = json.load(open(out / "metrics.json"))
    assert {"mIoU", "mPA", "aAcc", "FWIoU", "mDice", "per_class"} <= set(metrics)
    assert [c["name"] for c in metrics["per_class"]] == ["class_0", "class_1"]
    assert metrics["pixels"] == 2 * 40 * 48
    assert "test mIoU" in result.stdout
    # TensorFlow's absl/CUDA start-up notes are not shown on a machine without a GPU.
    for noise in ("cuInit", "absl::InitializeLog", "oneDNN custom operations", "cudart_stub"):
        assert noise not in result.stderr, result.stderr
    # A second run never overwrites the first one's outputs.
    again = run("test.py", "--weights_path", run_dir, "--output_path", out)
    assert again.returncode == 0 and os.path.isfile(str(out) + "_2/test0.png")


def test_resume_continues_epoch_count_and_log(trained_run, tmp_path):
    root, save, run_dir, _ = trained_run
    result = run("train.py", *train_args(root, save, "--epochs", 3, "--resume", "auto"))
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stdout and "Epoch 3/3" in result.stdout and "Epoch 1/3" not in result.stdout
    assert [row["epoch"] for row in read_log(run_dir)] == ["0", "1", "2"]
    assert json.load(open(os.path.join(run_dir, "state.json")))["epoch"] == 3
    done = run("train.py", *train_args(root, save, "--epochs", 3, "--resume", "auto"))
    assert done.returncode == 0 and "already done" in done.stdout


def copy_run(run_dir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    return copy


def test_resume_takes_the_run_folder_or_its_resume_checkpoint_only(trained_run, tmp_path):
    """Before: --resume BEST.keras loaded that file but took the epoch count and log trimming from
    state.json, so the run silently jumped ahead (or stopped as "already done")."""
    root, save, run_dir, _ = trained_run
    run_dir = copy_run(run_dir, tmp_path)
    state = read_state(run_dir)
    best = os.path.join(run_dir, state["best_checkpoint"])
    if state["best_checkpoint"] == state["resume_checkpoint"]:  # not so after 2 epochs, but be sure
        best = os.path.join(str(tmp_path), "copy.keras")
        shutil.copyfile(os.path.join(run_dir, state["resume_checkpoint"]), best)
    assert_one_line_error(run("train.py", *train_args(root, save, "--epochs", 4, "--resume", best)),
                          "only the run folder or its resume checkpoint", f"--pretrained {best}")
    resume_file = os.path.join(run_dir, state["resume_checkpoint"])
    result = run("train.py", *train_args(root, save, "--epochs", state["epoch"] + 1, "--resume", resume_file))
    assert result.returncode == 0, result.stderr
    assert read_state(run_dir)["epoch"] == state["epoch"] + 1
    assert len(read_log(run_dir)) == state["epoch"] + 1


def test_an_early_stopped_run_stays_stopped_on_resume_until_its_flags_change(trained_run, tmp_path):
    """Before: `stopped_early` never reached state.json, and a resumed early-stopped run trained again."""
    root, save, run_dir, _ = trained_run
    run_dir = copy_run(run_dir, tmp_path)
    state = read_state(run_dir)
    done = state["epoch"]
    state["stopped_early"] = {"epoch": done, "patience": 1, "epochs": done + 2}
    with open(os.path.join(run_dir, "state.json"), "w") as handle:
        json.dump(state, handle)
    same = run("train.py", "--resume", run_dir, "--epochs", done + 2, "--early_stopping", 1)
    assert same.returncode == 0, same.stderr
    assert f"stopped early at epoch {done}" in same.stdout and "Epoch" not in same.stdout
    assert len(read_log(run_dir)) == done
    longer = run("train.py", "--resume", run_dir, "--epochs", done + 1, "--early_stopping", 1)
    assert longer.returncode == 0, longer.stderr
    assert f"Epoch {done + 1}/{done + 1}" in longer.stdout
    assert read_state(run_dir)["epoch"] == done + 1 and "stopped_early" not in read_state(run_dir)


@pytest.mark.parametrize("content, fragment", [
    ("[]", "must be a JSON object"),
    ('{"epoch": "two"}', "not a train.py run state"),
    ("{not json", "not valid JSON"),
])
def test_resume_with_an_unreadable_state_json_is_one_line(trained_run, tmp_path, content, fragment):
    _, _, run_dir, _ = trained_run
    run_dir = copy_run(run_dir, tmp_path)
    with open(os.path.join(run_dir, "state.json"), "w") as handle:
        handle.write(content)
    assert_one_line_error(run("train.py", "--resume", run_dir), "state.json", fragment)


def test_resume_with_a_truncated_checkpoint_is_one_line(trained_run, tmp_path):
    _, _, run_dir, _ = trained_run
    run_dir = copy_run(run_dir, tmp_path)
    path = os.path.join(run_dir, read_state(run_dir)["resume_checkpoint"])
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[:len(data) // 2])
    assert_one_line_error(run("train.py", "--resume", run_dir), "--resume", os.path.basename(path))


@pytest.mark.parametrize("args, fragments", [
    (["--model_name", "nope"], ["--model_name 'nope' is unknown", "unet"]),
    (["--input_height", 40], ["unet needs height and width multiples of 16", "--input_height 40", "32 or 48"]),
    (["--model_name", "deeplab_v3+", "--input_height", 40],
     ["deeplab_v3+ needs height and width multiples of 16", "--input_height 40 (nearest legal: 32 or 48)"]),
    (["--model_name", "unet", "--backbone", "resnet50"], ["--backbone is not an option of --model_name unet"]),
    (["--loss", "nope"], ["--loss 'nope' is unknown", "ce"]),
    (["--optimizer_name", "nope"], ["--optimizer_name 'nope' is unknown", "adadelta"]),
    (["--dataset_name", "missing"], ["missing: data set folder not found"]),
    (["--ignore_label", 1], ["--ignore_label 1 must be in 2..255"]),
])
def test_train_bad_flags_give_one_line_errors(tmp_path, args, fragments):
    root = str(tmp_path)
    write_dataset(root, n_train=2, n_test=1)
    base = train_args(root, str(tmp_path / "w"), "--epochs", 1)
    for i in range(0, len(args), 2):  # later flags override earlier ones in argparse
        base += [args[i], args[i + 1]]
    assert_one_line_error(run("train.py", *base), *fragments)


def test_train_bad_data_gives_one_line_errors(tmp_path):
    root = str(tmp_path)
    base = write_dataset(root, n_train=2, n_test=1)
    # A 0/255 mask set under the default --ignore_label 255 would silently ignore every object pixel.
    for name in ("train0.png", "train1.png"):
        path = os.path.join(base, "train_label", name)
        cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_UNCHANGED) * 255)
    assert_one_line_error(run("train.py", *train_args(root, str(tmp_path / "w"))), "0/255 mask set", "train0.png")
    cv2.imwrite(os.path.join(base, "train_label", "train1.png"), np.full((40, 48), 7, np.uint8))
    assert_one_line_error(run("train.py", *train_args(root, str(tmp_path / "w"))), "train1.png", "[7]",
                          "outside 0..1")
    cv2.imwrite(os.path.join(base, "train_label", "train0.png"), np.zeros((40, 48), np.uint8))
    os.remove(os.path.join(base, "train_label", "train1.png"))
    assert_one_line_error(run("train.py", *train_args(root, str(tmp_path / "w"))), "train1.png: no label")


def test_test_py_bad_input_gives_one_line_errors(trained_run, tmp_path):
    _, _, run_dir, _ = trained_run
    assert_one_line_error(run("test.py", "--weights_path", tmp_path / "nothing"), "no such file")
    assert_one_line_error(run("test.py", "--weights_path", run_dir, "--input_height", 64,
                              "--output_path", tmp_path / "o"), "takes 32x32 inputs")
    assert_one_line_error(run("test.py", "--weights_path", run_dir, "--test_images", tmp_path / "none",
                              "--output_path", tmp_path / "o2"), "folder not found")
    names = tmp_path / "names.txt"
    names.write_text("background\npart\nextra\n")
    assert_one_line_error(run("test.py", "--weights_path", run_dir, "--class_names", names,
                              "--output_path", tmp_path / "o3"), "3 names for 2 classes")


def test_test_py_class_names_file(trained_run, tmp_path):
    _, _, run_dir, _ = trained_run
    names = tmp_path / "names.txt"
    names.write_text("background\npart\n")
    result = run("test.py", "--weights_path", run_dir, "--mIOU", "true", "--class_names", names,
                 "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(tmp_path / "out" / "metrics.json"))
    assert [c["name"] for c in metrics["per_class"]] == ["background", "part"]
