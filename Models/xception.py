"""Modified aligned Xception (Chen et al., 2018, DeepLabV3+ Sec. 3.2) with output stride 8 or 16.

Compared with Chollet's Xception: 16 middle-flow units instead of 8, every
max-pool replaced by a strided separable conv, BN + ReLU after every depthwise
conv in the exit flow. The output stride is held at 16 (or 8) by turning the
last stride-2 units into stride 1 with doubled dilation, as the DeepLabV3+
article's code does (OS 16: exit rates 1, 2; OS 8: entry block 3 at stride 1,
middle rate 2, exit rates 2, 4).

Layer names (`entry_flow_conv1_1`, `entry_flow_block1_separable_conv1_depthwise`,
`middle_flow_unit_1_...`, `exit_flow_block2_...`, `*_BN`, `*_shortcut`) follow
the article's Keras DeepLabV3+ code, so its Xception weights could be loaded
by name.
"""
from keras import layers

from Models.common import conv_bn

BN_EPSILON = 1e-3
# The article's conv + BN (+ ReLU) names: `entry_flow_conv1_1`, `entry_flow_conv1_1_BN`, `entry_flow_conv1_1_relu`.
ARTICLE_CONV = dict(kernel_initializer="glorot_uniform", names=("{}", "{}_BN", "{}_relu"))


def sep_conv_bn(x, filters, prefix, stride=1, kernel_size=3, rate=1, depth_activation=False, epsilon=BN_EPSILON):
    """Depthwise (strided or dilated) -> BN -> pointwise 1x1 -> BN.

    depth_activation=True puts a ReLU after each BN (DeepLabV3+'s ASPP and
    decoder); False puts a single ReLU in front (Xception's pre-activation).
    """
    if not depth_activation:
        x = layers.Activation("relu", name=prefix + "_relu")(x)
    activation = "relu" if depth_activation else None
    x = conv_bn(x, None, kernel_size, name=prefix + "_depthwise", strides=stride, dilation_rate=rate,
                activation=activation, epsilon=epsilon, conv=layers.DepthwiseConv2D, **ARTICLE_CONV)
    return conv_bn(x, filters, 1, name=prefix + "_pointwise", padding="valid", activation=activation,
                   epsilon=epsilon, **ARTICLE_CONV)


def xception_block(inputs, depths, prefix, skip="conv", stride=1, rate=1, depth_activation=False):
    """Three separable convs (the last one strided), plus a 1x1 conv / identity / no shortcut.

    Returns (output, output of the second separable conv), the latter being
    DeepLabV3+'s low-level feature in entry block 2.
    """
    x, second = inputs, None
    for i, depth in enumerate(depths):
        x = sep_conv_bn(x, depth, f"{prefix}_separable_conv{i + 1}", stride=stride if i == 2 else 1, rate=rate,
                        depth_activation=depth_activation)
        if i == 1:
            second = x
    if skip == "conv":
        shortcut = conv_bn(inputs, depths[-1], 1, name=prefix + "_shortcut", strides=stride, activation=None,
                           epsilon=BN_EPSILON, **ARTICLE_CONV)
        x = layers.Add(name=prefix + "_add")([x, shortcut])
    elif skip == "sum":
        x = layers.Add(name=prefix + "_add")([x, inputs])
    return x, second


def aligned_xception_encoder(inputs, output_stride=16):
    """Aligned-Xception features of `inputs` (B, H, W, 3) at output stride 8 or 16.

    Returns a dict: "low_level" (stride 4, 256 channels; DeepLabV3+'s skip) and
    "out" (stride `output_stride`, 2048 channels). H and W must be multiples
    of `output_stride`.
    """
    if output_stride == 16:
        entry3_stride, middle_rate, exit_rates = 2, 1, (1, 2)
    elif output_stride == 8:
        entry3_stride, middle_rate, exit_rates = 1, 2, (2, 4)
    else:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")

    # === Entry flow ===
    x = conv_bn(inputs, 32, 3, name="entry_flow_conv1_1", strides=2, epsilon=BN_EPSILON, **ARTICLE_CONV)
    x = conv_bn(x, 64, 3, name="entry_flow_conv1_2", epsilon=BN_EPSILON, **ARTICLE_CONV)
    x, _ = xception_block(x, (128, 128, 128), "entry_flow_block1", stride=2)
    x, low_level = xception_block(x, (256, 256, 256), "entry_flow_block2", stride=2)
    x, _ = xception_block(x, (728, 728, 728), "entry_flow_block3", stride=entry3_stride)

    # === Middle flow ===
    for unit in range(1, 17):
        x, _ = xception_block(x, (728, 728, 728), f"middle_flow_unit_{unit}", skip="sum", rate=middle_rate)

    # === Exit flow ===
    x, _ = xception_block(x, (728, 1024, 1024), "exit_flow_block1", rate=exit_rates[0])
    x, _ = xception_block(x, (1536, 1536, 2048), "exit_flow_block2", skip="none", rate=exit_rates[1],
                          depth_activation=True)
    return {"low_level": low_level, "out": x}
