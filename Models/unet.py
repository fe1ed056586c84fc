"""UNet (Ronneberger et al., 2015) with a 32-filter first stage, as in the seed."""
import keras
from keras import layers

from Models.common import conv_bn_relu, image_input, segmentation_head, size_rule

# Encoder widths; the seed's UNet starts at 32 filters and doubles at each of 4 poolings.
FILTERS = (32, 64, 128, 256, 512)


def double_conv(x, filters, name):
    x = conv_bn_relu(x, filters, name=name + "_1")
    return conv_bn_relu(x, filters, name=name + "_2")


def up_block(x, skip, filters, name):
    """2x transposed-conv upsampling, concatenation with the skip, two 3x3 convs."""
    x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=name + "_up")(x)
    x = layers.Concatenate(name=name + "_concat")([skip, x])
    return double_conv(x, filters, name)


@size_rule(multiple=16)
def unet(n_classes, input_height, input_width):
    """UNet. Input size: height and width multiples of 16 (4 poolings).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    skips, x = [], inputs
    for level, filters in enumerate(FILTERS[:-1]):
        x = double_conv(x, filters, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = double_conv(x, FILTERS[-1], "bottleneck")
    for level in reversed(range(len(FILTERS) - 1)):
        x = up_block(x, skips[level], FILTERS[level], f"dec{level}")
    return keras.Model(inputs, segmentation_head(x, n_classes), name="unet")
