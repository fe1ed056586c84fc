"""MobileNetV2 (Sandler et al., 2018) as a dilated segmentation encoder.

The encoder keeps the output stride at 8 or 16: once the running stride
reaches it, later stride-2 blocks run at stride 1 and every block after them
uses a doubled dilation rate (DeepLab's atrous trick, as in the DeepLabV3+
article: OS 16 -> blocks 14-16 at rate 2; OS 8 -> blocks 7-13 at rate 2 and
14-16 at rate 4). The 1280-channel `Conv_1` head is left out.

Layer names (`Conv1`, `bn_Conv1`, `block_{i}_expand`, `block_{i}_depthwise`,
`block_{i}_project`, their `_BN`s, `expanded_conv_*`) and weight shapes are
those of `keras.applications.MobileNetV2`, so an ImageNet weights file can be
loaded by name; dilation and "same" padding change no weight shape.
"""
from keras import layers

from Models.common import conv_bn

# (expansion, output channels, repeats, first stride) per stage, from the paper's Table 2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1))
# Block id -> name of the feature map returned by `mobilenetv2_encoder`.
ENDPOINTS = {2: "low_level", 5: "mid", 12: "aux", 16: "out"}
# Keras-applications epsilon, so pretrained statistics mean the same thing.
BN_EPSILON = 1e-3
# keras.applications' conv + BN (+ ReLU6) names: `block_1_expand`, `block_1_expand_BN`, `block_1_expand_relu`.
KERAS_CONV = dict(epsilon=BN_EPSILON, kernel_initializer="glorot_uniform", names=("{}", "{}_BN", "{}_relu"))


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to a multiple of `divisor`, never dropping more than 10%."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return new_value + divisor if new_value < 0.9 * value else new_value


def inverted_res_block(x, expansion, stride, alpha, filters, block_id, rate=1):
    """Expand 1x1 -> depthwise 3x3 (strided or dilated) -> linear project 1x1, plus identity when shapes allow."""
    in_channels = x.shape[-1]
    out_channels = make_divisible(int(filters * alpha), 8)
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    inputs = x
    if block_id:
        x = conv_bn(x, expansion * in_channels, 1, name=prefix + "expand", padding="valid", activation="relu6",
                    **KERAS_CONV)
    x = conv_bn(x, None, 3, name=prefix + "depthwise", strides=stride, dilation_rate=rate, activation="relu6",
                conv=layers.DepthwiseConv2D, **KERAS_CONV)
    x = conv_bn(x, out_channels, 1, name=prefix + "project", padding="valid", activation=None, **KERAS_CONV)
    if in_channels == out_channels and stride == 1:
        x = layers.Add(name=prefix + "add")([inputs, x])
    return x


def mobilenetv2_encoder(inputs, output_stride=16, alpha=1.0):
    """MobileNetV2 features of `inputs` (B, H, W, 3) at output stride 8 or 16.

    Returns a dict of tensors:
      "low_level": block 2 output, stride 4, 24*alpha channels (DeepLabV3+'s skip);
      "mid": block 5 output, stride 8, 32*alpha channels;
      "aux": block 12 output, stride min(16, output_stride), 96*alpha channels
             (PSPNet's auxiliary-head input);
      "out": block 16 output, stride `output_stride`, 320*alpha channels.
    H and W must be multiples of `output_stride` for the strides above to be exact.
    """
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    x = conv_bn(inputs, make_divisible(32 * alpha, 8), 3, name="Conv1", strides=2, activation="relu6",
                **dict(KERAS_CONV, names=("{}", "bn_{}", "{}_relu")))  # keras.applications' `bn_Conv1`

    features, block_id, current_stride, rate = {}, 0, 2, 1
    for expansion, filters, repeats, first_stride in STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block_rate = rate
            if stride > 1 and current_stride >= output_stride:
                # Past the output stride: keep the resolution, widen the receptive field instead.
                rate *= stride
                stride = 1
            else:
                current_stride *= stride
            x = inverted_res_block(x, expansion, stride, alpha, filters, block_id, rate=block_rate)
            if block_id in ENDPOINTS:
                features[ENDPOINTS[block_id]] = x
            block_id += 1
    return features
