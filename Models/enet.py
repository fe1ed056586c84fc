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

from Models.common import batch_norm, conv_bn, image_input
from Models.layers import MaxUnpool2D, PadChannels

# Bias-free convs (BN follows), Keras' default initializer; `<block>_reduce`, `_reduce_bn`, `_reduce_act`.
ENET_CONV = dict(kernel_initializer="glorot_uniform", names=("{}", "{}_bn", "{}_act"))


def _activation(relu):
    """ENet's activation layer factory (name -> layer): ReLU in the decoder, PReLU (one slope per channel) elsewhere."""
    if relu:
        return lambda name: layers.ReLU(name=name)
    return lambda name: layers.PReLU(shared_axes=[1, 2], name=name)


# === Blocks ===

def initial_block(x):
    conv = layers.Conv2D(13, 3, strides=2, padding="same", use_bias=False, name="initial_conv")(x)
    pool = layers.MaxPooling2D(2, name="initial_pool")(x)
    x = layers.Concatenate(name="initial_concat")([conv, pool])
    return _activation(False)("initial_prelu")(batch_norm("initial_bn")(x))


def bottleneck(x, filters, name, dilation=1, asymmetric=0, downsample=False, dropout=0.1, relu=False):
    """1x1 reduce (2x2 stride 2 when downsampling) -> conv -> 1x1 expand, plus the shortcut.

    The middle conv is 3x3 (dilated by `dilation`) or, with `asymmetric=k`, kx1
    then 1xk. A downsampling block's shortcut is a 2x2 max pooling padded with
    zero channels up to `filters`; the pooled tensor's input is returned as well
    so the decoder can unpool with the same positions.
    """
    internal = filters // 4
    reduce_size = 2 if downsample else 1
    activation = _activation(relu)
    y = conv_bn(x, internal, reduce_size, name=name + "_reduce", strides=reduce_size, padding="valid",
                activation=activation, **ENET_CONV)
    if asymmetric:
        y = layers.Conv2D(internal, (asymmetric, 1), padding="same", use_bias=False, name=name + "_conv_a")(y)
        y = conv_bn(y, internal, (1, asymmetric), name=name + "_conv", activation=activation,
                    **dict(ENET_CONV, names=("{}_b", "{}_bn", "{}_act")))
    else:
        y = conv_bn(y, internal, 3, name=name + "_conv", dilation_rate=dilation, activation=activation, **ENET_CONV)
    y = conv_bn(y, filters, 1, name=name + "_expand", padding="valid", activation=None, **ENET_CONV)
    y = layers.SpatialDropout2D(dropout, name=name + "_dropout")(y)
    shortcut = x
    if downsample:
        shortcut = layers.MaxPooling2D(2, name=name + "_pool")(x)
        if filters > x.shape[-1]:
            shortcut = PadChannels(filters, name=name + "_pad")(shortcut)
    x_out = layers.Add(name=name + "_add")([y, shortcut])
    return activation(name + "_out_act")(x_out)


def upsampling_bottleneck(x, pooled_from, filters, name, dropout=0.1):
    """Decoder block doubling the resolution: the shortcut is 1x1 conv + BN, then max unpooling
    at the positions where the encoder's pooling of `pooled_from` took its maxima."""
    internal = filters // 4
    relu = _activation(True)
    shortcut = conv_bn(x, filters, 1, name=name + "_shortcut", padding="valid", activation=None, **ENET_CONV)
    shortcut = MaxUnpool2D(name=name + "_unpool")([shortcut, pooled_from])
    y = conv_bn(x, internal, 1, name=name + "_reduce", padding="valid", activation=relu, **ENET_CONV)
    y = conv_bn(y, internal, 3, name=name, strides=2, activation=relu, conv=layers.Conv2DTranspose,
                **dict(ENET_CONV, names=("{}_upconv", "{}_conv_bn", "{}_conv_act")))
    y = conv_bn(y, filters, 1, name=name + "_expand", padding="valid", activation=None, **ENET_CONV)
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
