"""Model zoo, part B: vggunet, unet_xception_resnetblock, deeplab_v2, hrnet, deeplab_v3+.

Parameter counts are checked at 224x224x3 and 2 classes (the seed table's
setting) and, where the architecture allows, derived by hand from the seed's
number. Training/saving tests run at each model's smallest legal size >= 32.
"""
import functools

import numpy as np
import pytest

import keras
from losses import get_loss
from Models import MODELS, build_model, get_entry
from Models.size_rules import InputSizeError
from utils.errors import UserError

MOBILENET_16 = {"backbone": "mobilenet", "downsample_factor": 16}
MOBILENET_8 = {"backbone": "mobilenet", "downsample_factor": 8}
XCEPTION_16 = {"backbone": "xception", "downsample_factor": 16}
XCEPTION_8 = {"backbone": "xception", "downsample_factor": 8}

# (CLI name, builder options, smallest legal size >= 32)
CASES = [
    ("vggunet", {}, 32),
    ("unet_xception_resnetblock", {}, 32),
    ("deeplab_v2", {}, 32),
    ("hrnet", {}, 64),
    ("deeplab_v3+", MOBILENET_16, 32),
    ("deeplab_v3+", MOBILENET_8, 32),
    ("deeplab_v3+", XCEPTION_16, 32),
    ("deeplab_v3+", XCEPTION_8, 32),
]


def case_id(value):
    """Test ids: a model name as is, options as their values ("mobilenet-16"), others pytest's default."""
    if isinstance(value, dict):
        return "-".join(str(v) for v in value.values()) or "default"
    return value if isinstance(value, str) else None


def vgg16_conv_params():
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    return sum(9 * cin * cout + cout for cin, cout in zip(widths, widths[1:]))


# Seed table counts, adjusted by hand where this build deliberately differs.
PARAMS_224 = {
    # The seed's 3x3 conv + BN head (9*64*2 + 2 + 4*2) becomes a 1x1 conv (64*2 + 2); the decoder's
    # eight 3x3 convs lose their biases (BN follows): 2 * (512 + 256 + 128 + 64).
    ("vggunet",): 25_884_170 - (1162 - 130) - 2 * (512 + 256 + 128 + 64),
    # Same head change at 16 channels: (9*16*2 + 2 + 8) -> (16*2 + 2).
    ("unet_xception_resnetblock",): 38_431_730 - (298 - 34),
    # VGG-16 convs + 4 ASPP branches (fc6 3x3 512->1024, fc7 1x1 1024->1024, fc8 1x1 1024->2): the seed's count.
    ("deeplab_v2",): vgg16_conv_params() + 4 * ((9 * 512 + 1) * 1024 + (1024 + 1) * 1024 + (1024 + 1) * 2),
    # HRNetV2-W32 / W18 (seed: 28,608,672 / 9,524,168; see hrnet.py) and DeepLabV3+: regression values.
    ("hrnet",): 29_596_162,
    ("hrnet", 18): 9_670_718,
    ("deeplab_v3+", "mobilenet", 16): 2_753_714,
    ("deeplab_v3+", "mobilenet", 8): 2_753_714,
    ("deeplab_v3+", "xception", 16): 41_253_330,
    ("deeplab_v3+", "xception", 8): 41_253_330,
}


def model_224(name, *option_items):
    """The model at 224x224, 2 classes, built once per configuration (options with defaults filled)."""
    return _model_224(name, *sorted(get_entry(name).resolve(dict(option_items)).items()))


@functools.lru_cache(maxsize=None)
def _model_224(name, *option_items):
    return build_model(name, 2, 224, 224, **dict(option_items))


def options_key(name, options):
    return (name,) + tuple(options.values())


# === Size rules (no model is built) ===

@pytest.mark.parametrize("name, options, multiple, smallest", [
    ("vggunet", {}, 16, 16), ("unet_xception_resnetblock", {}, 32, 32), ("deeplab_v2", {}, 8, 8),
    ("hrnet", {}, 32, 64), ("hrnet", {"hrnet_width": 18}, 32, 64),
    ("deeplab_v3+", {}, 16, 16), ("deeplab_v3+", MOBILENET_8, 8, 8), ("deeplab_v3+", XCEPTION_16, 16, 16),
    ("deeplab_v3+", XCEPTION_8, 8, 8)], ids=case_id)
def test_size_rule_recorded(name, options, multiple, smallest):
    rule = MODELS[name].size_rule(options)
    assert (rule.multiple, rule.smallest) == (multiple, smallest)


@pytest.mark.parametrize("name, options, size, expected", [
    ("vggunet", {}, 40, "vggunet needs height and width multiples of 16: --input_height 40 (nearest legal: 32 or 48)"),
    ("unet_xception_resnetblock", {}, 48, "multiples of 32: --input_height 48 (nearest legal: 32 or 64)"),
    ("deeplab_v2", {}, 36, "multiples of 8: --input_height 36 (nearest legal: 32 or 40)"),
    ("hrnet", {}, 32, "multiples of 32, at least 64: --input_height 32 (nearest legal: 64)"),
    ("deeplab_v3+", {}, 40, "deeplab_v3+ needs height and width multiples of 16: --input_height 40 "
                            "(nearest legal: 32 or 48)"),
    ("deeplab_v3+", XCEPTION_8, 36, "deeplab_v3+ needs height and width multiples of 8: --input_height 36 "
                                    "(nearest legal: 32 or 40)"),
])
def test_size_rule_rejects_with_message(name, options, size, expected):
    with pytest.raises(InputSizeError) as info:
        build_model(name, 2, size, 64, **options)
    assert expected in str(info.value)
    assert "--input_width" not in str(info.value)  # 64 is legal for every rule here


