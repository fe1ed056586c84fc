"""The model registry (Models/__init__.py, Models/registry.py): entries, options, CLI flags, size rules.

Everything here but the last section runs without building a model; the registry itself must not
even import keras.
"""
import argparse
import inspect

import pytest

import Models
from conftest import run_without
from Models import MODEL_OPTIONS, MODELS, add_model_arguments, get_entry, given_options
from Models.size_rules import InputSizeError, SizeRule
from utils.errors import UserError

# The CLI names in the order the seed listed them (and `--model_name` errors list them).
NAMES = ["enet", "fcn8", "unet", "attunet", "r2unet", "r2attunet", "unet++", "seunet", "scseunet", "segnet",
         "icnet", "pspnet", "mobilenet_unet", "mobilenet_fcn8", "vggunet", "unet_xception_resnetblock",
         "deeplab_v2", "hrnet", "deeplab_v3+"]
# What each model takes: option -> (valid values, default).
TAKES = {
    "unet++": {"deep_supervision": ((False, True), False)},
    "pspnet": {"backbone": (("vanilla", "mobilenet", "resnet50"), "vanilla"), "aux_branch": ((False, True), False)},
    "hrnet": {"hrnet_width": ((18, 32), 32)},
    "deeplab_v3+": {"backbone": (("mobilenet", "xception"), "mobilenet"), "downsample_factor": ((8, 16), 16)},
}
# (name, options) -> keras.applications family of the encoder, for every option that changes it.
FAMILIES = {
    ("mobilenet_unet", ()): "MobileNet", ("mobilenet_fcn8", ()): "MobileNet",
    ("pspnet", ("vanilla",)): None, ("pspnet", ("mobilenet",)): "MobileNetV2", ("pspnet", ("resnet50",)): "ResNet50",
    ("vggunet", ()): "VGG16", ("deeplab_v2", ()): "VGG16", ("unet_xception_resnetblock", ()): "Xception",
    ("deeplab_v3+", ("mobilenet",)): "MobileNetV2", ("deeplab_v3+", ("xception",)): None,
}


# === Import cost ===

def test_import_models_loads_no_keras():
    code = ("import Models; e = Models.get_entry('deeplab_v3+'); e.resolve({'backbone': 'xception'}); "
            "e.check_size(64, 64, {}); import argparse; Models.add_model_arguments(argparse.ArgumentParser())")
    result = run_without(code, modules=("keras", "tensorflow", "jax", "torch"))
    assert result.returncode == 0, result.stderr


# === Names ===

def test_models_is_a_plain_dict_in_cli_order():
    assert type(MODELS) is dict and list(MODELS) == NAMES
    assert all(entry.name == name for name, entry in MODELS.items())


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserError) as err:
        get_entry("unet3")
    assert str(err.value) == "--model_name 'unet3' is unknown; valid names: " + ", ".join(NAMES)


# === Options ===

@pytest.mark.parametrize("name", NAMES)
def test_resolve_fills_defaults(name):
    expected = {option: default for option, (_, default) in TAKES.get(name, {}).items()}
    assert get_entry(name).resolve({}) == expected
    assert get_entry(name).resolve(None) == expected
    assert get_entry(name).resolve({option: None for option in MODEL_OPTIONS if option in expected}) == expected


@pytest.mark.parametrize("name", NAMES)
def test_resolve_rejects_an_option_the_model_does_not_take(name):
    foreign = next(option for option in MODEL_OPTIONS if option not in TAKES.get(name, {}))
    takes = ", ".join(f"--{option}" for option in TAKES.get(name, {})) or "no options"
    with pytest.raises(UserError) as err:
        get_entry(name).resolve({foreign: True})
    assert str(err.value) == f"--{foreign} is not an option of --model_name {name} (it takes: {takes})"


