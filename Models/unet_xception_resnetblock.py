"""UNet with an Xception encoder and residual-block decoder (the seed's Unet_Xception_ResNetBlock).

Encoder: Xception's (Chollet, 2017) entry and middle flows plus the first
two separable convs of block 13 (1024 channels, stride 16), with "same"
padding throughout, so every skip lines up without the seed's ZeroPadding
patches. Bottleneck: 2x2 max pool (stride 32), a 3x3 conv to 512 and two
residual blocks. Decoder: five 3x3 stride-2 transposed convs (256, 128, 64,
32, 16), each concatenated with the Xception feature of that stride (block13
sepconv2, block4 sepconv2, block3 sepconv2, block2 sepconv2; none at full
size), then a 3x3 conv and two residual blocks; LeakyReLU(0.1) throughout.

Encoder layer names and weight shapes are those of `keras.applications.Xception`
(`block1_conv1`, `block5_sepconv1`, `block13_sepconv2_bn`, ...) except its
unnamed 1x1 shortcut convs, here `block{2,3,4}_shortcut`.
"""
import keras
from keras import layers

from Models.common import batch_norm, conv_bn, image_input, segmentation_head

# keras.applications.Xception's names for conv + BN (+ ReLU): `block1_conv1`, `block1_conv1_bn`, `block1_conv1_act`.
XCEPTION_NAMES = ("{}", "{}_bn", "{}_act")
# (name, filters, encoder feature it is concatenated with) per decoder stage, deepest first.
DECODER = (("dec4", 256, "block13_sepconv2_bn"), ("dec3", 128, "block4_sepconv2_bn"),
           ("dec2", 64, "block3_sepconv2_bn"), ("dec1", 32, "block2_sepconv2_bn"), ("dec0", 16, None))


# === Encoder ===

def _sep_bn(x, filters, name, activate_first=True):
    if activate_first:
        x = layers.Activation("relu", name=name + "_act")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    return batch_norm(name + "_bn")(x)


def _downsample_block(x, filters, block, first_act=True):
    """Two separable convs + 3x3/2 max pool, with a strided 1x1 conv shortcut."""
    shortcut = conv_bn(x, filters, 1, name=f"block{block}_shortcut", strides=2, activation=None,
                       kernel_initializer="glorot_uniform", names=XCEPTION_NAMES)
    x = _sep_bn(x, filters, f"block{block}_sepconv1", activate_first=first_act)
    x = _sep_bn(x, filters, f"block{block}_sepconv2")
    skip = x
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
    return layers.Add(name=f"block{block}_add")([x, shortcut]), skip


def xception_encoder(inputs):
    """Xception up to block 13's second separable conv; returns {layer name: tensor} of the skip features."""
    x = conv_bn(inputs, 32, 3, name="block1_conv1", strides=2, kernel_initializer="glorot_uniform",
                names=XCEPTION_NAMES)
    x = conv_bn(x, 64, 3, name="block1_conv2", kernel_initializer="glorot_uniform", names=XCEPTION_NAMES)

    skips = {}
    for block, filters in ((2, 128), (3, 256), (4, 728)):
        x, skips[f"block{block}_sepconv2_bn"] = _downsample_block(x, filters, block, first_act=block > 2)
    for block in range(5, 13):
        residual = x
        for i in (1, 2, 3):
            x = _sep_bn(x, 728, f"block{block}_sepconv{i}")
        x = layers.Add(name=f"block{block}_add")([x, residual])
    x = _sep_bn(x, 728, "block13_sepconv1")
    skips["block13_sepconv2_bn"] = _sep_bn(x, 1024, "block13_sepconv2")
    return skips


# === Decoder ===

def residual_block(block_input, filters, name):
    """Pre-activation residual block: LeakyReLU + BN -> conv-BN-LeakyReLU -> conv-BN, added to BN(input)."""
    x = layers.LeakyReLU(0.1, name=name + "_in_lrelu")(block_input)
    x = batch_norm(name + "_in_bn")(x)
    shortcut = batch_norm(name + "_shortcut_bn")(block_input)
    decoder_conv = dict(use_bias=True, kernel_initializer="glorot_uniform", names=("{}", "{}_bn", "{}_lrelu"))
    x = conv_bn(x, filters, 3, name=name + "_conv1", activation="leaky_relu", **decoder_conv)
    x = conv_bn(x, filters, 3, name=name + "_conv2", activation=None, **decoder_conv)
    return layers.Add(name=name + "_add")([x, shortcut])


def _conv_res_res(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", name=name + "_conv")(x)
    x = residual_block(x, filters, name + "_res1")
    x = residual_block(x, filters, name + "_res2")
    return layers.LeakyReLU(0.1, name=name + "_lrelu")(x)


def unet_xception_resnetblock(n_classes, input_height, input_width):
    """Xception-encoder UNet with residual decoder blocks. Input size: height and width multiples of 32
    (the bottleneck pools Xception's stride-16 feature once more).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    skips = xception_encoder(inputs)

    x = layers.LeakyReLU(0.1, name="block13_lrelu")(skips["block13_sepconv2_bn"])
    skips["block13_sepconv2_bn"] = x
    x = layers.MaxPooling2D(2, name="bottleneck_pool")(x)
    x = layers.Dropout(0.1, name="bottleneck_dropout")(x)
    x = _conv_res_res(x, 512, "bottleneck")

    for name, filters, skip in DECODER:
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=name + "_deconv")(x)
        if skip is not None:
            x = layers.Concatenate(name=name + "_concat")([x, skips[skip]])
        x = layers.Dropout(0.1, name=name + "_dropout")(x)
        x = _conv_res_res(x, filters, name)
    x = layers.Dropout(0.05, name="head_dropout")(x)
    return keras.Model(inputs, segmentation_head(x, n_classes), name="unet_xception_resnetblock")
