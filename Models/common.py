"""Pieces every model shares: conv + batch norm (+ activation), batch norm alone, input and output head.

Layer names are part of each model's contract (weights load by name, tests pin
them), so the helpers take the exact names or suffixes the caller wants.
"""
import keras
from keras import layers

# PyTorch's 0.1 (Keras' default is 0.99): moving statistics settle within an epoch or two when
# training from scratch on small data sets.
BN_MOMENTUM = 0.9

# Activation name -> layer factory (name -> layer). The layer classes differ on purpose: they are
# those of the reference implementations whose layer lists the models reproduce.
ACTIVATIONS = {
    "relu": lambda name: layers.Activation("relu", name=name),
    "relu6": lambda name: layers.ReLU(6.0, name=name),
    "leaky_relu": lambda name: layers.LeakyReLU(0.1, name=name),
}


# === Blocks ===

def batch_norm(name, epsilon=1e-3):
    """A BatchNormalization layer with the toolkit's momentum (call it on a tensor)."""
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=epsilon, name=name)


def conv_bn(x, filters, kernel_size=3, *, name=None, strides=1, dilation_rate=1, padding="same",
            activation="relu", epsilon=1e-3, use_bias=False, kernel_initializer="he_normal",
            names=("{}_conv", "{}_bn", "{}_relu"), conv=layers.Conv2D):
    """Convolution -> batch norm -> activation.

    activation: None (linear: conv + BN only), a key of ACTIVATIONS ("relu",
    "relu6", "leaky_relu") or a factory name -> layer (e.g. ENet's PReLU).
    names: the conv, BN and activation layer names as format strings of `name`
    (`("{}", "{}_bn", "{}_act")` names the conv `name` itself, as
    keras.applications does; `("{}", "bn_{}", ...)` puts a prefix). With
    name=None Keras names the layers.
    conv: the convolution class: Conv2D (default), Conv2DTranspose, a Conv2D
    subclass, or DepthwiseConv2D (which takes no `filters`: pass None).
    """
    conv_name, bn_name, act_name = (None if name is None else pattern.format(name) for pattern in names)
    options = dict(strides=strides, padding=padding, dilation_rate=dilation_rate, use_bias=use_bias, name=conv_name)
    if conv is layers.DepthwiseConv2D:
        x = conv(kernel_size, depthwise_initializer=kernel_initializer, **options)(x)
    else:
        x = conv(filters, kernel_size, kernel_initializer=kernel_initializer, **options)(x)
    x = batch_norm(bn_name, epsilon)(x)
    if activation is None:
        return x
    factory = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    return factory(act_name)(x)


# === Input and output ===

def segmentation_head(x, n_classes, name="logits"):
    """1x1 conv to class scores, then a float32 softmax (float32 also under mixed precision)."""
    x = layers.Conv2D(n_classes, 1, padding="same", name=name)(x)
    return layers.Activation("softmax", dtype="float32", name="softmax")(x)


def image_input(input_height, input_width, name="image"):
    return keras.Input(shape=(input_height, input_width, 3), name=name)

