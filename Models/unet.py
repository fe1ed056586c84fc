"""UNet (Ronneberger et al., 2015) with a 32-filter first stage, as in the seed."""
import keras

from Models.blocks_unet import transposed_up, unet_family
from Models.common import conv_bn, image_input, segmentation_head

# Encoder widths; the seed's UNet starts at 32 filters and doubles at each of 4 poolings.
FILTERS = (32, 64, 128, 256, 512)


def double_conv(x, filters, name):
    x = conv_bn(x, filters, name=name + "_1")
    return conv_bn(x, filters, name=name + "_2")


def unet(n_classes, input_height, input_width):
    """UNet. Input size: height and width multiples of 16 (4 poolings).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    x = unet_family(inputs, FILTERS, double_conv, transposed_up)
    return keras.Model(inputs, segmentation_head(x, n_classes), name="unet")
