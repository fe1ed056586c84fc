"""DeepLabV3+ (Chen et al., 2018) as in the DeepLabV3+ Keras article.

Encoder: MobileNetV2 or modified aligned Xception at output stride 16 (ASPP
rates 6/12/18) or 8 (rates 12/24/36). ASPP: a 1x1 conv, three dilated
separable 3x3 convs and image pooling (global average -> 1x1 conv ->
broadcast), concatenated and projected to 256 channels. Decoder: the ASPP
output upsampled bilinearly to stride 4, concatenated with the stride-4
low-level feature projected to 48 channels, two separable 3x3 convs (256),
then class scores upsampled bilinearly x4 to the input size.
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input
from Models.mobilenetv2 import mobilenetv2_encoder
from Models.xception import aligned_xception_encoder, sep_conv_bn

ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
BACKBONES = {"mobilenet": mobilenetv2_encoder, "xception": aligned_xception_encoder}
# The decoder's ASPP, projections and separable convs use the article's epsilon.
EPSILON = 1e-5


def _projection(x, filters, name):
    """1x1 conv-BN-ReLU with the article's names (`aspp0`, `aspp0_BN`, `aspp0_relu`) and epsilon."""
    return conv_bn(x, filters, 1, name=name, epsilon=EPSILON, kernel_initializer="glorot_uniform",
                   names=("{}", "{}_BN", "{}_relu"))


def aspp(x, rates):
    """Atrous spatial pyramid pooling on a static-size feature map: 5 branches -> 256 channels."""
    height, width = x.shape[1], x.shape[2]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="image_pooling_gap")(x)
    pooled = _projection(pooled, 256, "image_pooling")
    # Nearest upsampling of a 1x1 map is an exact broadcast, so no custom layer is needed.
    pooled = layers.UpSampling2D((height, width), name="image_pooling_broadcast")(pooled)
    branches = [pooled, _projection(x, 256, "aspp0")]
    for i, rate in enumerate(rates, start=1):
        branches.append(sep_conv_bn(x, 256, f"aspp{i}", rate=rate, depth_activation=True, epsilon=EPSILON))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = _projection(x, 256, "concat_projection")
    return layers.Dropout(0.1, name="concat_projection_dropout")(x)


def deeplab_v3_plus(n_classes, input_height, input_width, backbone="mobilenet", downsample_factor=16):
    """DeepLabV3+. Input size: height and width multiples of `downsample_factor`
    (multiples of 16 by default; multiples of 8 with downsample_factor=8).

    backbone: "mobilenet" (MobileNetV2) or "xception" (modified aligned Xception).
    downsample_factor: encoder output stride, 16 (ASPP rates 6/12/18) or 8 (12/24/36).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    downsample_factor = int(downsample_factor)
    inputs = image_input(input_height, input_width)
    features = BACKBONES[backbone](inputs, output_stride=downsample_factor)
    x = aspp(features["out"], ATROUS_RATES[downsample_factor])

    # === Decoder ===
    x = layers.UpSampling2D(downsample_factor // 4, interpolation="bilinear", name="decoder_upsample")(x)
    skip = _projection(features["low_level"], 48, "feature_projection0")
    x = layers.Concatenate(name="decoder_concat")([x, skip])
    x = sep_conv_bn(x, 256, "decoder_conv0", depth_activation=True, epsilon=EPSILON)
    x = sep_conv_bn(x, 256, "decoder_conv1", depth_activation=True, epsilon=EPSILON)

    x = layers.Conv2D(n_classes, 1, padding="same", name="logits")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="logits_upsample")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name=f"deeplab_v3_plus_{backbone}_os{downsample_factor}")

