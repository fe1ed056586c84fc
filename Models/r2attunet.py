"""R2AttU-Net: R2U-Net (Alom et al., 2018) with Attention U-Net's gates on the skips."""
import functools

import keras

from Models.blocks_unet import attention_gate, rrcnn_block, up_conv, unet_family
from Models.common import image_input, segmentation_head
from Models.r2unet import FILTERS, STEPS


def r2attunet(n_classes, input_height, input_width, steps=STEPS):
    """R2U-Net with attention gates. Input size: height and width multiples of 16 (4 poolings).

    The R2U-Net of Models/r2unet.py (recurrent residual units everywhere,
    `steps` recurrences) whose skips pass through additive attention gates
    before concatenation. Returns a model mapping (B, H, W, 3) images to
    (B, H, W, n_classes) float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    block = functools.partial(rrcnn_block, steps=steps)
    x = unet_family(inputs, FILTERS, block, upsample=up_conv, gate=attention_gate)
    return keras.Model(inputs, segmentation_head(x, n_classes), name="r2attunet")
