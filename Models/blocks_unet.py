"""Blocks shared by the UNet family (attunet, r2unet, r2attunet, seunet, scseunet).

Every block is a plain function on Keras tensors built from stock layers, so
the models save and reload with `safe_mode=True` without custom objects.
`unet_family` wires an encoder-decoder from three interchangeable parts: the
per-stage `block`, the decoder's `upsample` and an optional skip `gate`.
"""
from keras import layers

from Models.common import batch_norm, conv_bn


# === Decoder upsampling ===

def up_conv(x, filters, name):
    """2x nearest upsampling, then 3x3 conv-BN-ReLU to `filters` (the "up-convolution" of
    Attention U-Net and R2U-Net)."""
    x = layers.UpSampling2D(2, name=name + "_upsample")(x)
    return conv_bn(x, filters, name=name + "_upconv")


def transposed_up(x, filters, name):
    """2x2 stride-2 transposed conv to `filters`, as in Models/unet.py."""
    return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=name + "_up")(x)


# === Attention gate (Oktay et al. 2018) ===

def attention_gate(x, g, filters, name):
    """Additive attention gate: x * sigmoid(BN(psi(relu(BN(W_x x) + BN(W_g g))))).

    W_x and W_g are 1x1 convs to filters // 2 channels (the paper's F_int), psi a
    1x1 conv to one channel. `x` is the encoder skip, `g` the gating signal: the up-sampled decoder
    feature at the same resolution (the form used by the common
    re-implementations; the paper computes the gate at the coarser scale and
    resamples it). Each pixel of `x` is scaled by one coefficient in (0, 1).
    """
    inter_filters = max(1, filters // 2)
    linear = dict(padding="valid", activation=None, kernel_initializer="glorot_uniform", names=("{}", "{}_bn", ""))
    theta = conv_bn(x, inter_filters, 1, name=name + "_wx", **linear)
    phi = conv_bn(g, inter_filters, 1, name=name + "_wg", **linear)
    f = layers.Activation("relu", name=name + "_relu")(layers.Add(name=name + "_add")([theta, phi]))
    psi = conv_bn(f, 1, 1, name=name + "_psi", **linear)
    alpha = layers.Activation("sigmoid", name=name + "_alpha")(psi)
    return layers.Multiply(name=name + "_gated")([x, alpha])


# === Recurrent residual unit (Alom et al. 2018) ===

def recurrent_conv(x, filters, steps, name):
    """Recurrent conv layer: h(0) = f(w_f * x), h(t) = f(w_f * x + w_r * h(t-1)) for t = 1..steps.

    One feed-forward kernel w_f and one recurrent kernel w_r (shared over the
    steps, as in the paper's equation); f is BN + ReLU with its own BN per step
    because the statistics change from step to step.
    """
    forward = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                            name=name + "_wf")(x)
    recurrent = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                              name=name + "_wr")
    h = forward
    for step in range(steps + 1):
        if step:
            h = layers.Add(name=f"{name}_add{step}")([forward, recurrent(h)])
        h = batch_norm(f"{name}_bn{step}")(h)
        h = layers.Activation("relu", name=f"{name}_relu{step}")(h)
    return h


def rrcnn_block(x, filters, name, steps=2):
    """Recurrent residual unit: a 1x1 conv to `filters`, two recurrent conv layers, and the
    1x1 output added back (the residual)."""
    x = layers.Conv2D(filters, 1, kernel_initializer="he_normal", name=name + "_proj")(x)
    y = recurrent_conv(x, filters, steps, name + "_rcl1")
    y = recurrent_conv(y, filters, steps, name + "_rcl2")
    return layers.Add(name=name + "_residual")([x, y])


# === Squeeze-and-excitation (Hu et al. 2018; Roy et al. 2018) ===

def channel_se(x, ratio, name, min_units=4):
    """Channel SE: global average pool, FC to channels/ratio (at least `min_units`) + ReLU,
    FC back + sigmoid, scale each channel of `x`."""
    channels = x.shape[-1]
    z = layers.GlobalAveragePooling2D(keepdims=True, name=name + "_squeeze")(x)
    z = layers.Dense(max(channels // ratio, min_units), activation="relu", name=name + "_fc1")(z)
    z = layers.Dense(channels, activation="sigmoid", name=name + "_fc2")(z)
    return layers.Multiply(name=name + "_scale")([x, z])


def spatial_se(x, name):
    """Spatial SE: a 1x1 conv to one sigmoid map, scale each pixel of `x`."""
    q = layers.Conv2D(1, 1, activation="sigmoid", name=name + "_conv")(x)
    return layers.Multiply(name=name + "_scale")([x, q])


def scse(x, ratio, name):
    """Concurrent spatial and channel SE: cSE(x) + sSE(x) (the 2018 paper's addition)."""
    return layers.Add(name=name + "_add")([channel_se(x, ratio, name + "_cse", min_units=1),
                                           spatial_se(x, name + "_sse")])


# === Encoder-decoder ===

def unet_family(inputs, filters, block, upsample=up_conv, gate=None):
    """UNet wiring with len(filters) - 1 poolings; returns the full-resolution features.

    block(x, filters, name) -> x: each encoder/bottleneck/decoder stage.
    upsample(x, filters, name) -> x: 2x upsampling to the skip's width.
    gate(skip, g, filters, name) -> skip: optional, applied to each skip before concatenation.
    """
    skips, x = [], inputs
    for level, width in enumerate(filters[:-1]):
        x = block(x, width, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, filters[-1], "bottleneck")
    for level in reversed(range(len(filters) - 1)):
        x = upsample(x, filters[level], f"dec{level}")
        skip = skips[level] if gate is None else gate(skips[level], x, filters[level], f"att{level}")
        x = layers.Concatenate(name=f"dec{level}_concat")([skip, x])
        x = block(x, filters[level], f"dec{level}")
    return x
