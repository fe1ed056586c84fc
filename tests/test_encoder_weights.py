"""--encoder_weights: keras.applications weights into the encoders, with their own preprocessing.

Nothing here downloads: the weight files are keras.applications models built with weights=None,
given values of their own so that "loaded" cannot pass by chance.
"""
import importlib.util
import json
import os
import time

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, read_log, run_script, run_without, write_dataset
from utils.encoder_weights import FAMILIES, encoder_models, fetch_imagenet, imagenet_file
from utils.errors import UserError

# One model per family (smallest sizes the models take), for the preprocessing checks.
FAMILY_MODELS = {"MobileNet": ("mobilenet_unet",), "MobileNetV2": ("deeplab_v3+", "--backbone", "mobilenet"),
                 "Xception": ("unet_xception_resnetblock",), "ResNet50": ("pspnet", "--backbone", "resnet50"),
                 "VGG16": ("vggunet",)}


def train_choices(*flags, size=96):
    """train.py's flags resolved as it resolves them (keras-free), -> (args, Choices)."""
    import train
    args = train.parse_args(["--input_height", str(size), "--input_width", str(size), *map(str, flags)])
    return args, train.resolve_names(args)


def numbered(reference, seed=0):
    """Give every weight of `reference` its own random values (variances positive); -> reference."""
    from utils.training import weighted_layers
    rng = np.random.default_rng(seed)
    for layer in weighted_layers(reference):
        layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") if "variance" in w.path
                           else rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    return reference


def reference_model(family, seed=0, size=32):
    import keras
    spec = FAMILIES[family]
    return numbered(getattr(keras.applications, spec.constructor)(
        weights=None, include_top=False, input_shape=(size, size, 3), **spec.kwargs), seed)


def assert_encoder_equals(model, reference, names):
    import keras
    for name in names:
        ours = [keras.ops.convert_to_numpy(w) for w in model.get_layer(name).weights]
        theirs = [keras.ops.convert_to_numpy(w) for w in reference.get_layer(name).weights]
        assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs)), name


# === Which models, which preprocessing (keras-free choices) ===

def test_the_models_that_take_it():
    assert set(encoder_models()) == {"mobilenet_unet", "mobilenet_fcn8", "pspnet --backbone mobilenet",
                                     "pspnet --backbone resnet50", "deeplab_v3+ --backbone mobilenet", "vggunet",
                                     "deeplab_v2", "unet_xception_resnetblock"}


@pytest.mark.parametrize("family", list(FAMILY_MODELS))
def test_pipeline_input_equals_keras_applications_preprocess_input(family, tmp_path):
    """A PNG read and preprocessed as train.py does with --encoder_weights equals
    keras.applications.<family>.preprocess_input of the RGB image."""
    import keras
    from PIL import Image

    from data import Preprocessing
    from utils.image import read_image
    rgb = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    model_flags = FAMILY_MODELS[family]
    args, choices = train_choices("--model_name", *model_flags, "--encoder_weights", "imagenet")
    assert choices.encoder_family == family
    prep = Preprocessing(32, 40, args.image_init, 1, 255, args.channel_order)  # same size: no resampling
    ours = prep.image(read_image(str(tmp_path / "x.png")))
    expected = getattr(keras.applications, FAMILIES[family].module).preprocess_input(rgb.astype("float32"))
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(expected), atol=1e-5)
    assert not np.allclose(ours, ours[..., ::-1], atol=1e-3)  # the channel order matters for this image


def test_without_encoder_weights_nothing_changes():
    args, choices = train_choices("--model_name", "mobilenet_unet")
    assert (choices.encoder_family, args.image_init, args.channel_order, args.encoder_weights) == \
        (None, "divide", "bgr", "none")


def test_contradicting_image_init_is_an_error():
    with pytest.raises(UserError, match="--image_init divide contradicts --encoder_weights"):
        train_choices("--model_name", "mobilenet_unet", "--encoder_weights", "imagenet", "--image_init", "divide")
    with pytest.raises(UserError, match="--channel_order rgb contradicts"):
        train_choices("--model_name", "vggunet", "--encoder_weights", "imagenet", "--channel_order", "rgb")
    args, _ = train_choices("--model_name", "vggunet", "--encoder_weights", "imagenet", "--image_init", "sub_mean")
    assert (args.image_init, args.channel_order) == ("sub_mean", "bgr")


@pytest.mark.parametrize("flags", [("--model_name", "unet"), ("--model_name", "deeplab_v3+", "--backbone", "xception")])
def test_model_without_such_encoder_lists_the_models_that_take_it(flags):
    with pytest.raises(UserError) as caught:
        train_choices(*flags, "--encoder_weights", "imagenet")
    message = str(caught.value)
    assert "has no keras.applications encoder" in message and "\n" not in message
    assert "mobilenet_unet" in message and "pspnet --backbone resnet50" in message


