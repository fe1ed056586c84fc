"""Registered custom layers and initializers the models share (no `Lambda` anywhere).

Every class here is registered under the "segmentation" package and returns
all its constructor arguments from `get_config`, so a model using it saves to
`.keras` and reloads with `keras.models.load_model(path, safe_mode=True)` once
this module is imported (importing `Models` does that). Only keras.ops is used,
so the layers run on the TensorFlow, JAX and torch backends.
"""
import keras
import numpy as np
from keras import layers, ops

PACKAGE = "segmentation"


# === Resizing ===

def _bilinear_weights(out_size, in_size):
    """(out_size, in_size) weights of half-pixel bilinear sampling, as TensorFlow's resize computes
    it without antialiasing: source coordinate (i + 0.5) * in/out - 0.5, clamped to the edges."""
    source = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    lower = np.floor(source).astype(int)
    upper = np.minimum(lower + 1, in_size - 1)
    fraction = source - lower
    weights = np.zeros((out_size, in_size), np.float32)
    np.add.at(weights, (np.arange(out_size), lower), 1 - fraction)
    np.add.at(weights, (np.arange(out_size), upper), fraction)
    return weights


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeTo(layers.Layer):
    """Resize (B, h, w, C) feature maps to a fixed (height, width), bilinear by default.

    Half-pixel sampling (`keras.ops.image.resize`, no antialiasing); for an
    exact 2x downsample that equals a 2x2 average. The output keeps the input dtype.
    """

    def __init__(self, height, width, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        self.height = int(height)
        self.width = int(width)
        self.interpolation = interpolation

    def build(self, input_shape):
        # Bilinear as two small matrix products with interpolation weights fixed at build time: the
        # same numbers as half-pixel `ops.image.resize`, but ONNX gets MatMuls instead of a Resize
        # whose float scale (e.g. 6 -> 14: 2.333...) onnxruntime rounds to a 13-pixel output.
        self._rows = self._cols = None
        if self.interpolation == "bilinear" and input_shape[1] is not None and input_shape[2] is not None:
            self._rows = _bilinear_weights(self.height, int(input_shape[1]))
            self._cols = _bilinear_weights(self.width, int(input_shape[2]))

    def call(self, inputs):
        if self._rows is None:
            outputs = ops.image.resize(inputs, (self.height, self.width), interpolation=self.interpolation,
                                       data_format="channels_last")
            return ops.cast(outputs, inputs.dtype)
        rows = ops.cast(self._rows, inputs.dtype)
        cols = ops.cast(self._cols, inputs.dtype)
        outputs = ops.einsum("oh,bhwc->bowc", rows, inputs)
        return ops.einsum("pw,bowc->bopc", cols, outputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width, interpolation=self.interpolation)
        return config


# === Adaptive average pooling (pyramid pooling bins) ===

@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveAvgPool2D(layers.Layer):
    """Average (B, H, W, C) over a `bins` x `bins` grid -> (B, bins, bins, C), like PyTorch's
    AdaptiveAvgPool2d: bin i covers rows floor(i*H/bins) .. ceil((i+1)*H/bins) - 1.

    H and W must be known when the model is built. `keras.layers.AdaptiveAveragePooling2D`
    (Keras 3.13, TF backend) fails inside a compiled graph when a bin is the whole map
    (bins=1), hence this layer.
    """

    def __init__(self, bins, **kwargs):
        super().__init__(**kwargs)
        self.bins = int(bins)

    def call(self, inputs):
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        n = self.bins
        if height % n == 0 and width % n == 0:
            grid = ops.reshape(inputs, (-1, n, height // n, n, width // n, channels))
            return ops.mean(grid, axis=(2, 4))
        rows = []
        for i in range(n):
            top, bottom = i * height // n, -(-(i + 1) * height // n)
            cells = [ops.mean(inputs[:, top:bottom, j * width // n:-(-(j + 1) * width // n), :], axis=(1, 2),
                              keepdims=True) for j in range(n)]
            rows.append(ops.concatenate(cells, axis=2))
        return ops.concatenate(rows, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(bins=self.bins)
        return config


# === Max unpooling with the pooling indices (SegNet, ENet) ===

@keras.saving.register_keras_serializable(package=PACKAGE)
class MaxUnpool2D(layers.Layer):
    """Undo a 2x2 stride-2 max pooling: put each value back where its window's maximum was.

    Called on `[values, reference]`: `values` (B, h, w, C) is the tensor to
    unpool, `reference` (B, 2h, 2w, C) the tensor that was max-pooled. The
    position of the maximum of each 2x2 window of `reference` (the first one in
    row-major order on ties) receives the value, the other three get 0: the
    "pooling indices" of SegNet/ENet, recomputed from the pooled tensor instead
    of stored, which needs no backend-specific argmax pooling op. Gradients flow
    to `values` only; the positions are constants.
    """

    def call(self, inputs):
        values, reference = inputs
        shape = ops.shape(reference)
        height, width, channels = shape[1], shape[2], shape[3]
        h, w = height // 2, width // 2
        windows = ops.reshape(reference, (-1, h, 2, w, 2, channels))
        windows = ops.reshape(ops.transpose(windows, (0, 1, 3, 5, 2, 4)), (-1, h, w, channels, 4))
        # One-hot of the first maximum, without argmax: Keras' TensorFlow argmax bit-casts floats (to
        # order -0.0 before 0.0), ops that ONNX converters cannot translate.
        is_max = ops.cast(windows >= ops.max(windows, axis=-1, keepdims=True), values.dtype)
        where = is_max * ops.cast(ops.equal(ops.cumsum(is_max, axis=-1), 1), values.dtype)
        outputs = ops.reshape(where * ops.expand_dims(values, -1), (-1, h, w, channels, 2, 2))
        outputs = ops.transpose(outputs, (0, 1, 4, 2, 5, 3))
        return ops.reshape(outputs, (-1, height, width, channels))

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[1])


# === Channel padding (ENet's downsampling shortcut) ===

@keras.saving.register_keras_serializable(package=PACKAGE)
class PadChannels(layers.Layer):
    """Zero-pad the channel axis of (B, H, W, C) up to `channels` (ENet's shortcut branch)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, inputs):
        extra = self.channels - inputs.shape[-1]
        return ops.pad(inputs, ((0, 0), (0, 0), (0, 0), (0, extra)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config


# === Dilated convolution with a fast gradient (DeepLab v2's ASPP) ===

@keras.saving.register_keras_serializable(package=PACKAGE)
class AtrousConv2D(layers.Conv2D):
    """`Conv2D(..., padding="same", dilation_rate=rate)` computed as one matmul over shifted inputs.

    Same weights (kernel (k, k, in, out), bias), names and outputs as the plain
    dilated Conv2D, so weight files load either way. Why: TensorFlow's CPU
    gradient of a dilated conv (space-to-batch) is ~100x slower than the
    forward pass (one 3x3 512->1024 conv at rate 24 on a 4x4 map: 72 s).
    Here each kernel tap is a shifted slice of the zero-padded input; taps
    that land entirely in the padding (offset >= the map size) contribute
    exactly 0 and are skipped. Only stride 1, odd kernels, "same" padding
    and channels_last take this path; anything else is a plain Conv2D.
    """

    def _fast_path(self, inputs):
        return (self.padding == "same" and tuple(self.strides) == (1, 1) and self.groups == 1
                and self.data_format == "channels_last" and max(self.dilation_rate) > 1
                and all(k % 2 for k in self.kernel_size) and None not in tuple(inputs.shape[1:3]))

    def convolution_op(self, inputs, kernel):
        if not self._fast_path(inputs):
            return super().convolution_op(inputs, kernel)
        (kh, kw), (rh, rw) = self.kernel_size, self.dilation_rate
        height, width = inputs.shape[1], inputs.shape[2]
        top, left = (kh - 1) // 2 * rh, (kw - 1) // 2 * rw
        taps = [(i, j) for i in range(kh) for j in range(kw)
                if abs(i * rh - top) < height and abs(j * rw - left) < width]
        pad_h = min(top, height - 1)
        pad_w = min(left, width - 1)
        padded = ops.pad(inputs, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
        slices = [padded[:, i * rh - top + pad_h:i * rh - top + pad_h + height,
                         j * rw - left + pad_w:j * rw - left + pad_w + width, :] for i, j in taps]
        columns = slices[0] if len(slices) == 1 else ops.concatenate(slices, axis=-1)
        weights = ops.concatenate([kernel[i, j] for i, j in taps], axis=0)
        # A 2-D matmul: a (B, H, W, K) x (K, N) one broadcasts the weights per row and is much slower.
        outputs = ops.matmul(ops.reshape(columns, (-1, columns.shape[-1])), weights)
        return ops.reshape(outputs, (-1, height, width, self.filters))


# === Initializers ===

def bilinear_profile(size):
    """The 1-D weights of FCN's bilinear upsampling filter of length `size`."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1 - np.abs(np.arange(size) - center) / factor


@keras.saving.register_keras_serializable(package=PACKAGE)
class BilinearUpsampling(keras.initializers.Initializer):
    """Conv2DTranspose kernel (k, k, out, in) that starts as per-channel bilinear upsampling.

    FCN initialises its learnable upsampling layers this way; channel i maps to
    channel i only (for i < min(out, in)), every other weight starts at 0.
    """

    def __call__(self, shape, dtype=None):
        kernel = np.zeros(shape, dtype="float32")
        filt = np.outer(bilinear_profile(shape[0]), bilinear_profile(shape[1]))
        for channel in range(min(shape[2], shape[3])):
            kernel[:, :, channel, channel] = filt
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}
