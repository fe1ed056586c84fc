"""tools/model_summary.py: multiply-adds per op type against hand-computed counts."""
import keras
import pytest
from keras import layers

from tools.model_summary import forward_macs, legal_size


def single_layer_model(layer, height=16, width=12):
    inputs = keras.Input((height, width, 3))
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("layer, expected", [
    (layers.Conv2D(8, 3, padding="same"), 16 * 12 * 8 * 3 * 3 * 3),           # out pixels x Cout x k*k*Cin
    (layers.Conv2D(8, 3, strides=2, padding="same"), 8 * 6 * 8 * 27),
    (layers.Conv2D(8, 3, padding="same", dilation_rate=2), 16 * 12 * 8 * 27),  # dilation adds no work
    (layers.DepthwiseConv2D(3, padding="same"), 16 * 12 * 3 * 9),             # out values x k*k
    (layers.Conv2DTranspose(5, 2, strides=2), 16 * 12 * 3 * 2 * 2 * 5),       # in values x k*k*Cout
    (layers.Dense(7), 16 * 12 * 3 * 7),
    (layers.BatchNormalization(), 0),                                         # element-wise: not counted
])
def test_forward_macs_per_op(layer, expected):
    assert forward_macs(single_layer_model(layer), 16, 12) == expected


def test_legal_size_rounds_up_to_the_rule():
    from Models import MODELS
    assert legal_size(MODELS["unet"], 224, 230) == (224, 240)
    assert legal_size(MODELS["icnet"], 128, 128) == (192, 192)
    assert legal_size(MODELS["deeplab_v3+"], 200, 200, {"downsample_factor": 16}) == (208, 208)
    assert legal_size(MODELS["deeplab_v3+"], 36, 36, {"downsample_factor": 8}) == (40, 40)
    assert legal_size(MODELS["deeplab_v3+"], 36, 36) == (48, 48)  # the default output stride is 16


def test_variants_one_row_per_backbone():
    from tools.model_summary import VARIANTS
    assert VARIANTS == {
        # pspnet's default row keeps the plain name: the seed's table has a count for it.
        "pspnet": [({}, "pspnet"), ({"backbone": "mobilenet"}, "pspnet (backbone mobilenet)"),
                   ({"backbone": "resnet50"}, "pspnet (backbone resnet50)")],
        "deeplab_v3+": [({"backbone": "mobilenet"}, "deeplab_v3+ (backbone mobilenet)"),
                        ({"backbone": "xception"}, "deeplab_v3+ (backbone xception)")],
    }


def test_summary_row_from_the_entry():
    from tools.model_summary import rows
    (row,) = rows(["enet"], 36, 36, 2)
    assert row["name"] == "enet" and row["size"] == "40x40" and row["resized"]
    assert row["rule"] == "height and width multiples of 8"
    assert row["params"] == 370_865 and row["seed"] == 371558


def test_encoder_column_counts_the_layers_that_encoder_weights_loads():
    """The README's "ImageNet encoder" column; 46 of MobileNet's 54 weighted layers is what loading a
    weights file into mobilenet_unet loads (tests/test_encoder_weights.py::LOADED)."""
    from Models import build_model
    from tools.model_summary import encoder_column
    assert encoder_column(build_model("mobilenet_unet", 2, 64, 64), "MobileNet") == "MobileNet α 0.25 (46/54)"
    assert encoder_column(build_model("unet", 2, 32, 32), None) == "-"
