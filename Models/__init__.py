"""The model registry: CLI name -> builder.

Every builder is called as `builder(n_classes, input_height, input_width,
**options)`, checks its input-size rule first (`builder.size_rule`), and
returns a Keras model from (B, H, W, 3) images to (B, H, W, n_classes) float32
softmax probabilities. Adding a model: its own file plus one line here.
"""
from Models.attunet import attunet
from Models.deeplab_v2 import deeplab_v2
from Models.deeplab_v3_plus import deeplab_v3_plus
from Models.enet import enet
from Models.fcn8 import fcn8
from Models.hrnet import hrnet
from Models.icnet import icnet
from Models.mobilenet import mobilenet_fcn8, mobilenet_unet
from Models.nested_unet import nested_unet
from Models.pspnet import pspnet
from Models.r2attunet import r2attunet
from Models.r2unet import r2unet
from Models.scseunet import scseunet
from Models.segnet import segnet
from Models.seunet import seunet
from Models.unet import unet
from Models.unet_xception_resnetblock import unet_xception_resnetblock
from Models.vggunet import vggunet
from utils.errors import UserError

MODELS = {
    "enet": enet,
    "fcn8": fcn8,
    "unet": unet,
    "attunet": attunet,
    "r2unet": r2unet,
    "r2attunet": r2attunet,
    "unet++": nested_unet,
    "seunet": seunet,
    "scseunet": scseunet,
    "segnet": segnet,
    "icnet": icnet,
    "pspnet": pspnet,
    "mobilenet_unet": mobilenet_unet,
    "mobilenet_fcn8": mobilenet_fcn8,
    "vggunet": vggunet,
    "unet_xception_resnetblock": unet_xception_resnetblock,
    "deeplab_v2": deeplab_v2,
    "hrnet": hrnet,
    "deeplab_v3+": deeplab_v3_plus,
}


def get_builder(name):
    if name not in MODELS:
        raise UserError(f"--model_name {name!r} is unknown; valid names: {', '.join(MODELS)}")
    return MODELS[name]


def model_options(name):
    """The options (keyword arguments after the size) that the builder of `name` takes."""
    import inspect
    builder = get_builder(name)
    params = list(inspect.signature(getattr(builder, "__wrapped__", builder)).parameters)
    return params[3:]


def check_options(name, options):
    """Raise a UserError for an option that the builder of `name` does not take."""
    accepted = model_options(name)
    for key in options:
        if key not in accepted:
            takes = ", ".join(f"--{o}" for o in accepted) or "no options"
            raise UserError(f"--{key} is not an option of --model_name {name} (it takes: {takes})")


def build_model(name, n_classes, input_height, input_width, **options):
    """Build the registered model `name`; unknown names and options list the valid ones."""
    check_options(name, options)
    return get_builder(name)(n_classes, input_height, input_width, **options)
