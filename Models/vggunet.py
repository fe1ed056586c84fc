"""VGG-UNet: a VGG16 encoder (Simonyan & Zisserman, 2015) with batch norm and a UNet decoder.

As in the seed, the decoder starts from block 5 (stride 16, the last pooling
is unused) and climbs back through blocks 4..1 with a 2x2 transposed conv
(BN + ReLU), concatenation with the block's output and two 3x3 convs.
The encoder convs keep `keras.applications.VGG16`'s names (`block1_conv1`..
`block5_conv3`) and biases, so ImageNet VGG16 weights can be loaded by name.
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input, segmentation_head

# (filters, convs) of VGG16's five blocks.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16_bn_encoder(inputs):
    """The outputs of VGG16's five conv blocks (strides 1, 2, 4, 8, 16), each conv followed by BN + ReLU."""
    x, outputs = inputs, []
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        if block > 1:
            x = layers.MaxPooling2D(2, name=f"block{block - 1}_pool")(x)
        for i in range(1, convs + 1):
            name = f"block{block}_conv{i}"
            # VGG16's convs keep their biases (and names) so ImageNet weights load by name.
            x = conv_bn(x, filters, 3, name=name, use_bias=True, names=("{}", "{}_bn", "{}_relu"))
        outputs.append(x)
    return outputs


def vggunet(n_classes, input_height, input_width):
    """VGG16-BN encoder + UNet decoder. Input size: height and width multiples of 16 (4 poolings).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    blocks = vgg16_bn_encoder(inputs)
    x = blocks[-1]
    for level in range(4, 0, -1):
        filters = VGG16_BLOCKS[level - 1][0]
        name = f"up{5 - level}"
        x = conv_bn(x, filters, 2, name=name + "_deconv", strides=2, use_bias=True, kernel_initializer="glorot_uniform",
                    names=("{}", "{}_bn", "{}_relu"), conv=layers.Conv2DTranspose)
        x = layers.Concatenate(name=name + "_concat")([x, blocks[level - 1]])
        x = conv_bn(x, filters, name=name + "_conv1")
        x = conv_bn(x, filters, name=name + "_conv2")
    return keras.Model(inputs, segmentation_head(x, n_classes), name="vggunet")
