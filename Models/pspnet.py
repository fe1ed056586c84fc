"""PSPNet (Zhao et al., 2017): the seed's small vanilla-CNN version and the article's backbones.

Backbones (builder option `backbone`):
- "vanilla" (default, the seed's): four 3x3 conv-BN-ReLU + 2x2 max pooling
  stages (64, 128, 256, 256 filters), output stride 16.
- "mobilenet": MobileNetV2 (`Models/mobilenetv2.py`), dilated to output stride 8.
- "resnet50": ResNet50 with conv4 dilated by 2 and conv5 by 4, output stride 8.

Head, as in the article: for each of the pool factors 1, 2, 3, 6 an adaptive
average pooling to that many bins, a 1x1 conv-BN-ReLU to C/4 channels (C the
backbone's output width) and bilinear upsampling back; the four maps are
concatenated with the backbone's output, then a 3x3 conv-BN-ReLU to C/4,
dropout 0.1, a 1x1 conv to the classes and bilinear upsampling to the input
size. (The seed computed the pyramid and then discarded it: its 964,226
parameters are the encoder and the classifier only.)

Auxiliary branch (`aux_branch=True`, the article's option): a 3x3 conv-BN-ReLU
to C/8, dropout 0.1, a 1x1 conv to the classes and upsampling to the input
size, on the previous stage's features (vanilla: stage 3, stride 8; mobilenet:
block 12; resnet50: conv4). The model then has two outputs, in this order:
`outputs[0]` the main probabilities (layer "softmax") and `outputs[1]` the
auxiliary ones (layer "aux_softmax"), both (B, H, W, n_classes) float32.
Train with a loss per output and loss weights [1, aux_weight] (the paper uses
0.4); predict with `outputs[0]` only.

The ResNet50 layer names (`conv1_conv`, `conv2_block1_0_conv`, ...) and weight
shapes are those of `keras.applications.ResNet50`, so ImageNet weights can be
loaded by name.
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input
from Models.layers import AdaptiveAvgPool2D, ResizeTo
from Models.mobilenetv2 import mobilenetv2_encoder

POOL_FACTORS = (1, 2, 3, 6)
VANILLA_FILTERS = (64, 128, 256, 256)
# (stage, bottleneck width, blocks, stride, dilation) of ResNet50 at output stride 8.
RESNET50_STAGES = ((2, 64, 3, 1, 1), (3, 128, 4, 2, 1), (4, 256, 6, 1, 2), (5, 512, 3, 1, 4))


# === Backbones: each returns (aux_features, features) ===

def vanilla_encoder(inputs):
    x, stages = inputs, []
    for stage, filters in enumerate(VANILLA_FILTERS, start=1):
        x = conv_bn(x, filters, name=f"block{stage}")
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        stages.append(x)
    return stages[2], stages[3]


# keras.applications.ResNet50's convs (with bias, default initializer) and BN epsilon, so pretrained
# moving statistics mean the same thing; its names are conv_bn's default `_conv`, `_bn`, `_relu`.
RESNET_CONV = dict(use_bias=True, kernel_initializer="glorot_uniform", epsilon=1.001e-5)


def resnet_block(x, width, name, strides=1, dilation=1, project=False):
    """ResNet v1 bottleneck (stride on the first 1x1, as keras.applications), 3x3 dilated by `dilation`."""
    if project:
        shortcut = conv_bn(x, 4 * width, 1, name=name + "_0", strides=strides, padding="valid", activation=None,
                           **RESNET_CONV)
    else:
        shortcut = x
    y = conv_bn(x, width, 1, name=name + "_1", strides=strides, padding="valid", **RESNET_CONV)
    y = conv_bn(y, width, 3, name=name + "_2", dilation_rate=dilation, **RESNET_CONV)
    y = conv_bn(y, 4 * width, 1, name=name + "_3", padding="valid", activation=None, **RESNET_CONV)
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.Activation("relu", name=name + "_out")(y)


def resnet50_encoder(inputs):
    x = conv_bn(inputs, 64, 7, name="conv1", strides=2, **RESNET_CONV)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    outputs = {}
    for stage, width, blocks, strides, dilation in RESNET50_STAGES:
        for block in range(1, blocks + 1):
            x = resnet_block(x, width, f"conv{stage}_block{block}", strides=strides if block == 1 else 1,
                             dilation=dilation, project=(block == 1))
        outputs[stage] = x
    return outputs[4], outputs[5]


def mobilenet_encoder(inputs):
    features = mobilenetv2_encoder(inputs, output_stride=8)
    return features["aux"], features["out"]


ENCODERS = {"vanilla": vanilla_encoder, "mobilenet": mobilenet_encoder, "resnet50": resnet50_encoder}


# === Head ===

def pyramid_pooling(x, pool_factors=POOL_FACTORS, name="psp"):
    """Concatenate `x` with, per factor, its bin averages -> 1x1 conv-BN-ReLU (C/4) -> bilinear upsampling."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    branches = [x]
    for factor in pool_factors:
        y = AdaptiveAvgPool2D(factor, name=f"{name}_pool{factor}")(x)
        y = conv_bn(y, channels // 4, kernel_size=1, name=f"{name}_pool{factor}")
        branches.append(ResizeTo(height, width, name=f"{name}_pool{factor}_interp")(y))
    return layers.Concatenate(name=name + "_concat")(branches)


def classifier(x, filters, n_classes, input_height, input_width, name):
    """3x3 conv-BN-ReLU, dropout 0.1, 1x1 conv to classes, upsampling to the input size, softmax."""
    x = conv_bn(x, filters, name=name + "_fuse")
    x = layers.Dropout(0.1, name=name + "_dropout")(x)
    x = layers.Conv2D(n_classes, 1, name=name + "_logits")(x)
    x = ResizeTo(input_height, input_width, name=name + "_interp")(x)
    softmax_name = "softmax" if name == "main" else name + "_softmax"
    return layers.Activation("softmax", dtype="float32", name=softmax_name)(x)


# === Model ===

def pspnet(n_classes, input_height, input_width, backbone="vanilla", aux_branch=False):
    """PSPNet. Input size (every backbone): height and width multiples of 16, at least 96, so
    the vanilla backbone's stride-16 map holds the 6x6 pyramid bins (the stride-8 backbones
    would take less; one rule keeps the option independent of the size).

    `backbone`: "vanilla" (default), "mobilenet" (MobileNetV2) or "resnet50".
    `aux_branch`: add the auxiliary head; the model then returns two outputs,
    [main, aux] (see the module docstring).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes) float32
    softmax probabilities (or a list of two such outputs).
    """
    inputs = image_input(input_height, input_width)
    aux_features, features = ENCODERS[backbone](inputs)
    channels = features.shape[-1]
    x = pyramid_pooling(features)
    outputs = classifier(x, channels // 4, n_classes, input_height, input_width, "main")
    if aux_branch:
        aux = classifier(aux_features, channels // 8, n_classes, input_height, input_width, "aux")
        outputs = [outputs, aux]
    suffix = "" if backbone == "vanilla" else "_" + backbone
    return keras.Model(inputs, outputs, name="pspnet" + suffix)