def test_resolve_messages_as_the_cli_prints_them():
    cases = [
        ("unet", {"deep_supervision": True}, "--deep_supervision is not an option of --model_name unet "
                                             "(it takes: no options)"),
        ("deeplab_v3+", {"aux_branch": True}, "--aux_branch is not an option of --model_name deeplab_v3+ "
                                              "(it takes: --backbone, --downsample_factor)"),
        ("pspnet", {"backbone": "resnet"}, "--backbone resnet is not valid for pspnet; valid: vanilla, mobilenet, "
                                           "resnet50"),
        ("deeplab_v3+", {"downsample_factor": 4}, "--downsample_factor 4 is not valid for deeplab_v3+; valid: 8, 16"),
        ("hrnet", {"hrnet_width": 48}, "--hrnet_width 48 is not valid for hrnet; valid: 18, 32"),
        ("unet++", {"deep_supervision": "maybe"}, "--deep_supervision maybe is not valid for unet++; "
                                                  "valid: false, true"),
        ("hrnet", {"hrnet_width": True}, "--hrnet_width true is not valid for hrnet; valid: 18, 32"),
    ]
    for name, options, message in cases:
        with pytest.raises(UserError) as err:
            get_entry(name).resolve(options)
        assert str(err.value) == message


@pytest.mark.parametrize("name", list(TAKES))
def test_resolve_accepts_every_valid_value_and_its_cli_spelling(name):
    entry = get_entry(name)
    for option, (valid, _) in TAKES[name].items():
        for value in valid:
            for given in (value, str(value).lower()):
                resolved = entry.resolve({option: given})
                assert resolved[option] == value and type(resolved[option]) is type(value), (option, given)


def test_model_options_are_the_union_of_the_entries_options():
    assert list(MODEL_OPTIONS) == ["backbone", "downsample_factor", "aux_branch", "deep_supervision", "hrnet_width"]
    assert set(MODEL_OPTIONS) == {option for entry in MODELS.values() for option in entry.options}
    for name, option in MODEL_OPTIONS.items():
        assert option.name == name
        takers = [entry for entry in MODELS.values() if name in entry.options]
        for entry in takers:  # the help names every model that takes it, with its values and default
            choice = entry.options[name]
            assert f"{entry.name}: {choice.text(mark_default=True)}" in option.help
            assert f"{Models.registry.show(choice.default)} (default)" in option.help
            for value in choice.valid:  # the flag's parser turns the CLI text into the valid value
                assert option.parse(str(value).lower()) == value


def test_add_model_arguments_one_flag_each_default_none():
    parser = argparse.ArgumentParser()
    group = add_model_arguments(parser)
    assert group.title == "model options (only for the models that take them)"
    assert sorted(action.dest for action in group._group_actions) == sorted(MODEL_OPTIONS)
    args = parser.parse_args([])
    assert all(getattr(args, option) is None for option in MODEL_OPTIONS)
    assert given_options(args) == {}
    args = parser.parse_args(["--hrnet_width", "18", "--aux_branch", "false", "--downsample_factor", "8",
                              "--deep_supervision", "1", "--backbone", "xception"])
    assert given_options(args) == {"hrnet_width": 18, "aux_branch": False, "downsample_factor": 8,
                                   "deep_supervision": True, "backbone": "xception"}


def test_model_option_help_texts():
    assert {name: option.help for name, option in MODEL_OPTIONS.items()} == {
        "backbone": "encoder network. pspnet: vanilla (default), mobilenet, resnet50; "
                    "deeplab_v3+: mobilenet (default), xception",
        "downsample_factor": "encoder output stride (ASPP rates 6/12/18 at 16, 12/24/36 at 8). deeplab_v3+: 8, "
                             "16 (default)",
        "aux_branch": "also train an auxiliary head, its loss weighted by --aux_weight. pspnet: false (default), true",
        "deep_supervision": "a head on each of the four top nodes; the output is their mean. unet++: false "
                            "(default), true",
        "hrnet_width": "HRNetV2 width C: branches of C, 2C, 4C and 8C channels. hrnet: 18, 32 (default)",
    }


# === Size rules ===

