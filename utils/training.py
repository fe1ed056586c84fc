"""What train.py adds around `model.fit`: devices, precision, learning-rate schedules, early stopping,
pretrained weights and encoder freezing.

Everything here that changes from epoch to epoch is a pure function of the
epoch number or lives in the run's state.json, so a resumed run (even after
kill -9) continues with the same learning rate, patience counters and
frozen/unfrozen layers as if it had never stopped.
"""
import contextlib
import math
import os

import keras
import numpy as np

from utils.errors import UserError

LR_SCHEDULES = ("constant", "step", "cos", "poly", "plateau")


# === Devices: data-parallel training ===

def make_strategy(multi_gpus):
    """-> (scope context manager, number of replicas, description).

    TensorFlow: `MultiWorkerMirroredStrategy` when TF_CONFIG names a cluster,
    else `MirroredStrategy` over every visible GPU (or, with no GPU, every
    logical CPU device when more than one is configured, which is how the
    tests run it). JAX: `keras.distribution.DataParallel` over all devices.
    """
    if not multi_gpus:
        return contextlib.nullcontext(), 1, "one device"
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        if os.environ.get("TF_CONFIG"):
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            kind = "MultiWorkerMirroredStrategy (TF_CONFIG)"
        else:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            if not devices:
                devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(devices)
            kind = "MirroredStrategy over " + ", ".join(devices)
        return strategy.scope(), strategy.num_replicas_in_sync, kind
    if backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices), "keras.distribution.DataParallel over " + ", ".join(devices)
    raise UserError(f"--multi_gpus true needs the tensorflow or jax backend (KERAS_BACKEND is {backend})")


def worker_index():
    """This machine's index in a TF_CONFIG cluster (0, the chief, when there is none)."""
    import json
    try:
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    except json.JSONDecodeError:
        raise UserError("TF_CONFIG is not valid JSON") from None
    return int(task.get("index", 0)) if task.get("type", "worker") in ("worker", "chief") else -1


