"""Zoo part A: enet, fcn8, segnet, icnet, pspnet (3 backbones, aux head), mobilenet_unet,
mobilenet_fcn8, and the custom layers of Models/layers.py against numpy references."""
import os

import keras
import numpy as np
import pytest

from losses import get_loss
from Models import MODELS, build_model, get_entry
from Models.size_rules import InputSizeError
from Models.common import BN_MOMENTUM, batch_norm, conv_bn
from Models.layers import AdaptiveAvgPool2D, BilinearUpsampling, MaxUnpool2D, PadChannels, ResizeTo
from Models.mobilenet import mobilenet_encoder
from Models.pspnet import resnet50_encoder
from utils.inference import main_output_model
from utils.errors import UserError

N_CLASSES = 3

# (name, options, smallest legal size >= 32), one per model and PSPNet backbone
CASES = [
    pytest.param("enet", {}, 32, id="enet"),
    pytest.param("fcn8", {}, 32, id="fcn8"),
    pytest.param("segnet", {}, 32, id="segnet"),
    pytest.param("icnet", {}, 192, id="icnet"),
    pytest.param("pspnet", {}, 96, id="pspnet"),
    pytest.param("pspnet", {"backbone": "mobilenet"}, 96, id="pspnet_mobilenet"),
    pytest.param("pspnet", {"backbone": "resnet50"}, 96, id="pspnet_resnet50", marks=pytest.mark.slow),
    pytest.param("mobilenet_unet", {}, 32, id="mobilenet_unet"),
    pytest.param("mobilenet_fcn8", {}, 32, id="mobilenet_fcn8"),
]

# Parameters at 224x224x3, 2 classes: the numbers the README table reports.
PARAMS_224 = {
    "enet": ("enet", {}, 370_865),
    "fcn8": ("fcn8", {}, 3_674_998),
    "segnet": ("segnet", {}, 2_357_794),
    "icnet": ("icnet", {}, 6_726_338),
    "pspnet": ("pspnet", {}, 1_324_866),
    "pspnet_mobilenet": ("pspnet", {"backbone": "mobilenet"}, 2_408_226),
    "pspnet_resnet50": ("pspnet", {"backbone": "resnet50"}, 46_667_650),
    "pspnet_aux": ("pspnet", {"aux_branch": True}, 1_398_788),
    "mobilenet_unet": ("mobilenet_unet", {}, 409_170),
    "mobilenet_fcn8": ("mobilenet_fcn8", {}, 3_499_446),
}

# (name, rule multiple, rule minimum, an illegal size, the message's nearest legal sizes)
RULES = [
    ("enet", 8, 0, 36, "32 or 40"),
    ("fcn8", 32, 0, 48, "32 or 64"),
    ("segnet", 16, 0, 40, "32 or 48"),
    ("icnet", 32, 192, 160, "192"),
    ("pspnet", 16, 96, 64, "96"),
    ("mobilenet_unet", 16, 0, 40, "32 or 48"),
    ("mobilenet_fcn8", 32, 0, 80, "64 or 96"),
]


def _predict(model, images):
    # A direct call: no predict-function tracing, which is slow for the large graphs.
    return keras.ops.convert_to_numpy(model(images, training=False))


def _images(size, batch=2, seed=0):
    return np.random.default_rng(seed).random((batch, size, size, 3)).astype("float32")


def _labels(size, batch=2, seed=1):
    return np.random.default_rng(seed).integers(0, N_CLASSES, (batch, size, size)).astype("int32")


# === Registry and size rules ===

def test_registry_has_part_a():
    assert {"enet", "fcn8", "segnet", "icnet", "pspnet", "mobilenet_unet", "mobilenet_fcn8"} <= set(MODELS)


@pytest.mark.parametrize("name, multiple, minimum, illegal, nearest", RULES)
def test_illegal_size_names_rule_and_nearest_sizes(name, multiple, minimum, illegal, nearest):
    rule = get_entry(name).size_rule()
    assert (rule.multiple, rule.minimum) == (multiple, minimum)
    # The rule is documented where users read it.
    assert f"multiples of {multiple}" in get_entry(name).load_builder().__doc__
    with pytest.raises(InputSizeError) as err:
        build_model(name, N_CLASSES, illegal, rule.smallest if rule.smallest >= 32 else 64)
    message = str(err.value)
    assert message.startswith(f"{name} needs height and width multiples of {multiple}")
    assert f"--input_height {illegal} (nearest legal: {nearest})" in message
    assert "--input_width" not in message


def test_pspnet_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(UserError) as err:
        build_model("pspnet", N_CLASSES, 96, 96, backbone="xception")
    assert str(err.value) == "--backbone xception is not valid for pspnet; valid: vanilla, mobilenet, resnet50"


# === Outputs, training, serialisation ===

