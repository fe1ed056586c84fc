"""UNet++ (Zhou et al., 2018): nested, densely connected skip pathways between UNet stages."""
import keras
from keras import layers

from Models.common import image_input, segmentation_head
from Models.unet import double_conv

FILTERS = (32, 64, 128, 256, 512)


def _head_probabilities(features, n_classes):
    """Deep supervision: one 1x1 head per top node x(0, j); the output is the mean of their
    softmax probabilities (the paper's "accurate" inference mode)."""
    probs = []
    for j, x in enumerate(features, start=1):
        logits = layers.Conv2D(n_classes, 1, padding="same", name=f"logits_{j}")(x)
        probs.append(layers.Activation("softmax", dtype="float32", name=f"softmax_{j}")(logits))
    return layers.Average(dtype="float32", name="softmax")(probs)


def nested_unet(n_classes, input_height, input_width, deep_supervision=False):
    """UNet++. Input size: height and width multiples of 16 (4 poolings).

    Node x(i, j) (depth i, column j) is two 3x3 conv-BN-ReLU on the concatenation
    of x(i, 0..j-1) and the bilinear 2x upsampling of x(i+1, j-1). The output
    head reads x(0, 4); with `deep_supervision=True` every x(0, 1..4) gets a
    head and the output is the mean of their probabilities, so one loss on the
    output trains all four heads (the paper sums a loss per head instead, which
    would need a multi-output training loop). Returns a model mapping
    (B, H, W, 3) images to (B, H, W, n_classes) float32 softmax probabilities.
    """
    inputs = image_input(input_height, input_width)
    nodes = {}
    for i, width in enumerate(FILTERS):
        below = inputs if i == 0 else layers.MaxPooling2D(2, name=f"pool{i - 1}")(nodes[i - 1, 0])
        nodes[i, 0] = double_conv(below, width, f"x{i}_0")
        # The new column-0 node completes one anti-diagonal of nodes x(i - j, j).
        for j in range(1, i + 1):
            depth = i - j
            up = layers.UpSampling2D(2, interpolation="bilinear", name=f"x{depth}_{j}_up")(nodes[depth + 1, j - 1])
            x = layers.Concatenate(name=f"x{depth}_{j}_concat")([nodes[depth, k] for k in range(j)] + [up])
            nodes[depth, j] = double_conv(x, FILTERS[depth], f"x{depth}_{j}")
    top = [nodes[0, j] for j in range(1, len(FILTERS))]
    outputs = _head_probabilities(top, n_classes) if deep_supervision else segmentation_head(top[-1], n_classes)
    return keras.Model(inputs, outputs, name="nested_unet")
