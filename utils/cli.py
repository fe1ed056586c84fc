"""Argument parsing helpers shared by the scripts (keras-free: `--help` and flag errors answer at once)."""
import argparse
import os

from utils.errors import UserError


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


# === Sliding-window settings (train.py --resize_op 3) ===

def crops_count(text):
    """--crops_per_image: 'auto' or an integer >= 1."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 1, got {value}")
    return value


def slide_stride(args):
    """The sliding-window stride of a --resize_op 3 run (one value for both axes), else None."""
    if args.resize_op != 3:
        return None
    window = min(args.input_height, args.input_width)
    stride = args.stride if args.stride is not None else max(1, round(2 * window / 3))
    if stride > window:
        raise UserError(f"--stride {stride}: must be at most the window (--input_height/--input_width "
                        f"{args.input_height}x{args.input_width}), or the windows leave gaps")
    return stride
