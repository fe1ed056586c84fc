"""What train.py adds around `model.fit`: devices, precision, pretrained weights and encoder freezing.

Schedules are in utils/schedules.py and the per-epoch commit (checkpoints,
early stopping, state.json) in utils/callbacks.py.
"""
import keras
import numpy as np

from utils.errors import UserError

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


# === Pretrained weights and freezing ===

def weighted_layers(model):
    """The layers that own weights (containers left out: their sub-layers are listed instead)."""
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
        return layer_weights(load_keras_model(path, "--pretrained"))
    with loader_errors(path, "--pretrained", "h5py"):
        weights = h5_layer_weights(path)
    if weights is None:
        raise UserError(f"--pretrained {path}: not a Keras layer-by-name weights file "
                        "(no layer_names); save one with model.save('x.keras') instead")
    return weights


def layer_weights(model):
    """{layer name: [arrays]} of a model's weighted layers."""
    return {layer.name: [keras.ops.convert_to_numpy(w) for w in layer.weights] for layer in weighted_layers(model)}


def h5_layer_weights(path):
    """{layer name: [arrays]} of a Keras 2-style `.h5` file (weights stored by layer name, as the
    keras.applications ImageNet files are), or None for a file of another layout."""
    import h5py
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in group.attrs:
            return None
        text = (lambda n: n.decode() if isinstance(n, bytes) else n)
        weights = {}
        for name in map(text, group.attrs["layer_names"]):
            names = [text(n) for n in group[name].attrs["weight_names"]]
            if names:
                weights[name] = [np.asarray(group[name][n]) for n in names]
        return weights


def load_pretrained(model, path):
    """Copy weights into the layers of `model` whose name and weight shapes match; return their names.

    Prints what was loaded and what was skipped (shape mismatch, or no such layer in the file).
    """
    source = read_pretrained(path)
    loaded, mismatched, missing = [], [], []
    for layer in weighted_layers(model):
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
    for layer in weighted_layers(model):
        if layer.name in names:
            layer.trainable = not frozen


# === Time budget ===

class TimeLimit(keras.callbacks.Callback):
    """`train.py --max_minutes`: stop at the first epoch end after `seconds` of training.

    It stops only at an epoch end, after RunCommit (earlier in the list) has committed that epoch,
    so the run is complete up to there and `--resume` trains on.
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = float(seconds)
        self.start = None

    def on_train_begin(self, logs=None):
        import time
        self.start = self.start if self.start is not None else time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        import time
        if time.monotonic() - self.start >= self.seconds:
            print(f"--max_minutes {self.seconds / 60:g}: time is up after epoch {epoch + 1}; "
                  "--resume continues the run")
            self.model.stop_training = True