def test_flag_errors_answer_before_keras_loads():
    code = ("import train\n"
            "args = train.parse_args(['--model_name', 'unet', '--encoder_weights', 'imagenet'])\n"
            "try:\n    train.resolve_names(args)\nexcept Exception as exc:\n    print(type(exc).__name__)\n")
    result = run_without(code)
    assert result.returncode == 0 and result.stdout.strip() == "UserError", result.stdout + result.stderr


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="--encoder_weights"):
        train_choices("--model_name", "vggunet", "--encoder_weights", str(tmp_path / "nope.h5"))


# === The ImageNet file: keras.applications' own, from its cache ===

def test_imagenet_files_are_those_of_keras_applications():
    from keras.src.applications import mobilenet, mobilenet_v2, resnet, vgg16, xception
    assert imagenet_file("MobileNet", 64, 64) == (
        "mobilenet_2_5_224_tf_no_top.h5", mobilenet.BASE_WEIGHT_PATH + "mobilenet_2_5_224_tf_no_top.h5", None)
    assert imagenet_file("MobileNet", 128, 128)[0] == "mobilenet_2_5_128_tf_no_top.h5"
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert imagenet_file("MobileNetV2", 96, 96) == (name, mobilenet_v2.BASE_WEIGHT_PATH + name, None)
    assert imagenet_file("Xception", 96, 96)[1:] == (xception.WEIGHTS_PATH_NO_TOP, "b0042744bf5b25fce3cb969f33bebb97")
    assert imagenet_file("VGG16", 96, 96)[1:] == (vgg16.WEIGHTS_PATH_NO_TOP, "6d6bbae143d832006294945121d1f1fc")
    name, url, md5 = imagenet_file("ResNet50", 96, 96)
    assert (url, md5) == (resnet.BASE_WEIGHTS_PATH + name, resnet.WEIGHTS_HASHES["resnet50"][1])


def test_imagenet_takes_the_cached_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / "mobilenet_2_5_224_tf_no_top.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"placed by hand")
    assert fetch_imagenet("MobileNet", 64, 64) == str(cached)


def test_imagenet_offline_is_one_line_within_seconds(tmp_path, monkeypatch):
    from utils.encoder_weights import _reachable
    if _reachable("https://storage.googleapis.com/", timeout=2) is None:
        pytest.skip("this machine reaches the keras.applications host")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(UserError) as caught:
        fetch_imagenet("MobileNet", 64, 64)
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert "\n" not in message and "mobilenet_2_5_224_tf_no_top.h5" in message
    assert os.path.join(str(tmp_path), "models", "mobilenet_2_5_224_tf_no_top.h5") in message
    assert "--encoder_weights PATH" in message
    assert not (tmp_path / "models").exists() or not os.listdir(tmp_path / "models")  # nothing half-written


# === Loading: every encoder layer, from each kind of file ===

@pytest.mark.parametrize("suffix", [".weights.h5", ".h5", ".keras"])
def test_every_encoder_layer_loads_from_each_file_kind(suffix, tmp_path, capsys):
    from Models import build_model
    from utils.encoder_weights import load_encoder_weights
    reference = reference_model("MobileNet")
    path = str(tmp_path / f"mobilenet{suffix}")
    reference.save_weights(path) if suffix == ".weights.h5" else reference.save(path)
    model = build_model("mobilenet_unet", 2, 32, 32)
    names = load_encoder_weights(model, "MobileNet", path, 32, 32)
    # conv1 + conv1_bn, then conv_dw_i, conv_dw_i_bn, conv_pw_i, conv_pw_i_bn for blocks 1-11.
    assert len(names) == 2 + 4 * 11
    assert_encoder_equals(model, reference, names)
    # conv kernels: 1 + 11 * 2 arrays; BN: 4 arrays each for 1 + 11 * 2 layers.
    assert "loaded 46 layers (115 weight arrays)" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_another_familys_file_names_the_layer(suffix, tmp_path):
    from Models import build_model
    from utils.encoder_weights import load_encoder_weights
    vgg = reference_model("VGG16")
    path = str(tmp_path / f"vgg16{suffix}")
    vgg.save_weights(path) if suffix == ".weights.h5" else vgg.save(path)
    model = build_model("mobilenet_unet", 2, 32, 32)
    with pytest.raises(UserError) as caught:
        load_encoder_weights(model, "MobileNet", path, 32, 32)
    message = str(caught.value)
    assert "\n" not in message and path in message and "conv1" in message