@pytest.mark.parametrize("name, options, size", CASES)
def test_build_train_step_and_keras_round_trip(name, options, size, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(name, N_CLASSES, size, size, **options)
    images = _images(size)
    probs = _predict(model, images)
    assert probs.shape == (2, size, size, N_CLASSES) and probs.dtype == np.float32
    assert probs.min() >= 0
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)

    # SGD and no XLA: tracing Adam's per-variable updates (ENet has 325 variables) or compiling
    # with XLA would take most of a minute on a small CPU.
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=get_loss("ce", N_CLASSES), jit_compile=False)
    loss = model.train_on_batch(images, _labels(size))
    assert np.isfinite(loss) and loss > 0

    # After a step the BN moving statistics differ from their initial values, so the
    # round trip also checks they are saved.
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    images = _images(size, seed=2)
    np.testing.assert_allclose(_predict(reloaded, images), _predict(model, images), atol=1e-6)


@pytest.mark.parametrize("case_id", list(PARAMS_224))
def test_parameter_count_at_224(case_id):
    # Graph construction only (no forward pass), so 224x224 stays cheap.
    name, options, expected = PARAMS_224[case_id]
    assert build_model(name, 2, 224, 224, **options).count_params() == expected


# === PSPNet specifics ===

def test_pspnet_aux_branch_two_outputs_weighted_loss_and_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model("pspnet", N_CLASSES, 96, 96, aux_branch=True)
    assert model.output_names == ["softmax", "aux_softmax"]
    model.compile(optimizer=keras.optimizers.SGD(1e-3),
                  loss=[get_loss("ce", N_CLASSES), get_loss("ce", N_CLASSES)], loss_weights=[1.0, 0.4],
                  jit_compile=False)
    images, labels = _images(96), _labels(96)
    logs = model.train_on_batch(images, (labels, labels), return_dict=True)
    assert logs["loss"] == pytest.approx(logs["softmax_loss"] + 0.4 * logs["aux_softmax_loss"], rel=1e-5)

    path = os.path.join(tmp_path, "pspnet_aux.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    main, aux = (keras.ops.convert_to_numpy(p) for p in reloaded(images, training=False))
    assert main.shape == aux.shape == (2, 96, 96, N_CLASSES)
    assert not np.allclose(main, aux)
    np.testing.assert_allclose(_predict(main_output_model(reloaded), images), main, atol=1e-6)


def test_pspnet_pyramid_reaches_the_output():
    """The seed's pyramid was dead code; here changing a pyramid conv changes the prediction."""
    keras.utils.set_random_seed(0)
    model = build_model("pspnet", 2, 96, 96)
    images = _images(96, batch=1)
    before = _predict(model, images)
    layer = model.get_layer("psp_pool6_conv")
    kernel = layer.get_weights()[0]
    layer.set_weights([kernel + np.random.default_rng(0).normal(0, 1, kernel.shape).astype("float32")])
    assert np.abs(_predict(model, images) - before).max() > 1e-4


# === Encoders load ImageNet weights by layer name ===

def _weight_shapes(model):
    return {f"{w.path.split('/')[0]}/{w.path.split('/')[-1]}": tuple(w.shape)
            for layer in model.layers for w in layer.weights}


def test_mobilenet_encoder_matches_keras_applications_names_and_shapes():
    inputs = keras.Input((64, 64, 3))
    mine = keras.Model(inputs, mobilenet_encoder(inputs)[32])
    reference = keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.25, include_top=False,
                                             weights=None)
    assert _weight_shapes(mine) == _weight_shapes(reference)


def test_resnet50_encoder_matches_keras_applications_names_and_shapes():
    inputs = keras.Input((64, 64, 3))
    mine = keras.Model(inputs, resnet50_encoder(inputs)[1])
    assert mine.output.shape[1:3] == (8, 8)  # output stride 8
    reference = keras.applications.ResNet50(input_shape=(64, 64, 3), include_top=False, weights=None)
    assert _weight_shapes(mine) == _weight_shapes(reference)


# === Custom layers against numpy ===

def test_max_unpool_puts_values_at_the_window_maxima():
    rng = np.random.default_rng(0)
    reference = rng.random((2, 4, 6, 3)).astype("float32")
    reference[0, 0:2, 0:2, 0] = 0.5  # a tie: the first position in row-major order wins
    values = rng.random((2, 2, 3, 3)).astype("float32")
    expected = np.zeros_like(reference)
    for b, i, j, c in np.ndindex(2, 2, 3, 3):
        k = np.argmax(reference[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c])
        expected[b, 2 * i + k // 2, 2 * j + k % 2, c] = values[b, i, j, c]
    got = keras.ops.convert_to_numpy(MaxUnpool2D()([values, reference]))
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0, 0, 0] == values[0, 0, 0, 0] and got[0, 1, 1, 0] == 0


