"""The model registry: CLI name -> builder.

Every builder is called as `builder(n_classes, input_height, input_width,
**options)`, checks its input-size rule first (`builder.size_rule`), and
returns a Keras model from (B, H, W, 3) images to (B, H, W, n_classes) float32
softmax probabilities. Adding a model: its own file plus one line here.
"""
from Models.attunet import attunet
from Models.nested_unet import nested_unet
from Models.r2attunet import r2attunet
from Models.r2unet import r2unet
from Models.scseunet import scseunet
from Models.seunet import seunet
from Models.unet import unet
from utils.errors import UserError

MODELS = {
    "unet": unet,
    "attunet": attunet,
    "r2unet": r2unet,
    "r2attunet": r2attunet,
    "unet++": nested_unet,
    "seunet": seunet,
    "scseunet": scseunet,
}


def get_builder(name):
    if name not in MODELS:
        raise UserError(f"--model_name {name!r} is unknown; valid names: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name, n_classes, input_height, input_width, **options):
    """Build the registered model `name`; unknown names list the valid ones."""
    return get_builder(name)(n_classes, input_height, input_width, **options)
