"""ENet (Paszke et al., 2016): a real-time encoder-decoder built from residual bottlenecks.

As in the paper: a 13-filter 3x3 stride-2 conv concatenated with a max-pooled
copy of the image; stage 1 (64 channels, 1/4) and stages 2-3 (128 channels,
1/8) of bottlenecks with regular, dilated (2, 4, 8, 16) and asymmetric (5x1 +
1x5) convolutions, PReLU and spatial dropout (0.01 in stage 1, 0.1 after);
downsampling bottlenecks whose shortcut is a max pooling zero-padded to the new
width; a decoder of ReLU bottlenecks whose upsampling shortcut max-unpools with
the positions of the matching encoder max pooling; a final 2x2 stride-2
transposed conv ("fullconv") to the classes.
"""
import keras
from keras import layers

from Models.common import image_input
from Models.layers import MaxUnpool2D, PadChannels

BN_MOMENTUM = 0.9


def _bn(x, name):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)


def _act(x, relu, name):
    if relu:
        return layers.ReLU(name=name)(x)
    return layers.PReLU(shared_axes=[1, 2], name=name)(x)


# === Blocks ===

def initial_block(x):
    conv = layers.Conv2D(13, 3, strides=2, padding="same", use_bias=False, name="initial_conv")(x)
    pool = layers.MaxPooling2D(2, name="initial_pool")(x)
    x = layers.Concatenate(name="initial_concat")([conv, pool])
    return _act(_bn(x, "initial_bn"), False, "initial_prelu")


def bottleneck(x, filters, name, dilation=1, asymmetric=0, downsample=False, dropout=0.1, relu=False):
    """1x1 reduce (2x2 stride 2 when downsampling) -> conv -> 1x1 expand, plus the shortcut.

    The middle conv is 3x3 (dilated by `dilation`) or, with `asymmetric=k`, kx1
    then 1xk. A downsampling block's shortcut is a 2x2 max pooling padded with
    zero channels up to `filters`; the pooled tensor's input is returned as well
    so the decoder can unpool with the same positions.
    """
    internal = filters // 4
    reduce_size = 2 if downsample else 1
    y = layers.Conv2D(internal, reduce_size, strides=reduce_size, use_bias=False, name=name + "_reduce")(x)
    y = _act(_bn(y, name + "_reduce_bn"), relu, name + "_reduce_act")
    if asymmetric:
        y = layers.Conv2D(internal, (asymmetric, 1), padding="same", use_bias=False, name=name + "_conv_a")(y)
        y = layers.Conv2D(internal, (1, asymmetric), padding="same", use_bias=False, name=name + "_conv_b")(y)
    else:
        y = layers.Conv2D(internal, 3, padding="same", dilation_rate=dilation, use_bias=False,
                          name=name + "_conv")(y)
    y = _act(_bn(y, name + "_conv_bn"), relu, name + "_conv_act")
    y = layers.Conv2D(filters, 1, use_bias=False, name=name + "_expand")(y)
    y = _bn(y, name + "_expand_bn")
    y = layers.SpatialDropout2D(dropout, name=name + "_dropout")(y)
    shortcut = x
    if downsample:
        shortcut = layers.MaxPooling2D(2, name=name + "_pool")(x)
        if filters > x.shape[-1]:
            shortcut = PadChannels(filters, name=name + "_pad")(shortcut)
    x_out = layers.Add(name=name + "_add")([y, shortcut])
    return _act(x_out, relu, name + "_out_act")


def upsampling_bottleneck(x, pooled_from, filters, name, dropout=0.1):
    """Decoder block doubling the resolution: the shortcut is 1x1 conv + BN, then max unpooling
    at the positions where the encoder's pooling of `pooled_from` took its maxima."""
    internal = filters // 4
    shortcut = layers.Conv2D(filters, 1, use_bias=False, name=name + "_shortcut")(x)
    shortcut = _bn(shortcut, name + "_shortcut_bn")
    shortcut = MaxUnpool2D(name=name + "_unpool")([shortcut, pooled_from])
    y = layers.Conv2D(internal, 1, use_bias=False, name=name + "_reduce")(x)
    y = layers.ReLU(name=name + "_reduce_act")(_bn(y, name + "_reduce_bn"))
    y = layers.Conv2DTranspose(internal, 3, strides=2, padding="same", use_bias=False, name=name + "_upconv")(y)
    y = layers.ReLU(name=name + "_conv_act")(_bn(y, name + "_conv_bn"))
    y = layers.Conv2D(filters, 1, use_bias=False, name=name + "_expand")(y)
    y = _bn(y, name + "_expand_bn")
    y = layers.SpatialDropout2D(dropout, name=name + "_dropout")(y)
    return layers.ReLU(name=name + "_out_act")(layers.Add(name=name + "_add")([y, shortcut]))


# === Model ===

# Stages 2 and 3 share this pattern (stage 2 starts with a downsampling block instead of 3.0).
STAGE23 = ({}, {"dilation": 2}, {"asymmetric": 5}, {"dilation": 4}, {}, {"dilation": 8}, {"asymmetric": 5},
           {"dilation": 16})


def enet(n_classes, input_height, input_width):
    """ENet. Input size: height and width multiples of 8 (three 2x downsamplings).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    x = initial_block(inputs)
    stage1_input = x
    x = bottleneck(x, 64, "bottleneck1_0", downsample=True, dropout=0.01)
    for i in range(1, 5):
        x = bottleneck(x, 64, f"bottleneck1_{i}", dropout=0.01)
    stage2_input = x
    x = bottleneck(x, 128, "bottleneck2_0", downsample=True)
    for stage in (2, 3):
        for i, options in enumerate(STAGE23, start=1):
            x = bottleneck(x, 128, f"bottleneck{stage}_{i}", **options)
    # The shortcut of 4.0 unpools 64 channels at the positions of 2.0's pooling (of 64 channels).
    x = upsampling_bottleneck(x, stage2_input, 64, "bottleneck4_0")
    x = bottleneck(x, 64, "bottleneck4_1", relu=True)
    x = bottleneck(x, 64, "bottleneck4_2", relu=True)
    x = upsampling_bottleneck(x, stage1_input, 16, "bottleneck5_0")
    x = bottleneck(x, 16, "bottleneck5_1", relu=True)
    x = layers.Conv2DTranspose(n_classes, 2, strides=2, padding="same", name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name="enet")
