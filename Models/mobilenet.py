"""MobileNet v1 (Howard et al., 2017) encoder and the seed's two models on it.

The encoder is MobileNet v1 with width multiplier 0.25 (8, 16, 32, 32, 64, 64,
128 x 6, 256, 256 channels), the seed's encoder up to its first conv (the seed
used 16 filters there). Layer names (`conv1`, `conv1_bn`, `conv_dw_{i}`,
`conv_dw_{i}_bn`, `conv_pw_{i}`, `conv_pw_{i}_bn`) and weight shapes are those of
`keras.applications.MobileNet(alpha=0.25)`, so an ImageNet weights file can be
loaded by name; "same" padding changes no weight shape.

- `mobilenet_unet`: encoder to stride 16, UNet decoder (upsample, concatenate
  the encoder feature of the same stride, 3x3 conv-BN-ReLU) back to stride 2 as
  in the seed, plus one more upsampling stage so the output has the input's
  full resolution (the seed's stopped at half resolution).
- `mobilenet_fcn8`: the full encoder (stride 32) with the FCN-8s head of
  `Models/fcn8.py` on the stride 8, 16 and 32 features.
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input, segmentation_head
from Models.fcn8 import fcn8_head

# (pointwise filters at alpha 1, stride) of depthwise-separable blocks 1..13.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1))
ALPHA = 0.25
# keras.applications.MobileNet's conv + BN + ReLU6 (`conv_dw_1`, `conv_dw_1_bn`, `conv_dw_1_relu`).
KERAS_CONV = dict(activation="relu6", kernel_initializer="glorot_uniform", names=("{}", "{}_bn", "{}_relu"))


# === Encoder ===


def mobilenet_encoder(inputs, blocks=13, alpha=ALPHA):
    """MobileNet v1 features of `inputs` (B, H, W, 3) through block `blocks` (1..13).

    Returns {stride: tensor} with the last feature map at each stride reached:
    2 (block 1), 4 (block 3), 8 (block 5), 16 (block 11), 32 (block 13).
    """
    x = conv_bn(inputs, int(32 * alpha), 3, name="conv1", strides=2, **KERAS_CONV)
    features, stride = {}, 2
    for block_id, (filters, block_stride) in enumerate(BLOCKS[:blocks], start=1):
        x = conv_bn(x, None, 3, name=f"conv_dw_{block_id}", strides=block_stride, conv=layers.DepthwiseConv2D,
                    **KERAS_CONV)
        x = conv_bn(x, int(filters * alpha), 1, name=f"conv_pw_{block_id}", padding="valid", **KERAS_CONV)
        stride *= block_stride
        features[stride] = x
    return features


# === Models ===

def mobilenet_unet(n_classes, input_height, input_width):
    """MobileNet v1 (alpha 0.25) encoder + UNet decoder. Input size: height and width
    multiples of 16 (the encoder is used to stride 16).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    features = mobilenet_encoder(inputs, blocks=11)
    x = conv_bn(features[16], 128, name="dec_center")
    for stride, filters in ((8, 64), (4, 32), (2, 16)):
        x = layers.UpSampling2D(2, name=f"dec{stride}_up")(x)
        x = layers.Concatenate(name=f"dec{stride}_concat")([x, features[stride]])
        x = conv_bn(x, filters, name=f"dec{stride}")
    x = layers.UpSampling2D(2, name="dec1_up")(x)
    x = conv_bn(x, 16, name="dec1")
    return keras.Model(inputs, segmentation_head(x, n_classes), name="mobilenet_unet")


def mobilenet_fcn8(n_classes, input_height, input_width):
    """MobileNet v1 (alpha 0.25) encoder + FCN-8s head. Input size: height and width
    multiples of 32 (five stride-2 stages).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    features = mobilenet_encoder(inputs)
    outputs = fcn8_head(features[8], features[16], features[32], n_classes)
    return keras.Model(inputs, outputs, name="mobilenet_fcn8")
