"""Pieces every model shares: the input-size rule, conv blocks and the output head."""
from dataclasses import dataclass

import keras
from keras import layers

from utils.errors import UserError


class InputSizeError(UserError):
    """An --input_height/--input_width that the model's architecture cannot take."""


# === Input-size rules ===

@dataclass(frozen=True)
class SizeRule:
    """Height and width must each be a multiple of `multiple` and at least `minimum`."""
    multiple: int
    minimum: int = 0

    @property
    def smallest(self):
        return max(self.multiple, -(-self.minimum // self.multiple) * self.multiple)

    def nearest(self, value):
        """The legal sizes just below and above `value` (equal when `value` is legal)."""
        below = max(self.smallest, value // self.multiple * self.multiple)
        above = max(self.smallest, -(-value // self.multiple) * self.multiple)
        return below, above

    def describe(self):
        text = f"height and width multiples of {self.multiple}"
        return text + (f", at least {self.smallest}" if self.smallest > self.multiple else "")

    def check(self, model_name, height, width):
        problems = []
        for flag, value in (("--input_height", height), ("--input_width", width)):
            if value < self.smallest or value % self.multiple:
                below, above = self.nearest(value)
                nearest = f"{below}" if below == above else f"{below} or {above}"
                problems.append(f"{flag} {value} (nearest legal: {nearest})")
        if problems:
            raise InputSizeError(f"{model_name} needs {self.describe()}: " + "; ".join(problems))


def size_rule(multiple, minimum=0):
    """Decorator recording a builder's size rule as `builder.size_rule` and checking it first."""
    rule = SizeRule(multiple, minimum)

    def wrap(builder):
        def checked(n_classes, input_height, input_width, **options):
            rule.check(checked.model_name, input_height, input_width)
            return builder(n_classes, input_height, input_width, **options)
        checked.size_rule = rule
        checked.model_name = builder.__name__
        checked.__name__ = builder.__name__
        checked.__doc__ = builder.__doc__
        checked.__wrapped__ = builder
        return checked
    return wrap


# === Blocks ===

def conv_bn_relu(x, filters, kernel_size=3, strides=1, dilation_rate=1, name=None):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", dilation_rate=dilation_rate,
                      use_bias=False, kernel_initializer="he_normal",
                      name=None if name is None else name + "_conv")(x)
    # momentum 0.9 (PyTorch's 0.1): moving statistics settle within an epoch or two on small data sets
    x = layers.BatchNormalization(momentum=0.9, name=None if name is None else name + "_bn")(x)
    return layers.Activation("relu", name=None if name is None else name + "_relu")(x)


def segmentation_head(x, n_classes, name="logits"):
    """1x1 conv to class scores, then a float32 softmax (float32 also under mixed precision)."""
    x = layers.Conv2D(n_classes, 1, padding="same", name=name)(x)
    return layers.Activation("softmax", dtype="float32", name="softmax")(x)


def image_input(input_height, input_width, name="image"):
    return keras.Input(shape=(input_height, input_width, 3), name=name)
