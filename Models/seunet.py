"""SE-UNet: UNet with a squeeze-and-excitation block (Hu et al., 2018) after every stage."""
import keras

from Models.blocks_unet import channel_se, transposed_up, unet_family
from Models.common import image_input, segmentation_head
from Models.unet import double_conv

# Half the UNet's widths: the seed's SE-UNet (~1.96M parameters) starts at 16 filters.
FILTERS = (16, 32, 64, 128, 256)
SE_RATIO = 8  # channels / ratio hidden units (at least 4, so the 16-channel stages keep some capacity)


def se_stage(x, filters, name):
    return channel_se(double_conv(x, filters, name), SE_RATIO, name + "_se")


def seunet(n_classes, input_height, input_width):
    """SE-UNet. Input size: height and width multiples of 16 (4 poolings).

    Each stage is two 3x3 conv-BN-ReLU followed by channel SE; the decoder
    upsamples with a 2x2 transposed conv as Models/unet.py does. Returns a model
    mapping (B, H, W, 3) images to (B, H, W, n_classes) float32 softmax
    probabilities.
    """
    inputs = image_input(input_height, input_width)
    x = unet_family(inputs, FILTERS, se_stage, upsample=transposed_up)
    return keras.Model(inputs, segmentation_head(x, n_classes), name="seunet")