# (layers, weight arrays) that load per model: docs/pretrained.md's table. MobileNet: conv1 + 4 layers per
# block (13 blocks; mobilenet_unet 11); MobileNetV2 without its Conv_1 head; Xception without block 14
# and the unnamed shortcuts; ResNet50 and VGG16 whole.
LOADED = {"mobilenet_unet": (46, 115), "mobilenet_fcn8": (54, 135), "pspnet --backbone mobilenet": (102, 255),
          "deeplab_v3+ --backbone mobilenet": (102, 255), "pspnet --backbone resnet50": (106, 318),
          "vggunet": (13, 26), "deeplab_v2": (13, 26), "unet_xception_resnetblock": (68, 202)}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(LOADED))
def test_layers_loaded_per_model(case, tmp_path):
    from Models import get_entry
    from utils.encoder_weights import load_encoder_weights
    name, _, backbone = case.partition(" --backbone ")
    options = {"backbone": backbone} if backbone else {}
    family = get_entry(name).encoder_family(options)
    reference = reference_model(family, size=96)
    path = str(tmp_path / "family.weights.h5")
    reference.save_weights(path)
    model = get_entry(name).build(2, 96, 96, **options)
    names = load_encoder_weights(model, family, path, 96, 96)
    assert (len(names), sum(len(model.get_layer(n).weights) for n in names)) == LOADED[case]
    assert_encoder_equals(model, reference, names)


# === End to end: train.py, its checkpoint, config.json and test.py ===

@pytest.mark.slow
def test_train_with_encoder_file_and_freeze_epochs(tmp_path):
    from utils.inference import load_keras_model
    root, save = str(tmp_path / "data"), str(tmp_path / "w")
    write_dataset(root, n_train=4, n_test=2)
    reference = reference_model("MobileNet", seed=3)
    weights = str(tmp_path / "mobilenet.weights.h5")
    reference.save_weights(weights)
    result = run_script("train.py", "--data_root", root, "--dataset_name", "tiny", "--model_name", "mobilenet_unet",
                        "--input_height", 32, "--input_width", 32, "--train_save_path", save, "--epochs", 1,
                        "--tensorboard_images", 0, "--encoder_weights", weights, "--freeze_epochs", 1)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "encoder weights: loaded 46 layers (115 weight arrays)" in result.stdout
    assert "46 pretrained layers frozen" in result.stdout
    run_dir = os.path.join(save, "exp1", "mobilenet_unet")
    with open(os.path.join(run_dir, "config.json")) as handle:
        config = json.load(handle)
    assert (config["image_init"], config["channel_order"], config["encoder_family"]) == \
        ("sub_and_divide", "rgb", "MobileNet")
    assert len(config["frozen_layers"]) == 46 and len(read_log(run_dir)) == 1
    checkpoint = load_keras_model(os.path.join(run_dir, "resume-epoch001.keras"))
    assert_encoder_equals(checkpoint, reference, config["frozen_layers"])  # BN statistics included

    spec = importlib.util.spec_from_file_location("test_script", os.path.join(ROOT, "test.py"))
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    args = test_script.parse_args(["--weights_path", run_dir])
    test_script.resolve_settings(args)
    assert (args.image_init, args.channel_order) == ("sub_and_divide", "rgb")

    exported = str(tmp_path / "model.tflite")
    result = run_script("tools/export.py", "--weights_path", run_dir, "--format", "tflite", "--output", exported)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(exported + ".json") as handle:
        assert json.load(handle)["channel_order"] == "RGB"
    args = test_script.parse_args(["--weights_path", exported])
    test_script.resolve_settings(args)
    assert (args.image_init, args.channel_order) == ("sub_and_divide", "rgb")


@pytest.mark.slow
def test_imagenet_offline_from_train_py(tmp_path):
    from utils.encoder_weights import _reachable
    if _reachable("https://storage.googleapis.com/", timeout=2) is None:
        pytest.skip("this machine reaches the keras.applications host")
    root = str(tmp_path / "data")
    write_dataset(root, n_train=2, n_test=1)
    result = run_script("train.py", "--data_root", root, "--dataset_name", "tiny", "--model_name", "mobilenet_fcn8",
                        "--input_height", 32, "--input_width", 32, "--train_save_path", str(tmp_path / "w"),
                        "--epochs", 1, "--encoder_weights", "imagenet", env={"KERAS_HOME": str(tmp_path / "k")})
    assert_one_line_error(result, "mobilenet_2_5_224_tf_no_top.h5", str(tmp_path / "k" / "models"),
                          "--encoder_weights PATH")