def test_deeplab_v3_plus_rule_follows_downsample_factor():
    entry = get_entry("deeplab_v3+")
    assert entry.size_rule({"downsample_factor": 8}).multiple == 8
    assert entry.size_rule().multiple == 16
    assert entry.size_rule({"backbone": "xception", "downsample_factor": "16"}).multiple == 16  # CLI text too
    entry.check_size(40, 40, {"downsample_factor": 8})  # legal at output stride 8 only
    with pytest.raises(InputSizeError) as err:
        entry.check_size(40, 40, {"backbone": "xception"})
    assert str(err.value) == ("deeplab_v3+ needs height and width multiples of 16: --input_height 40 (nearest legal: "
                              "32 or 48); --input_width 40 (nearest legal: 32 or 48)")
    with pytest.raises(UserError) as err:
        entry.size_rule({"downsample_factor": 32})
    assert str(err.value) == "--downsample_factor 32 is not valid for deeplab_v3+; valid: 8, 16"
    with pytest.raises(UserError) as err:
        build_model("deeplab_v3+", 2, 64, 64, backbone="resnet")
    assert str(err.value) == "--backbone resnet is not valid for deeplab_v3+; valid: mobilenet, xception"


def test_hrnet_rejects_unknown_width():
    with pytest.raises(UserError) as err:
        build_model("hrnet", 2, 64, 64, hrnet_width=48)
    assert str(err.value) == "--hrnet_width 48 is not valid for hrnet; valid: 18, 32"
    with pytest.raises(UserError) as err:  # the option is --hrnet_width, as on the command line
        build_model("hrnet", 2, 64, 64, width=18)
    assert str(err.value) == "--width is not an option of --model_name hrnet (it takes: --hrnet_width)"


# === Parameter counts and architecture details at 224x224 (symbolic build only) ===

@pytest.mark.parametrize("key", list(PARAMS_224), ids=lambda k: "-".join(map(str, k)))
def test_param_count_224(key):
    name, values = key[0], key[1:]
    if name == "deeplab_v3+":
        options = dict(zip(("backbone", "downsample_factor"), values))
    else:
        options = {"hrnet_width": values[0]} if values else {}
    model = model_224(name, *options.items())
    assert model.count_params() == PARAMS_224[key]
    assert model.output.shape == (None, 224, 224, 2)


@pytest.mark.parametrize("options, rates, aspp_size", [
    (MOBILENET_16, (6, 12, 18), 14), (MOBILENET_8, (12, 24, 36), 28),
    (XCEPTION_16, (6, 12, 18), 14), (XCEPTION_8, (12, 24, 36), 28)], ids=case_id)
def test_deeplab_v3_plus_structure(options, rates, aspp_size):
    model = model_224("deeplab_v3+", *options.items())
    for branch, rate in enumerate(rates, start=1):
        assert model.get_layer(f"aspp{branch}_depthwise").dilation_rate == (rate, rate)
    assert model.get_layer("aspp0").output.shape[1:3] == (aspp_size, aspp_size)
    assert model.get_layer("image_pooling").output.shape[1:3] == (1, 1)
    assert model.get_layer("image_pooling_broadcast").output.shape[1:3] == (aspp_size, aspp_size)
    assert model.get_layer("feature_projection0").output.shape[1:] == (56, 56, 48)
    assert model.get_layer("decoder_conv1_pointwise").output.shape[1:] == (56, 56, 256)


@pytest.mark.parametrize("options, dilations", [
    # OS 16: block 13 keeps rate 1 at stride 1, blocks 14-16 at rate 2 (the article's code).
    (MOBILENET_16, {6: (2, 1), 7: (1, 1), 13: (1, 1), 14: (1, 2), 16: (1, 2)}),
    # OS 8: block 6 loses its stride, blocks 7-13 at rate 2, 14-16 at rate 4.
    (MOBILENET_8, {6: (1, 1), 7: (1, 2), 13: (1, 2), 14: (1, 4), 16: (1, 4)}),
], ids=case_id)
def test_mobilenetv2_output_stride(options, dilations):
    model = model_224("deeplab_v3+", *options.items())
    for block, (stride, rate) in dilations.items():
        layer = model.get_layer(f"block_{block}_depthwise")
        assert (layer.strides, layer.dilation_rate) == ((stride, stride), (rate, rate)), block


