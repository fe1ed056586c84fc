"""The UNet family: registry, size rules, outputs, one training step, .keras round trip, blocks."""
import os

import keras
import numpy as np
import pytest

from losses import get_loss
from Models import MODELS, build_model, get_entry
from Models.blocks_unet import attention_gate, channel_se, recurrent_conv, spatial_se
from Models.size_rules import InputSizeError
from utils.errors import UserError

NAMES = ["unet", "attunet", "r2unet", "r2attunet", "unet++", "seunet", "scseunet"]
N_CLASSES = 3
SIZE = 32  # the smallest legal size of every model here (4 poolings)

# Parameters at 224x224x3, 2 classes: the numbers the README table reports.
PARAMS_224 = {
    "unet": 7_768_962,
    "attunet": 8_730_018,
    "r2unet": 17_657_826,
    "r2attunet": 17_747_042,
    "unet++": 9_167_010,
    "seunet": 1_973_762,
    "scseunet": 2_056_443,
}


def _predict(model, images):
    # A direct call: no predict-function tracing, which is slow for the large graphs.
    return keras.ops.convert_to_numpy(model(images, training=False))


def _images(batch=2, seed=0):
    return np.random.default_rng(seed).random((batch, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            cache[name] = build_model(name, N_CLASSES, SIZE, SIZE)
        return cache[name]
    return get


# === Registry and size rules ===

def test_registry_has_the_family():
    assert set(NAMES) <= set(MODELS)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UserError) as err:
        get_entry("unet+++")
    assert str(err.value) == "--model_name 'unet+++' is unknown; valid names: " + ", ".join(MODELS)
    for name in NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_illegal_size_names_rule_and_nearest_sizes(name):
    assert get_entry(name).size_rule().multiple == 16
    with pytest.raises(InputSizeError) as err:
        build_model(name, N_CLASSES, 40, 64)
    message = str(err.value)
    assert message.startswith(f"{name} needs height and width multiples of 16")
    assert "--input_height 40 (nearest legal: 32 or 48)" in message
    assert "--input_width" not in message  # 64 is legal


# === Outputs, training, serialisation ===

@pytest.mark.parametrize("name", NAMES)
def test_output_is_full_resolution_softmax(name, built):
    probs = _predict(built(name), _images())
    assert probs.shape == (2, SIZE, SIZE, N_CLASSES) and probs.dtype == np.float32
    assert probs.min() >= 0
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow  # ~10-35 s per model on a busy 2-core CPU (r2unet, r2attunet the slowest)
@pytest.mark.parametrize("name", NAMES)
def test_train_step_then_keras_round_trip(name, built, tmp_path):
    model = built(name)
    # Eager: tracing the r2unet training graph alone takes over a minute on a small CPU.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("ce", N_CLASSES), run_eagerly=True)
    labels = np.random.default_rng(1).integers(0, N_CLASSES, (2, SIZE, SIZE)).astype("int32")
    loss = model.train_on_batch(_images(), labels)
    assert np.isfinite(loss) and loss > 0

    # After a step the BN moving statistics differ from their initial values, so the
    # round trip also checks they are saved.
    path = os.path.join(tmp_path, f"{name}.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    images = _images(seed=2)
    np.testing.assert_allclose(_predict(reloaded, images), _predict(model, images), atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_at_224(name):
    # Graph construction only (no forward pass), so 224x224 stays cheap.
    assert build_model(name, 2, 224, 224).count_params() == PARAMS_224[name]


def test_unetpp_deep_supervision_averages_four_heads():
    keras.utils.set_random_seed(0)
    entry = get_entry("unet++")
    plain = entry.build(N_CLASSES, SIZE, SIZE)
    deep = entry.build(N_CLASSES, SIZE, SIZE, deep_supervision=True)
    head = 32 * N_CLASSES + N_CLASSES  # a 1x1 conv on the 32-channel top nodes
    assert deep.count_params() == plain.count_params() + 3 * head
    images = _images()
    probs = deep.predict(images, verbose=0)
    heads = keras.Model(deep.inputs, [deep.get_layer(f"softmax_{j}").output for j in range(1, 5)])
    np.testing.assert_allclose(probs, np.mean(heads.predict(images, verbose=0), axis=0), atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


# === Blocks against numpy references ===

def _conv3x3(x, kernel):
    """'same' 3x3 cross-correlation of x (H, W, Cin) with kernel (3, 3, Cin, Cout)."""
    h, w = x.shape[:2]
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    return sum(padded[a:a + h, b:b + w] @ kernel[a, b] for a in range(3) for b in range(3))


def _batch_norm(x, layer):
    gamma, beta, mean, var = layer.get_weights()
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def test_recurrent_conv_follows_the_paper_equation():
    """h(0) = f(w_f*x), h(t) = f(w_f*x + w_r*h(t-1)) with one shared w_r, f = BN + ReLU."""
    channels, steps = 4, 2
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, recurrent_conv(inputs, channels, steps, "rcl"))
    rng = np.random.default_rng(0)
    for step in range(steps + 1):  # non-trivial inference statistics, different per step
        bn = model.get_layer(f"rcl_bn{step}")
        bn.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels),
                        rng.normal(0, 0.1, channels), rng.uniform(0.5, 1.5, channels)])
    # one forward and one recurrent kernel, 3 BNs (4 numbers per channel each)
    assert model.count_params() == 9 * 3 * channels + 9 * channels * channels + (steps + 1) * 4 * channels

    x = rng.normal(size=(6, 6, 3)).astype("float64")
    w_f = model.get_layer("rcl_wf").get_weights()[0].astype("float64")
    w_r = model.get_layer("rcl_wr").get_weights()[0].astype("float64")
    forward = _conv3x3(x, w_f)
    h = np.maximum(_batch_norm(forward, model.get_layer("rcl_bn0")), 0)
    for step in range(1, steps + 1):
        h = np.maximum(_batch_norm(forward + _conv3x3(h, w_r), model.get_layer(f"rcl_bn{step}")), 0)
    got = model.predict(x[None].astype("float32"), verbose=0)[0]
    np.testing.assert_allclose(got, h, rtol=1e-4, atol=1e-5)