def synchronize_batch_norm(model):
    """Batch statistics over the global batch, not each replica's slice (SyncBN, as mmsegmentation
    trains on several GPUs): the replicated run then computes what one device would."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


# === Precision and compilation ===

def set_precision(mixed_precision):
    """float16 on GPU, bfloat16 on CPU (CPUs have no fast float16); the softmax stays float32."""
    if not mixed_precision:
        return "float32"
    has_gpu = any(d.device_type == "GPU" for d in _physical_devices())
    policy = "mixed_float16" if has_gpu else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _physical_devices():
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.config.list_physical_devices()
    return []


# === Learning-rate schedules ===

def scheduled_lr(schedule, base_lr, epoch, epochs, warmup_epochs=0, step=10, gamma=0.1, power=0.9):
    """Learning rate of 0-based `epoch` (constant, step, cos, poly; plateau's is `base_lr` here).

    Warm-up rises linearly to `base_lr` over the first `warmup_epochs`; the
    schedule then runs over the remaining epochs.
    """
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    t, span = epoch - warmup_epochs, max(1, epochs - warmup_epochs)
    if schedule == "step":
        return base_lr * gamma ** (t // step)
    if schedule == "cos":
        return base_lr * 0.5 * (1 + math.cos(math.pi * t / span))
    if schedule == "poly":
        return base_lr * (1 - t / span) ** power
    return base_lr


class LearningRateControl(keras.callbacks.Callback):
    """Sets the learning rate at each epoch start and logs it as `learning_rate`.

    `plateau` multiplies it by `gamma` after `patience` epochs without a better
    `monitor`; its counters are kept in `state` (saved in state.json) so a
    resumed run keeps them. Place before the CSV logger and the checkpoint.
    """

    def __init__(self, schedule, base_lr, epochs, warmup_epochs, step, gamma, patience, monitor, state):
        super().__init__()
        self.schedule, self.base_lr, self.epochs = schedule, base_lr, epochs
        self.warmup_epochs, self.step, self.gamma = warmup_epochs, step, gamma
        self.patience, self.monitor = patience, monitor
        self.state = state
        self.state.setdefault("lr_plateau", {"lr": base_lr, "best": None, "wait": 0})

    def lr_for(self, epoch):
        if self.schedule == "plateau" and epoch >= self.warmup_epochs:
            return self.state["lr_plateau"]["lr"]
        return scheduled_lr(self.schedule, self.base_lr, epoch, self.epochs, self.warmup_epochs, self.step,
                            self.gamma)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.lr_for(epoch))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self.schedule != "plateau" or epoch < self.warmup_epochs:
            return
        plateau, score = self.state["lr_plateau"], logs.get(self.monitor)
        if score is None or not math.isfinite(score):
            return
        if plateau["best"] is None or score > plateau["best"]:
            plateau.update(best=float(score), wait=0)
        else:
            plateau["wait"] += 1
            if plateau["wait"] >= self.patience:
                plateau.update(lr=plateau["lr"] * self.gamma, wait=0)


class EarlyStopping(keras.callbacks.Callback):
    """Stop when the best score (tracked by the checkpoint callback's state) is `patience` epochs old.

    Reads the run's state rather than keeping its own counter, so it survives a resume.
    """

    def __init__(self, patience, state):
        super().__init__()
        self.patience, self.state = patience, state

    def on_epoch_end(self, epoch, logs=None):
        best_epoch = self.state.get("best_epoch") or 0
        if epoch + 1 - best_epoch >= self.patience:
            print(f"early stopping: no better {self.state.get('monitor')} for {self.patience} epochs "
                  f"(best at epoch {best_epoch})")
            self.model.stop_training = True
            self.state["stopped_early"] = epoch + 1


# === Pretrained weights and freezing ===

def _weighted_layers(model):
    return [layer for layer in model._flatten_layers(include_self=False) if layer.weights
            and not layer._flatten_layers(include_self=False, recursive=False)]


def read_pretrained(path):
    """{layer name: [arrays]} from a `.keras` model or a Keras (2 or 3) `.h5` weights file.

    The file is checked before any loader reads it (`check_model_file`); every problem, up to damage
    inside the file, is a one-line `UserError` naming --pretrained and the file.
    """
    from utils.model_files import check_model_file, loader_errors
    kind = check_model_file(path, "--pretrained", accepted=("keras", "h5"))
    if kind == "keras":
        from utils.inference import load_keras_model
        source = load_keras_model(path, "--pretrained")
        return {layer.name: [keras.ops.convert_to_numpy(w) for w in layer.weights]
                for layer in _weighted_layers(source)}
    import h5py
    with loader_errors(path, "--pretrained", "h5py"), h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in group.attrs:
            raise UserError(f"--pretrained {path}: not a Keras layer-by-name weights file "
                            "(no layer_names); save one with model.save('x.keras') instead")
        weights = {}
        for name in group.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            names = [n.decode() if isinstance(n, bytes) else n for n in group[name].attrs["weight_names"]]
            if names:
                weights[name] = [np.asarray(group[name][n]) for n in names]
        return weights


def load_pretrained(model, path):
    """Copy weights into the layers of `model` whose name and weight shapes match; return their names.

    Prints what was loaded and what was skipped (shape mismatch, or no such layer in the file).
    """
    source = read_pretrained(path)
    loaded, mismatched, missing = [], [], []
    for layer in _weighted_layers(model):
        arrays = source.get(layer.name)
        if arrays is None:
            missing.append(layer.name)
        elif [tuple(a.shape) for a in arrays] != [tuple(w.shape) for w in layer.weights]:
            mismatched.append(f"{layer.name} {[tuple(a.shape) for a in arrays]} vs "
                              f"{[tuple(w.shape) for w in layer.weights]}")
        else:
            layer.set_weights(arrays)
            loaded.append(layer.name)
    if not loaded:
        raise UserError(f"--pretrained {path}: no layer of {model.name} matches a layer of the file by name "
                        f"and shape ({len(source)} layers in the file)")
    print(f"pretrained: loaded {len(loaded)} of {len(loaded) + len(mismatched) + len(missing)} layers "
          f"from {path}; {len(mismatched)} skipped for shape, {len(missing)} not in the file")
    for line in mismatched:
        print(f"  skipped (shape): {line}")
    return loaded


def set_frozen(model, layer_names, frozen):
    """Freeze (or unfreeze) the named layers; frozen BatchNorm layers also stop updating statistics."""
    names = set(layer_names)
    for layer in _weighted_layers(model):
        if layer.name in names:
            layer.trainable = not frozen
