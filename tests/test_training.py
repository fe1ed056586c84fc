"""Training that scales and survives: kill -9 and resume, two-device data parallelism, schedules,
early stopping, pretrained weights with frozen layers, mixed precision."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_one_line_error, read_log, read_state, run_script as run, write_dataset

pytestmark = pytest.mark.slow


def tiny_args(root, save, *extra, size=32):
    return ["--data_root", root, "--dataset_name", "tiny", "--input_height", size, "--input_width", size,
            "--train_save_path", save, "--tensorboard_images", 2, *extra]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    write_dataset(root, n_train=8, n_test=4)
    return root


# === Crash-safe resume ===

def test_sigkill_after_second_epoch_then_resume(data_root, tmp_path):
    save = str(tmp_path / "w")
    run_dir = os.path.join(save, "exp1", "unet")
    command = [sys.executable, os.path.join(ROOT, "train.py"),
               *map(str, tiny_args(data_root, save, "--epochs", 5, "--train_batch_size", 2))]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and process.poll() is None:
            if os.path.isfile(os.path.join(run_dir, "state.json")) and read_state(run_dir)["epoch"] >= 2:
                break
            time.sleep(0.02)
        assert process.poll() is None, "training ended before it could be killed: " + process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed_at = read_state(run_dir)["epoch"]
    assert 2 <= killed_at < 5

    result = run("train.py", *tiny_args(data_root, save, "--epochs", 5, "--train_batch_size", 2, "--resume", "auto"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"after epoch {killed_at}" in result.stdout
    state = read_state(run_dir)
    assert state["epoch"] == 5
    assert [int(row["epoch"]) for row in read_log(run_dir)] == [0, 1, 2, 3, 4]
    assert not [name for name in os.listdir(run_dir) if name.startswith(".tmp-")]
    from utils.inference import load_keras_model
    best = load_keras_model(os.path.join(run_dir, state["best_checkpoint"]))
    assert best.output_shape == (None, 32, 32, 2)


# === Two logical devices ===

TWO_DEVICES = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {root!r})
import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_two_logical_devices_match_one_device(data_root, tmp_path):
    """Per-replica batch 2 on two devices (global batch 4) computes what batch 4 computes on one device.

    One epoch (two optimizer steps) is compared: the replicas' gradient sum rounds differently from one
    device's batch mean (~1e-7), and training on 8 tiny images amplifies that to ~1e-3 within a few
    more epochs, for two single-device runs with different batch splits alike.
    """
    import numpy as np

    from utils.inference import load_keras_model
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    common = ["--epochs", 1, "--seed", 3, "--optimizer_name", "sgd"]
    single = run("train.py", *tiny_args(data_root, str(tmp_path / "one"), *common, "--train_batch_size", 4,
                                        "--val_batch_size", 4))
    assert single.returncode == 0, single.stdout + single.stderr
    script = TWO_DEVICES.format(root=ROOT)
    double = subprocess.run([sys.executable, "-c", script,
                             *map(str, tiny_args(data_root, str(tmp_path / "two"), *common, "--multi_gpus", "true",
                                                 "--train_batch_size", 2, "--val_batch_size", 2))],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert double.returncode == 0, double.stdout + double.stderr
    assert "2 replica(s) x batch 2 = global batch 4" in double.stdout
    runs = [str(tmp_path / name / "exp1" / "unet") for name in ("one", "two")]
    (row_one,), (row_two,) = read_log(runs[0]), read_log(runs[1])
    for key in ("loss", "accuracy", "iou_score", "val_loss", "val_accuracy", "val_iou_score"):
        assert math.isclose(float(row_one[key]), float(row_two[key]), rel_tol=1e-4), (key, row_one[key], row_two[key])
    one, two = (load_keras_model(os.path.join(r, "resume-epoch001.keras")) for r in runs)
    worst = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(one.weights, two.weights))
    assert worst < 1e-5


# === Schedules, early stopping ===

def test_lr_logged_per_epoch_and_curves_written(data_root, tmp_path):
    save = str(tmp_path / "w")
    result = run("train.py", *tiny_args(data_root, save, "--epochs", 3, "--lr", 0.01, "--lr_schedule", "step",
                                        "--lr_step", 1, "--lr_gamma", 0.5))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = read_log(os.path.join(save, "exp1", "unet"))
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx([0.01, 0.005, 0.0025])
    assert os.path.isfile(os.path.join(save, "exp1", "unet", "curves.png"))
    assert os.listdir(os.path.join(save, "exp1", "unet", "log", "validation_images"))


# === Pretrained weights and freezing ===

def test_pretrained_with_frozen_epochs(data_root, tmp_path):
    source = str(tmp_path / "source")
    assert run("train.py", *tiny_args(data_root, source, "--epochs", 1)).returncode == 0
    source_run = os.path.join(source, "exp1", "unet")
    checkpoint = os.path.join(source_run, read_state(source_run)["best_checkpoint"])
    # 3 classes: every layer but the classifier loads; the encoder stays frozen for 1 of 2 epochs.
    save = str(tmp_path / "tuned")
    result = run("train.py", *tiny_args(data_root, save, "--epochs", 2, "--n_classes", 3, "--pretrained", checkpoint,
                                        "--freeze_epochs", 1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped for shape" in result.stdout and "skipped (shape): logits" in result.stdout
    assert "pretrained layers frozen" in result.stdout and "epoch 2 on: all layers trainable" in result.stdout

    import numpy as np

    from utils.inference import load_keras_model
    tuned_run = os.path.join(save, "exp1", "unet")
    original, resumed = load_keras_model(checkpoint), load_keras_model(os.path.join(tuned_run, "resume-epoch002.keras"))
    kernel = lambda model: np.asarray(model.get_layer("logits").weights[0]).shape  # noqa: E731
    assert kernel(resumed)[-1] == 3 and kernel(original)[-1] == 2
    assert all(layer.trainable for layer in resumed.layers)
    with open(os.path.join(tuned_run, "config.json")) as handle:
        assert len(json.load(handle)["frozen_layers"]) > 10


def test_bad_training_flags_give_one_line_errors(data_root, tmp_path):
    base = tiny_args(data_root, str(tmp_path / "w"), "--epochs", 2)
    assert_one_line_error(run("train.py", *base, "--lr_schedule", "linear"), "--lr_schedule", "plateau")
    assert_one_line_error(run("train.py", *base, "--freeze_epochs", 1), "--pretrained")
    assert_one_line_error(run("train.py", *base, "--warmup_epochs", 2), "--warmup_epochs")
    assert_one_line_error(run("train.py", *base, "--pretrained", str(tmp_path / "nope.keras")), "nope.keras")


def test_mixed_precision_trains_with_float32_outputs(data_root, tmp_path):
    save = str(tmp_path / "w")
    result = run("train.py", *tiny_args(data_root, save, "--epochs", 1, "--mixed_precision", "true"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "precision mixed_bfloat16" in result.stdout
    run_dir = os.path.join(save, "exp1", "unet")
    assert math.isfinite(float(read_log(run_dir)[0]["loss"]))
    from utils.inference import load_keras_model
    model = load_keras_model(os.path.join(run_dir, read_state(run_dir)["best_checkpoint"]))
    assert model.outputs[0].dtype == "float32"


# === Other backends ===

def test_one_epoch_trains_saves_and_predicts_under_jax(data_root, tmp_path):
    pytest.importorskip("jax")
    jax = {"KERAS_BACKEND": "jax"}
    save = str(tmp_path / "w")
    result = run("train.py", *tiny_args(data_root, save, "--epochs", 1), env=jax)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = os.path.join(save, "exp1", "unet")
    with open(os.path.join(run_dir, "config.json")) as handle:
        assert json.load(handle)["backend"] == "jax"
    assert math.isfinite(float(read_log(run_dir)[0]["loss"]))
    result = run("test.py", "--weights_path", run_dir, "--output_path", tmp_path / "masks", env=jax)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len([n for n in os.listdir(tmp_path / "masks") if n.endswith(".png")]) == 4


def test_curves_tolerate_na_cells(tmp_path):
    """CSVLogger writes 'NA' where an epoch lacks a column (e.g. no validation)."""
    from utils.monitoring import write_curves
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,val_loss\n0,0.5,NA\n1,0.25,0.3\n")
    assert write_curves(str(log), str(tmp_path / "curves.png")) == str(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_jit_compile_and_early_stopping_flags_train(data_root, tmp_path):
    save = str(tmp_path / "w")
    result = run("train.py", *tiny_args(data_root, save, "--epochs", 2, "--jit_compile", "true",
                                        "--early_stopping", 5))
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(save, "exp1", "unet", "config.json")) as handle:
        config = json.load(handle)
    assert config["jit_compile"] is True and config["early_stopping"] == 5
    assert len(read_log(os.path.join(save, "exp1", "unet"))) == 2
