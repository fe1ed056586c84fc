"""Optimizers by name, each with a default learning rate that trains a segmentation net.

Keras-free until `get_optimizer`: names are checked with the other flags, before TensorFlow loads.
"""
from utils.errors import UserError

# name -> (keras.optimizers class name, default learning rate, extra arguments).
# Adadelta's 1.0 is the original's (Keras 2 Adadelta default); Keras 3's 0.001 barely moves.
OPTIMIZERS = {
    "sgd": ("SGD", 0.01, {"momentum": 0.9}),
    "adam": ("Adam", 1e-3, {}),
    "adamw": ("AdamW", 1e-3, {"weight_decay": 1e-4}),
    "rmsprop": ("RMSprop", 1e-3, {}),
    "adadelta": ("Adadelta", 1.0, {}),
    "nadam": ("Nadam", 1e-3, {}),
}


def default_lr(name):
    return check_name(name)[1]


def check_name(name):
    if name not in OPTIMIZERS:
        raise UserError(f"--optimizer_name {name!r} is unknown; valid names: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def get_optimizer(name, lr=None):
    import keras
    class_name, lr_default, extra = check_name(name)
    return getattr(keras.optimizers, class_name)(learning_rate=lr_default if lr is None else lr, **extra)
