"""Attention U-Net (Oktay et al., 2018): UNet whose skips pass through additive attention gates."""
import keras

from Models.blocks_unet import attention_gate, up_conv, unet_family
from Models.common import image_input, segmentation_head
from Models.unet import double_conv

# The seed's UNet widths (first stage 32, doubling at each of 4 poolings).
FILTERS = (32, 64, 128, 256, 512)


def attunet(n_classes, input_height, input_width):
    """Attention U-Net. Input size: height and width multiples of 16 (4 poolings).

    Two 3x3 conv-BN-ReLU per stage; the decoder upsamples (nearest 2x + 3x3
    conv), gates the skip with the upsampled feature, concatenates. Returns a
    model mapping (B, H, W, 3) images to (B, H, W, n_classes) float32 softmax
    probabilities.
    """
    inputs = image_input(input_height, input_width)
    x = unet_family(inputs, FILTERS, double_conv, upsample=up_conv, gate=attention_gate)
    return keras.Model(inputs, segmentation_head(x, n_classes), name="attunet")
