"""ICNet (Zhao et al., 2018): an image cascade for real-time segmentation, at the seed's scale.

Three branches share the work:
- sub4 + sub2: the half-resolution image runs through a half-width dilated
  PSPNet-50 (conv1 32-32-64, residual stages of 128/256/512/1024 channels with
  3/4/6/3 bottlenecks, dilation 2 and 4 in the last two). Its first layers
  (through conv3_1, stride 16 of the input) form the sub2 branch; the rest runs
  on that map downsampled once more (stride 32: the sub4 branch) and ends in a
  pyramid pooling module (bins 1, 2, 3, 6, summed as in ICNet) and a 1x1 conv.
- sub1: three stride-2 3x3 convs on the full-resolution image (stride 8).
Cascade feature fusion (CFF) joins sub4 with sub2 and the result with sub1:
bilinear 2x upsampling + dilated 3x3 conv-BN on the coarse input, 1x1 conv-BN
on the fine one, sum, ReLU. Class scores at stride 4 are bilinearly upsampled
to the input size, as the paper does at inference; the original toolkit
returned them at stride 4. Layer names follow the paper's Caffe model.
The cascade label guidance (auxiliary losses on the sub4 and sub24 outputs)
is a training aid of the paper that is not built here.
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input
from Models.layers import AdaptiveAvgPool2D, ResizeTo

PYRAMID_BINS = (1, 2, 3, 6)


# === Blocks ===

# The Caffe model's names for a conv + BN without activation: `conv3_1_1x1_proj`, `conv3_1_1x1_proj_bn`.
LINEAR = dict(activation=None, names=("{}", "{}_bn", ""))


def residual_block(x, mid, out, name, strides=1, dilation=1, project=False):
    """Bottleneck 1x1 reduce -> 3x3 (dilated) -> 1x1 increase, plus identity or 1x1 projection."""
    shortcut = conv_bn(x, out, 1, name=name + "_1x1_proj", strides=strides, **LINEAR) if project else x
    y = conv_bn(x, mid, kernel_size=1, strides=strides, name=name + "_1x1_reduce")
    y = conv_bn(y, mid, dilation_rate=dilation, name=name + "_3x3")
    y = conv_bn(y, out, 1, name=name + "_1x1_increase", **LINEAR)
    return layers.ReLU(name=name + "_relu")(layers.Add(name=name)([shortcut, y]))


def residual_stage(x, mid, out, blocks, stage, strides=1, dilation=1, first=1):
    for i in range(first, blocks + 1):
        x = residual_block(x, mid, out, f"conv{stage}_{i}", strides=strides if i == 1 else 1,
                           dilation=dilation, project=(i == 1))
    return x


def pyramid_sum(x, name):
    """ICNet's pyramid pooling: average over 1x1, 2x2, 3x3, 6x6 bins, upsample, add to the input."""
    height, width = x.shape[1], x.shape[2]
    pooled = [x]
    for bins in PYRAMID_BINS:
        y = AdaptiveAvgPool2D(bins, name=f"{name}_pool{bins}")(x)
        pooled.append(ResizeTo(height, width, name=f"{name}_pool{bins}_interp")(y))
    return layers.Add(name=name + "_sum")(pooled)


def cascade_feature_fusion(coarse, fine, filters, name):
    """CFF: upsample `coarse` 2x, dilated 3x3 conv-BN; 1x1 conv-BN on `fine`; sum; ReLU."""
    up = ResizeTo(fine.shape[1], fine.shape[2], name=name + "_interp")(coarse)
    up = conv_bn(up, filters, 3, name=name + "_conv", dilation_rate=2, **LINEAR)
    proj = conv_bn(fine, filters, 1, name=name + "_proj", **LINEAR)
    return layers.ReLU(name=name + "_relu")(layers.Add(name=name + "_sum")([up, proj]))


# === Model ===

def icnet(n_classes, input_height, input_width):
    """ICNet. Input size: height and width multiples of 32 (the sub4 branch runs at stride 32),
    at least 192 (so the stride-32 map holds the pyramid's 6x6 bins).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    # A 2x2 average equals a half-pixel bilinear downsample by exactly 2.
    x = layers.AveragePooling2D(2, name="data_sub2")(inputs)
    x = conv_bn(x, 32, strides=2, name="conv1_1_3x3_s2")
    x = conv_bn(x, 32, name="conv1_2_3x3")
    x = conv_bn(x, 64, name="conv1_3_3x3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    x = residual_stage(x, 32, 128, 3, stage=2)
    sub2 = residual_block(x, 64, 256, "conv3_1", strides=2, project=True)

    x = layers.AveragePooling2D(2, name="conv3_1_sub4")(sub2)
    for i in range(2, 5):
        x = residual_block(x, 64, 256, f"conv3_{i}")
    x = residual_stage(x, 128, 512, 6, stage=4, dilation=2)
    x = residual_stage(x, 256, 1024, 3, stage=5, dilation=4)
    x = pyramid_sum(x, "conv5_3")
    sub4 = conv_bn(x, 256, kernel_size=1, name="conv5_4_k1")

    y = conv_bn(inputs, 32, strides=2, name="conv1_sub1")
    y = conv_bn(y, 32, strides=2, name="conv2_sub1")
    sub1 = conv_bn(y, 64, strides=2, name="conv3_sub1")

    x = cascade_feature_fusion(sub4, sub2, 128, "sub24")
    x = cascade_feature_fusion(x, sub1, 128, "sub12")
    x = ResizeTo(input_height // 4, input_width // 4, name="sub12_sum_interp")(x)
    x = layers.Conv2D(n_classes, 1, name="conv6_cls")(x)
    x = ResizeTo(input_height, input_width, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name="icnet")