@pytest.mark.parametrize("name, options, rule", [
    ("enet", {}, SizeRule(8)), ("fcn8", {}, SizeRule(32)), ("unet", {}, SizeRule(16)),
    ("unet++", {"deep_supervision": True}, SizeRule(16)), ("icnet", {}, SizeRule(32, 192)),
    ("pspnet", {"backbone": "resnet50"}, SizeRule(16, 96)), ("hrnet", {"hrnet_width": 18}, SizeRule(32, 64)),
    ("deeplab_v3+", {}, SizeRule(16)), ("deeplab_v3+", {"downsample_factor": 8}, SizeRule(8)),
    ("deeplab_v3+", {"backbone": "xception", "downsample_factor": 16}, SizeRule(16)),
])
def test_size_rule_per_option_set(name, options, rule):
    assert get_entry(name).size_rule(options) == rule


def test_check_size_names_the_nearest_legal_sizes():
    entry = get_entry("deeplab_v3+")
    entry.check_size(40, 48, {"downsample_factor": 8})
    with pytest.raises(InputSizeError) as err:
        entry.check_size(40, 48, {})
    assert str(err.value) == "deeplab_v3+ needs height and width multiples of 16: --input_height 40 (nearest legal: " \
                             "32 or 48)"
    assert isinstance(err.value, UserError)
    with pytest.raises(InputSizeError) as err:
        get_entry("icnet").check_size(96, 200, None)
    assert str(err.value) == ("icnet needs height and width multiples of 32, at least 192: --input_height 96 "
                              "(nearest legal: 192); --input_width 200 (nearest legal: 192 or 224)")
    with pytest.raises(UserError, match="--hrnet_width 20 is not valid"):  # options are checked first
        get_entry("hrnet").check_size(64, 64, {"hrnet_width": 20})


# === Encoder families (tests/test_models_zoo_b.py checks the layer names behind them) ===

@pytest.mark.parametrize("name", NAMES)
def test_encoder_family(name):
    entry = get_entry(name)
    backbones = entry.options["backbone"].valid if "backbone" in entry.options else ()
    if not backbones:
        assert entry.encoder_family({}) == FAMILIES.get((name, ()))
    for backbone in backbones:
        assert entry.encoder_family({"backbone": backbone}) == FAMILIES[name, (backbone,)]


# === Builders (imports keras, builds nothing) ===

@pytest.mark.parametrize("name", NAMES)
def test_builder_signature_takes_exactly_the_entry_options(name):
    """The entry passes every resolved option as a keyword; the builder's own defaults agree with the entry's."""
    entry = get_entry(name)
    params = list(inspect.signature(entry.load_builder()).parameters.values())
    assert [p.name for p in params[:3]] == ["n_classes", "input_height", "input_width"]
    keywords = {p.name: p.default for p in params[3:]}
    for option, choice in entry.options.items():
        assert keywords.pop(option) == choice.default, option
    # Anything else (r2unet's recurrence steps) is a builder-only keyword with a default.
    assert all(default is not inspect.Parameter.empty for default in keywords.values())


@pytest.mark.parametrize("name", NAMES)
def test_builder_docstring_states_its_size_rule(name):
    entry = get_entry(name)
    doc = " ".join(entry.load_builder().__doc__.split())
    factors = entry.options.get("downsample_factor")
    for options in ([{"downsample_factor": f} for f in factors.valid] if factors else [{}]):
        rule = entry.size_rule(options)
        assert f"multiples of {rule.multiple}" in doc, options
        if rule.minimum:
            assert f"at least {rule.minimum}" in doc


def test_builder_tables_agree_with_the_entries():
    from Models import deeplab_v3_plus, pspnet
    assert tuple(pspnet.ENCODERS) == get_entry("pspnet").options["backbone"].valid
    assert tuple(deeplab_v3_plus.BACKBONES) == get_entry("deeplab_v3+").options["backbone"].valid
    assert set(deeplab_v3_plus.ATROUS_RATES) == set(get_entry("deeplab_v3+").options["downsample_factor"].valid)


# === Building through the entry ===

def test_hrnet_width_18_through_entry_build():
    # HRNetV2-W18's count (tests/test_models_zoo_b.py pins both widths at 224; convs do not depend on the size).
    model = get_entry("hrnet").build(2, 64, 64, hrnet_width="18")
    assert model.name == "hrnet_w18" and model.count_params() == 9_670_718


def test_entry_build_checks_the_size_before_building():
    with pytest.raises(InputSizeError, match="--input_height 100"):
        get_entry("unet").build(2, 100, 64)