def test_attention_gate_scales_each_pixel_by_one_coefficient():
    x_in, g_in = keras.Input((8, 8, 6)), keras.Input((8, 8, 5))
    model = keras.Model([x_in, g_in], attention_gate(x_in, g_in, 6, "att"))
    assert model.get_layer("att_wx").get_weights()[0].shape == (1, 1, 6, 3)  # F_int = filters // 2
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.0, (1, 8, 8, 6)).astype("float32")
    g = rng.normal(size=(1, 8, 8, 5)).astype("float32")
    ratio = model.predict([x, g], verbose=0) / x
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[..., :1], ratio.shape), rtol=1e-5)
    assert 0 < ratio.min() and ratio.max() < 1 and ratio.std() > 0


def test_channel_and_spatial_se_scale_along_their_axes():
    inputs = keras.Input((8, 8, 16))
    model = keras.Model(inputs, [channel_se(inputs, 8, "cse"), spatial_se(inputs, "sse")])
    assert model.get_layer("cse_fc1").units == 4  # 16 // 8 would be 2; the floor is 4
    x = np.random.default_rng(0).uniform(0.5, 2.0, (1, 8, 8, 16)).astype("float32")
    cse, sse = (out / x for out in model.predict(x, verbose=0))
    np.testing.assert_allclose(cse, np.broadcast_to(cse[:, :1, :1], cse.shape), rtol=1e-5)  # per channel
    np.testing.assert_allclose(sse, np.broadcast_to(sse[..., :1], sse.shape), rtol=1e-5)  # per pixel
    for ratio in (cse, sse):
        assert 0 < ratio.min() and ratio.max() < 1