# Every (model, backbone) whose entry names a keras.applications encoder family, and the reference
# layers with weights that the model does not have (weights=None: nothing is downloaded).
ENCODER_CASES = {
    ("mobilenet_unet", None): {f"conv_{kind}_{block}{bn}" for kind in ("dw", "pw") for block in (12, 13)
                               for bn in ("", "_bn")},  # the UNet encoder stops at stride 16 (block 11)
    ("mobilenet_fcn8", None): set(),
    ("pspnet", "mobilenet"): {"Conv_1", "Conv_1_bn"},  # MobileNetV2's 1280-channel head is left out
    ("pspnet", "resnet50"): set(),
    ("vggunet", None): set(),
    ("deeplab_v2", None): set(),
    ("deeplab_v3+", "mobilenet"): {"Conv_1", "Conv_1_bn"},
    # Keras' Xception leaves its shortcut convs unnamed; block 13's tail and block 14 are not used.
    ("unet_xception_resnetblock", None): {"block14_sepconv1", "block14_sepconv1_bn", "block14_sepconv2",
                                          "block14_sepconv2_bn"},
}
APPLICATION_OPTIONS = {"MobileNet": {"alpha": 0.25}}


def _registry_encoder_cases():
    cases = set()
    for name, entry in MODELS.items():
        choice = entry.options.get("backbone")
        for backbone in (choice.valid if choice else (None,)):
            options = {"backbone": backbone} if backbone else {}
            if entry.encoder_family(options):
                cases.add((name, backbone))
    return cases


def test_encoder_cases_are_the_registry_families():
    assert _registry_encoder_cases() == set(ENCODER_CASES)


@pytest.mark.parametrize("name, backbone", list(ENCODER_CASES), ids=case_id)
def test_encoder_names_match_keras_applications(name, backbone):
    options = {"backbone": backbone} if backbone else {}
    application = get_entry(name).encoder_family(options)
    reference = getattr(keras.applications, application)(weights=None, include_top=False, input_shape=(224, 224, 3),
                                                         **APPLICATION_OPTIONS.get(application, {}))
    ours = {layer.name: layer for layer in model_224(name, *options.items()).layers}
    missing = set()
    for layer in reference.layers:
        if not layer.weights:
            continue
        if layer.name not in ours:
            missing.add(layer.name)
            continue
        assert [w.shape for w in ours[layer.name].weights] == [w.shape for w in layer.weights], layer.name
    if application == "Xception":
        missing = {n for n in missing if not n.startswith(("conv2d", "batch_normalization"))}
    assert missing == ENCODER_CASES[name, backbone]


def test_deeplab_v3_plus_xception_names_are_the_articles_not_keras_applications():
    """Why its entry names no family: not one weighted layer name of keras.applications.Xception occurs."""
    reference = keras.applications.Xception(weights=None, include_top=False, input_shape=(224, 224, 3))
    ours = {layer.name for layer in model_224("deeplab_v3+", *XCEPTION_16.items()).layers}
    assert get_entry("deeplab_v3+").encoder_family({"backbone": "xception"}) is None
    assert not {layer.name for layer in reference.layers if layer.weights} & ours


@pytest.mark.parametrize("rate, size, kernel_size", [(2, (7, 8), 3), (6, (4, 4), 3), (6, (7, 5), 3), (3, (5, 6), 5),
                                                     ((2, 3), (6, 6), 3), (24, (28, 28), 3)])
def test_atrous_conv_matches_dilated_conv(rate, size, kernel_size):
    """AtrousConv2D (the shifted-matmul dilated conv of deeplab_v2) against the backend's dilated conv,
    including taps that fall wholly into the padding (rate >= map size)."""
    from Models.layers import AtrousConv2D
    inputs = np.random.default_rng(1).normal(size=(2,) + size + (4,)).astype("float32")
    layer = AtrousConv2D(5, kernel_size, dilation_rate=rate, padding="same", bias_initializer="random_normal")
    layer.build(inputs.shape)
    expected = keras.ops.conv(inputs, layer.kernel, 1, "same", dilation_rate=rate) + layer.bias
    np.testing.assert_allclose(np.asarray(layer(inputs)), np.asarray(expected), atol=1e-5)


# === Build, one training step, save/reload (slow: large models) ===

@pytest.mark.slow
@pytest.mark.parametrize("name, options, size", CASES, ids=case_id)
def test_train_step_and_safe_reload(name, options, size, tmp_path):
    n_classes, rng = 3, np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = build_model(name, n_classes, size, size, **options)
    images = rng.random((2, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, n_classes, (2, size, size))

    probs = np.asarray(model(images, training=False))
    assert probs.shape == (2, size, size, n_classes) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)

    # Eager: tracing these graphs (up to ~1000 layers) costs far more than one 32x32 step;
    # the compiled path is what train.py exercises end to end.
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=get_loss("ce", n_classes), run_eagerly=True)
    before = [np.array(w) for w in model.trainable_weights]
    loss = float(model.train_on_batch(images, labels))
    assert np.isfinite(loss) and 0 < loss < 10
    changed = sum(not np.array_equal(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights))
    assert changed > 0.9 * len(before)  # gradients reach (almost) every weight
    trained = np.asarray(model(images, training=False))
    assert np.isfinite(trained).all()

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images, training=False)), trained, rtol=0, atol=1e-6)
