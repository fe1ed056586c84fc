"""DeepLab v2, VGG-16 ASPP-L variant (Chen et al., 2017, Sec. 3.2 and Fig. 4).

VGG-16 with pool4/pool5 at stride 1 and block 5 dilated by 2 (output stride
8); four parallel branches fc6 (3x3, dilation 6/12/18/24, 1024) -> fc7 (1x1,
1024) -> fc8 (1x1, classes), each with dropout 0.5; their class scores are
summed and upsampled bilinearly x8. As in the paper, the VGG part has no
batch norm. Unlike the seed, fc8 is linear (the seed put a ReLU on the class
scores). Encoder names follow `keras.applications.VGG16` (`block1_conv1`..),
so ImageNet VGG16 weights can be loaded by name.
"""
import keras
from keras import layers

from Models.common import image_input
from Models.layers import AtrousConv2D

ASPP_RATES = (6, 12, 18, 24)
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _conv_relu(x, filters, kernel_size, name, dilation_rate=1, conv=layers.Conv2D):
    return conv(filters, kernel_size, padding="same", dilation_rate=dilation_rate, activation="relu",
                kernel_initializer="he_normal", name=name)(x)


def deeplab_v2(n_classes, input_height, input_width):
    """DeepLab v2 (VGG-16, ASPP rates 6/12/18/24). Input size: height and width multiples of 8 (3 stride-2 pools).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)

    # === Encoder: DeepLab's VGG-16 (3x3 pools, padding 1; the last two at stride 1) ===
    x = inputs
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        rate = 2 if block == 5 else 1
        for i in range(1, convs + 1):
            x = _conv_relu(x, filters, 3, f"block{block}_conv{i}", dilation_rate=rate)
        x = layers.MaxPooling2D(3, strides=2 if block <= 3 else 1, padding="same", name=f"block{block}_pool")(x)

    # === ASPP-L ===
    scores = []
    for branch, rate in enumerate(ASPP_RATES, start=1):
        # AtrousConv2D: TF's CPU gradient of a plain Conv2D at rates 12-24 is 10-100x slower.
        y = _conv_relu(x, 1024, 3, f"fc6_{branch}", dilation_rate=rate, conv=AtrousConv2D)
        y = layers.Dropout(0.5, name=f"fc6_{branch}_dropout")(y)
        y = _conv_relu(y, 1024, 1, f"fc7_{branch}")
        y = layers.Dropout(0.5, name=f"fc7_{branch}_dropout")(y)
        scores.append(layers.Conv2D(n_classes, 1, name=f"fc8_{branch}")(y))
    x = layers.Add(name="aspp_sum")(scores)

    x = layers.UpSampling2D(8, interpolation="bilinear", name="logits_upsample")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name="deeplab_v2")
