"""FCN-8s (Long et al., 2015) at the seed's scale: a small VGG-style encoder and the FCN-8s head.

The encoder is the seed's: five stages of one 3x3 conv-BN-ReLU (16, 32, 64,
128, 256 filters) and a 2x2 max pooling. The head is the paper's: `fc6` (7x7
conv) and `fc7` (1x1 conv) as convolutions, with dropout 0.5; class scores from
the stride-32 map, 2x upsampled and summed with scores from pool4, 2x upsampled
and summed with scores from pool3, then 8x upsampled to the input size. The
upsampling layers are learnable transposed convs (4x4 stride 2, 16x16 stride 8)
initialised to bilinear interpolation, as in the paper. Unlike the original
toolkit (fixed at 224x224), every size the rule allows works.
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input
from Models.layers import BilinearUpsampling

ENCODER_FILTERS = (16, 32, 64, 128, 256)


# === FCN-8s head (shared with mobilenet_fcn8) ===

def _upscore(x, n_classes, factor, name):
    return layers.Conv2DTranspose(n_classes, 2 * factor, strides=factor, padding="same", use_bias=False,
                                  kernel_initializer=BilinearUpsampling(), name=name)(x)


def fcn8_head(pool3, pool4, pool5, n_classes, fc_filters=256, dropout=0.5):
    """FCN-8s on features at strides 8, 16 and 32 -> (B, H, W, n_classes) float32 softmax.

    `fc6` is a 7x7 conv-BN-ReLU and `fc7` a 1x1 conv-BN-ReLU, both `fc_filters` wide.
    """
    x = conv_bn(pool5, fc_filters, kernel_size=7, name="fc6")
    x = layers.Dropout(dropout, name="drop6")(x)
    x = conv_bn(x, fc_filters, kernel_size=1, name="fc7")
    x = layers.Dropout(dropout, name="drop7")(x)
    x = layers.Conv2D(n_classes, 1, name="score_fr")(x)
    x = _upscore(x, n_classes, 2, "upscore2")
    x = layers.Add(name="fuse_pool4")([x, layers.Conv2D(n_classes, 1, name="score_pool4")(pool4)])
    x = _upscore(x, n_classes, 2, "upscore_pool4")
    x = layers.Add(name="fuse_pool3")([x, layers.Conv2D(n_classes, 1, name="score_pool3")(pool3)])
    x = _upscore(x, n_classes, 8, "upscore8")
    return layers.Activation("softmax", dtype="float32", name="softmax")(x)


# === Model ===

def fcn8(n_classes, input_height, input_width):
    """FCN-8s. Input size: height and width multiples of 32 (five poolings).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    x, pools = inputs, []
    for stage, filters in enumerate(ENCODER_FILTERS, start=1):
        x = conv_bn(x, filters, name=f"block{stage}")
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        pools.append(x)
    outputs = fcn8_head(pools[2], pools[3], pools[4], n_classes)
    return keras.Model(inputs, outputs, name="fcn8")
