"""Argument parsing helpers shared by the scripts (keras-free: `--help` and flag errors answer at once)."""
import argparse
import os


def quiet_tensorflow_env():
    """TensorFlow's C++ INFO/WARNING lines off unless the user chose a level (utils/backend.py drops the rest)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


quiet_tensorflow_env()  # scripts import this module before anything that may load keras

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def str2bool(value):
    """Parse true/false/1/0/yes/no (any case). `bool('False')` is True, hence this."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/1/0, got {value!r}")


def positive_int(value):
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number
