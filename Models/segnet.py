"""SegNet (Badrinarayanan et al., 2017) at the seed's scale.

Encoder: four stages of two 3x3 conv-BN-ReLU (32, 64, 128, 256 filters), each
followed by a 2x2 max pooling. Decoder: the mirror image, each stage starting
with max unpooling at the positions where the matching encoder pooling found
its maxima (SegNet's pooling indices; no skip concatenation) followed by two
3x3 conv-BN-ReLU, the second narrowing to the next stage's width as in the
paper. The seed's version upsampled without indices (nearest neighbour), which
let its decoder keep the wider width one conv longer per stage: 2,941,218
parameters at 224x224 and 2 classes against 2,357,794 here.
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input, segmentation_head
from Models.layers import MaxUnpool2D

FILTERS = (32, 64, 128, 256)


def segnet(n_classes, input_height, input_width):
    """SegNet. Input size: height and width multiples of 16 (four poolings).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    x, pooled_from = inputs, []
    for stage, filters in enumerate(FILTERS, start=1):
        x = conv_bn(x, filters, name=f"enc{stage}_1")
        x = conv_bn(x, filters, name=f"enc{stage}_2")
        pooled_from.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    for stage in reversed(range(1, len(FILTERS) + 1)):
        x = MaxUnpool2D(name=f"unpool{stage}")([x, pooled_from[stage - 1]])
        x = conv_bn(x, FILTERS[stage - 1], name=f"dec{stage}_1")
        x = conv_bn(x, FILTERS[max(stage - 2, 0)], name=f"dec{stage}_2")
    return keras.Model(inputs, segmentation_head(x, n_classes), name="segnet")
