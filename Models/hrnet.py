"""HRNetV2 for semantic segmentation (Wang et al., 2019, "Deep High-Resolution Representation Learning").

Stem: two 3x3 stride-2 convs (64). Stage 1: four bottlenecks (256). Stages
2/3/4 keep 2/3/4 parallel branches of widths C, 2C, 4C, 8C at strides 4, 8,
16, 32, with 1/4/3 modules of four basic blocks per branch followed by a
multi-resolution fusion (1x1 conv + bilinear upsampling from lower branches,
chains of 3x3 stride-2 convs from higher ones). Head (HRNetV2): all four
branches upsampled bilinearly to stride 4, concatenated (15C), 1x1 conv + BN
+ ReLU, 1x1 conv to classes, bilinear x4 to the input size.

hrnet_width=32 (HRNetV2-W32) matches the seed's 28.6M-parameter table entry
(within 10%); hrnet_width=18 (HRNetV2-W18) its other README version's 9.5M.
Layer names mirror the official PyTorch module paths with "_" for ".".
"""
import keras
from keras import layers

from Models.common import conv_bn, image_input

MODULES = {2: 1, 3: 4, 4: 3}  # modules per stage
BN_EPSILON = 1e-5  # the official implementation's (PyTorch's default)
BLOCKS_PER_BRANCH = 4


# === Residual units ===

def bottleneck(x, planes, name):
    """1x1 -> 3x3 -> 1x1 (4*planes) with a projected shortcut when the width changes."""
    shortcut = x
    if x.shape[-1] != planes * 4:
        shortcut = conv_bn(x, planes * 4, 1, name=name + "_downsample", epsilon=BN_EPSILON, activation=None)
    y = conv_bn(x, planes, 1, name=name + "_1", epsilon=BN_EPSILON)
    y = conv_bn(y, planes, 3, name=name + "_2", epsilon=BN_EPSILON)
    y = conv_bn(y, planes * 4, 1, name=name + "_3", epsilon=BN_EPSILON, activation=None)
    return layers.Activation("relu", name=name + "_out")(layers.Add(name=name + "_add")([y, shortcut]))


def basic_block(x, planes, name):
    y = conv_bn(x, planes, 3, name=name + "_1", epsilon=BN_EPSILON)
    y = conv_bn(y, planes, 3, name=name + "_2", epsilon=BN_EPSILON, activation=None)
    return layers.Activation("relu", name=name + "_out")(layers.Add(name=name + "_add")([y, x]))


# === Multi-resolution parts ===

def transition(branches, channels, name):
    """Adapt existing branches to `channels` (3x3 conv where the width differs) and add a stride-2 branch."""
    out = []
    for i, width in enumerate(channels):
        if i < len(branches):
            same = branches[i].shape[-1] == width
            out.append(branches[i] if same else conv_bn(branches[i], width, 3, name=f"{name}_{i}", epsilon=BN_EPSILON))
        else:
            out.append(conv_bn(branches[-1], width, 3, name=f"{name}_{i}", strides=2, epsilon=BN_EPSILON))
    return out


def fuse(branches, channels, name):
    """Every output branch i sums all inputs brought to its resolution and width, then ReLU."""
    out = []
    for i, width in enumerate(channels):
        terms = []
        for j, y in enumerate(branches):
            if j > i:
                y = conv_bn(y, width, 1, name=f"{name}_{i}_{j}", epsilon=BN_EPSILON, activation=None)
                y = layers.UpSampling2D(2 ** (j - i), interpolation="bilinear", name=f"{name}_{i}_{j}_up")(y)
            elif j < i:
                for k in range(i - j):
                    last = k == i - j - 1
                    y = conv_bn(y, width if last else channels[j], 3, name=f"{name}_{i}_{j}_{k}", strides=2,
                                epsilon=BN_EPSILON, activation=None if last else "relu")
            terms.append(y)
        out.append(layers.Activation("relu", name=f"{name}_{i}_relu")(layers.Add(name=f"{name}_{i}_add")(terms)))
    return out


def stage(branches, channels, n_modules, name):
    for m in range(n_modules):
        branches = [_run_blocks(x, width, f"{name}_{m}_branches_{b}") for b, (x, width) in
                    enumerate(zip(branches, channels))]
        branches = fuse(branches, channels, f"{name}_{m}_fuse")
    return branches


def _run_blocks(x, width, name):
    for k in range(BLOCKS_PER_BRANCH):
        x = basic_block(x, width, f"{name}_{k}")
    return x


def hrnet(n_classes, input_height, input_width, hrnet_width=32):
    """HRNetV2-W{hrnet_width} (hrnet_width 32 or 18). Input size: height and width multiples of 32 (the fourth
    branch runs at stride 32), at least 64: at 32 that branch is 1x1, its batch norms see one value
    per image and the first training steps blow the weights up (gradients ~1e5 measured).

    Returns a model mapping (B, H, W, 3) images to (B, H, W, n_classes)
    float32 softmax probabilities.
    """
    c = int(hrnet_width)
    inputs = image_input(input_height, input_width)

    # === Stem and stage 1 (stride 4) ===
    x = conv_bn(inputs, 64, 3, name="stem1", strides=2, epsilon=BN_EPSILON)
    x = conv_bn(x, 64, 3, name="stem2", strides=2, epsilon=BN_EPSILON)
    for k in range(4):
        x = bottleneck(x, 64, f"layer1_{k}")

    # === Stages 2-4 ===
    branches = [x]
    for n_branches in (2, 3, 4):
        channels = [c * 2 ** b for b in range(n_branches)]
        branches = transition(branches, channels, f"transition{n_branches - 1}")
        branches = stage(branches, channels, MODULES[n_branches], f"stage{n_branches}")

    # === HRNetV2 head ===
    upsampled = [branches[0]] + [
        layers.UpSampling2D(2 ** b, interpolation="bilinear", name=f"head_up{b}")(y) for b, y in
        enumerate(branches[1:], start=1)]
    x = layers.Concatenate(name="head_concat")(upsampled)
    x = conv_bn(x, x.shape[-1], 1, name="last_layer", epsilon=BN_EPSILON)
    x = layers.Conv2D(n_classes, 1, name="logits")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="logits_upsample")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name=f"hrnet_w{c}")
