"""The model registry: one `ModelEntry` per CLI name, and the model options' CLI flags.

Importing this package does not import keras: each entry loads its builder on
the first `build`, so `--help`, flag errors and the option and size checks
answer at once. `entry.build(n_classes, height, width, **options)` checks the
options and the input size, then returns a Keras model from (B, H, W, 3) images
to (B, H, W, n_classes) float32 softmax probabilities.

Adding a model: its own file with a plain builder function, and one entry in
MODELS below (a new option also gets a line in OPTION_FLAGS).

Loading a saved model needs the custom layers registered: `import Models.layers`
(that import loads keras).
"""
from Models.registry import ByOption, Choice, ModelEntry, ModelOption
from Models.size_rules import InputSizeError, SizeRule
from utils.cli import str2bool
from utils.errors import UserError

__all__ = ["MODELS", "MODEL_OPTIONS", "ModelEntry", "ModelOption", "Choice", "ByOption", "SizeRule",
           "InputSizeError", "get_entry", "add_model_arguments", "given_options", "build_model"]

BOOL = (False, True)

# === The models, in the CLI's order ===

MODELS = {entry.name: entry for entry in (
    ModelEntry("enet", "Models.enet:enet", SizeRule(8)),
    ModelEntry("fcn8", "Models.fcn8:fcn8", SizeRule(32)),
    ModelEntry("unet", "Models.unet:unet", SizeRule(16)),
    ModelEntry("attunet", "Models.attunet:attunet", SizeRule(16)),
    ModelEntry("r2unet", "Models.r2unet:r2unet", SizeRule(16)),
    ModelEntry("r2attunet", "Models.r2attunet:r2attunet", SizeRule(16)),
    ModelEntry("unet++", "Models.nested_unet:nested_unet", SizeRule(16),
               options={"deep_supervision": Choice(BOOL, False)}),
    ModelEntry("seunet", "Models.seunet:seunet", SizeRule(16)),
    ModelEntry("scseunet", "Models.scseunet:scseunet", SizeRule(16)),
    ModelEntry("segnet", "Models.segnet:segnet", SizeRule(16)),
    ModelEntry("icnet", "Models.icnet:icnet", SizeRule(32, minimum=192)),
    # One rule for every backbone: the vanilla one's stride-16 map must hold the 6x6 pyramid bins.
    ModelEntry("pspnet", "Models.pspnet:pspnet", SizeRule(16, minimum=96),
               options={"backbone": Choice(("vanilla", "mobilenet", "resnet50"), "vanilla"),
                        "aux_branch": Choice(BOOL, False)},
               encoder=ByOption("backbone", {"vanilla": None, "mobilenet": "MobileNetV2", "resnet50": "ResNet50"})),
    ModelEntry("mobilenet_unet", "Models.mobilenet:mobilenet_unet", SizeRule(16), encoder="MobileNet"),
    ModelEntry("mobilenet_fcn8", "Models.mobilenet:mobilenet_fcn8", SizeRule(32), encoder="MobileNet"),
    ModelEntry("vggunet", "Models.vggunet:vggunet", SizeRule(16), encoder="VGG16"),
    ModelEntry("unet_xception_resnetblock", "Models.unet_xception_resnetblock:unet_xception_resnetblock",
               SizeRule(32), encoder="Xception"),
    ModelEntry("deeplab_v2", "Models.deeplab_v2:deeplab_v2", SizeRule(8), encoder="VGG16"),
    ModelEntry("hrnet", "Models.hrnet:hrnet", SizeRule(32, minimum=64),
               options={"hrnet_width": Choice((18, 32), 32)}),
    # The input must divide by the output stride. The aligned Xception's names are the DeepLabV3+
    # article's (entry_flow_...), not keras.applications.Xception's.
    ModelEntry("deeplab_v3+", "Models.deeplab_v3_plus:deeplab_v3_plus",
               ByOption("downsample_factor", {8: SizeRule(8), 16: SizeRule(16)}),
               options={"backbone": Choice(("mobilenet", "xception"), "mobilenet"),
                        "downsample_factor": Choice((8, 16), 16)},
               encoder=ByOption("backbone", {"mobilenet": "MobileNetV2", "xception": None})),
)}

# === Options: one CLI flag each, shared by the models that take it ===

# option name -> (parse, what it means); the help adds which models take it and their values.
OPTION_FLAGS = {
    "backbone": (str, "encoder network"),
    "downsample_factor": (int, "encoder output stride (ASPP rates 6/12/18 at 16, 12/24/36 at 8)"),
    "aux_branch": (str2bool, "also train an auxiliary head, its loss weighted by --aux_weight"),
    "deep_supervision": (str2bool, "a head on each of the four top nodes; the output is their mean"),
    "hrnet_width": (int, "HRNetV2 width C: branches of C, 2C, 4C and 8C channels"),
}


def _option_help(name, meaning):
    takers = "; ".join(f"{entry.name}: {entry.options[name].text(mark_default=True)}"
                       for entry in MODELS.values() if name in entry.options)
    return f"{meaning}. {takers}"


MODEL_OPTIONS = {name: ModelOption(name, parse, _option_help(name, meaning))
                 for name, (parse, meaning) in OPTION_FLAGS.items()}


# === API ===

def get_entry(name):
    """The registered model `name`; an unknown name is a UserError listing the valid ones."""
    if name not in MODELS:
        raise UserError(f"--model_name {name!r} is unknown; valid names: {', '.join(MODELS)}")
    return MODELS[name]


def add_model_arguments(parser):
    """One flag per MODEL_OPTIONS entry, default None (= not given: the model's default applies)."""
    group = parser.add_argument_group("model options (only for the models that take them)")
    for option in MODEL_OPTIONS.values():
        group.add_argument(f"--{option.name}", type=option.parse, default=None, help=option.help)
    return group


def given_options(args):
    """The model options given on the command line (argparse namespace -> dict, None dropped)."""
    return {name: getattr(args, name) for name in MODEL_OPTIONS if getattr(args, name, None) is not None}


def build_model(name, n_classes, input_height, input_width, **options):
    """Build the registered model `name`: `get_entry(name).build(...)`."""
    return get_entry(name).build(n_classes, input_height, input_width, **options)