@pytest.mark.parametrize("height, width, bins", [(6, 6, 6), (7, 5, 6), (6, 6, 1), (5, 9, 3), (3, 3, 6)])
def test_adaptive_avg_pool_matches_pytorch_bins_in_a_compiled_model(height, width, bins):
    x = np.random.default_rng(0).random((2, height, width, 4)).astype("float32")
    expected = np.zeros((2, bins, bins, 4), "float32")
    for i, j in np.ndindex(bins, bins):
        rows = slice(i * height // bins, -(-(i + 1) * height // bins))
        cols = slice(j * width // bins, -(-(j + 1) * width // bins))
        expected[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    inputs = keras.Input((height, width, 4))
    model = keras.Model(inputs, AdaptiveAvgPool2D(bins)(inputs))
    # predict() runs a compiled graph, where keras' own AdaptiveAveragePooling2D fails for bins=1.
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_pad_channels_appends_zero_channels():
    x = np.random.default_rng(0).random((1, 2, 2, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(PadChannels(5)(x))
    np.testing.assert_array_equal(got[..., :3], x)
    np.testing.assert_array_equal(got[..., 3:], 0)


def test_resize_to_half_is_a_2x2_average():
    x = np.random.default_rng(0).random((1, 8, 6, 2)).astype("float32")
    got = keras.ops.convert_to_numpy(ResizeTo(4, 3)(x))
    np.testing.assert_allclose(got, x.reshape(1, 4, 2, 3, 2, 2).mean(axis=(2, 4)), atol=1e-6)


def test_bilinear_upsampling_initializer():
    kernel = keras.ops.convert_to_numpy(BilinearUpsampling()((4, 4, 2, 3)))
    profile = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(kernel[:, :, 0, 0], np.outer(profile, profile))
    np.testing.assert_allclose(kernel[:, :, 1, 1], np.outer(profile, profile))
    assert not kernel[:, :, 0, 1].any() and not kernel[:, :, 1, 0].any() and not kernel[:, :, :, 2].any()
    # A 2x transposed conv with this kernel turns a constant map into the same constant inside.
    layer = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=BilinearUpsampling())
    up = keras.ops.convert_to_numpy(layer(np.full((1, 5, 5, 1), 3.0, "float32")))
    np.testing.assert_allclose(up[0, 1:-1, 1:-1, 0], 3.0, rtol=1e-6)


# === Shared conv-BN helper (Models/common.py) ===

@pytest.mark.parametrize("activation, reference, layer_class", [
    (None, lambda z: z, None), ("relu", lambda z: np.maximum(z, 0), "Activation"),
    ("relu6", lambda z: np.clip(z, 0, 6), "ReLU"), ("leaky_relu", lambda z: np.where(z > 0, z, 0.1 * z), "LeakyReLU")])
def test_conv_bn_computes_activation_of_batch_norm_of_conv(activation, reference, layer_class):
    inputs = keras.Input((4, 5, 2))
    model = keras.Model(inputs, conv_bn(inputs, 3, 1, name="b", activation=activation, epsilon=1e-5,
                                        names=("{}", "bn_{}", "{}_act")))
    assert [layer.name for layer in model.layers[1:]] == ["b", "bn_b"] + (["b_act"] if activation else [])
    if layer_class:
        assert model.layers[-1].__class__.__name__ == layer_class
    bn = model.get_layer("bn_b")
    assert (bn.momentum, bn.epsilon) == (BN_MOMENTUM, 1e-5) and not model.get_layer("b").use_bias
    rng = np.random.default_rng(0)
    gamma, beta, mean, var = rng.uniform(0.5, 2, 3), rng.normal(0, 1, 3), rng.normal(0, 1, 3), rng.uniform(0.5, 2, 3)
    bn.set_weights([gamma, beta, mean, var])
    kernel = model.get_layer("b").get_weights()[0]
    x = rng.normal(0, 3, (1, 4, 5, 2)).astype("float32")
    expected = reference((x @ kernel[0, 0] - mean) / np.sqrt(var + 1e-5) * gamma + beta)
    np.testing.assert_allclose(_predict(model, x), expected, rtol=1e-4, atol=1e-4)


def test_conv_bn_default_names_and_depthwise():
    inputs = keras.Input((8, 8, 4))
    x = conv_bn(inputs, 6, name="a", strides=2)
    x = conv_bn(x, None, 3, name="d", conv=keras.layers.DepthwiseConv2D, dilation_rate=2, activation=None)
    model = keras.Model(inputs, batch_norm("extra", epsilon=1e-5)(x))
    assert [layer.name for layer in model.layers[1:]] == ["a_conv", "a_bn", "a_relu", "d_conv", "d_bn", "extra"]
    assert model.output.shape[1:] == (4, 4, 6)
    assert model.get_layer("d_conv").dilation_rate == (2, 2) and model.get_layer("extra").momentum == BN_MOMENTUM
