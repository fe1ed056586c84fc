"""R2U-Net (Alom et al., 2018): UNet built from recurrent residual conv units, t = 2."""
import functools

import keras

from Models.blocks_unet import rrcnn_block, up_conv, unet_family
from Models.common import image_input, segmentation_head

FILTERS = (32, 64, 128, 256, 512)
STEPS = 2  # the paper's t: each recurrent conv layer unrolls to t + 1 convolutions


def r2unet(n_classes, input_height, input_width, steps=STEPS):
    """R2U-Net. Input size: height and width multiples of 16 (4 poolings).

    Every stage (encoder, bottleneck, decoder) is a recurrent residual unit of
    two recurrent conv layers with `steps` recurrences; the decoder upsamples
    with nearest 2x + 3x3 conv. Returns a model mapping (B, H, W, 3) images to
    (B, H, W, n_classes) float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    block = functools.partial(rrcnn_block, steps=steps)
    x = unet_family(inputs, FILTERS, block, upsample=up_conv)
    return keras.Model(inputs, segmentation_head(x, n_classes), name="r2unet")
