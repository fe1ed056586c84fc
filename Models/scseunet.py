"""scSE-UNet: UNet with concurrent spatial and channel SE (Roy et al., 2018) after every stage."""
import keras

from Models.blocks_unet import scse, transposed_up, unet_family
from Models.common import image_input, segmentation_head
from Models.unet import double_conv

# Half the UNet's widths: the seed's scSE-UNet (~1.96M parameters) starts at 16 filters.
FILTERS = (16, 32, 64, 128, 256)
CSE_RATIO = 2  # the paper's channel reduction in cSE


def scse_stage(x, filters, name):
    return scse(double_conv(x, filters, name), CSE_RATIO, name + "_scse")


def scseunet(n_classes, input_height, input_width):
    """scSE-UNet. Input size: height and width multiples of 16 (4 poolings).

    Each stage (encoder, bottleneck, decoder, as in the paper) is two 3x3
    conv-BN-ReLU followed by scSE = cSE(x) + sSE(x); the decoder upsamples with
    a 2x2 transposed conv as Models/unet.py does. Returns a model mapping
    (B, H, W, 3) images to (B, H, W, n_classes) float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    x = unet_family(inputs, FILTERS, scse_stage, upsample=transposed_up)
    return keras.Model(inputs, segmentation_head(x, n_classes), name="scseunet")
