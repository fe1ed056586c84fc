"""ImageNet-pretrained encoders: train.py's `--encoder_weights none|imagenet|PATH`.

An encoder that reproduces a `keras.applications` model's layer names and weight shapes (its
registry entry's `encoder_family`) loads that model's weights by layer name:

- `imagenet`: the file `keras.applications` itself downloads for `include_top=False`, through
  `keras.utils.get_file` into its cache (`$KERAS_HOME/models`, default `~/.keras/models`). Without
  network access the answer is one line naming the file, the cache folder and `--encoder_weights PATH`.
- PATH: a `keras.applications` weights file (Keras 2 `.h5` by layer name, or Keras 3 `.weights.h5`)
  or a saved `keras.applications` model (`.keras`).

Every encoder layer (a layer of the model whose name is a weighted layer of the family's
`keras.applications` model) must load; one that the file lacks or holds with other shapes is an
error naming it. Each family also fixes its input preprocessing (`FAMILIES[...].image_init` and
`.channel_order`), that of `keras.applications.<module>.preprocess_input`.

Importing this module does not import keras (train.py's flag checks use it).
"""
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from utils.errors import UserError

SOURCES = ("none", "imagenet")  # or a file path
REFERENCE_SIZE = 96  # weight shapes do not depend on the input size; Xception needs at least 71
CONNECT_TIMEOUT_S = 4.0  # an offline machine must answer in seconds, not hang on DNS or TCP
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation once the host answered
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


# === The families ===

@dataclass(frozen=True)
class Family:
    """One `keras.applications` encoder family.

    constructor: the `keras.applications` function; kwargs: the arguments this toolkit's encoders
    match (MobileNet: alpha 0.25); module: where its `preprocess_input` lives; image_init and
    channel_order: that preprocess_input as this toolkit's `--image_init` applied to the image in
    that channel order.
    """
    constructor: str
    module: str
    image_init: str
    channel_order: str
    kwargs: dict = field(default_factory=dict)

    def short(self):
        """As the README's model table names it: MobileNet α 0.25."""
        alpha = self.kwargs.get("alpha")
        return self.constructor + (f" α {alpha:g}" if alpha not in (None, 1.0) else "")

    def describe(self):
        args = ", ".join(f"{key}={value}" for key, value in self.kwargs.items())
        return f"keras.applications.{self.constructor}({args})" if args else f"keras.applications.{self.constructor}"


# 'tf' mode (RGB, x / 127.5 - 1) for the TensorFlow-trained nets; 'caffe' mode (BGR minus the ImageNet
# means) for the Caffe ports ResNet50 and VGG16.
FAMILIES = {
    "MobileNet": Family("MobileNet", "mobilenet", "sub_and_divide", "rgb", {"alpha": 0.25}),
    "MobileNetV2": Family("MobileNetV2", "mobilenet_v2", "sub_and_divide", "rgb", {"alpha": 1.0}),
    "Xception": Family("Xception", "xception", "sub_and_divide", "rgb"),
    "ResNet50": Family("ResNet50", "resnet50", "sub_mean", "bgr"),
    "VGG16": Family("VGG16", "vgg16", "sub_mean", "bgr"),
}


def encoder_models():
    """['mobilenet_unet', 'pspnet --backbone mobilenet', ...]: the models that take --encoder_weights."""
    from Models import MODELS
    found = []
    for name, entry in MODELS.items():
        choice = entry.options.get("backbone")
        for backbone in (choice.valid if choice else (None,)):
            if entry.encoder_family({"backbone": backbone} if backbone else {}):
                found.append(f"{name} --backbone {backbone}" if backbone else name)
    return found


def check_source(value):
    """'none', 'imagenet' or an existing weights file (checked by its header); else a UserError."""
    text = str(value).strip()
    if text.lower() in SOURCES:
        return text.lower()
    from utils.model_files import check_model_file
    check_model_file(text, "--encoder_weights", accepted=("keras", "h5"))
    return text


# === The ImageNet file, as keras.applications names and fetches it ===

def _square_rows(height, width, allowed):
    # keras.applications: a non-square or unlisted size loads the 224x224 weights (with a warning).
    return height if height == width and height in allowed else 224


def imagenet_file(family, height, width):
    """(file name, URL, md5 or None) of the `include_top=False` ImageNet weights `keras.applications`
    loads for `family` at input height x width."""
    if family == "MobileNet":
        name = f"mobilenet_2_5_{_square_rows(height, width, (128, 160, 192, 224))}_tf_no_top.h5"
        return name, f"{KERAS_APPLICATIONS_URL}mobilenet/{name}", None
    if family == "MobileNetV2":
        rows = _square_rows(height, width, (96, 128, 160, 192, 224))
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        return name, f"{KERAS_APPLICATIONS_URL}mobilenet_v2/{name}", None
    folder, name, md5 = {
        "Xception": ("xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "b0042744bf5b25fce3cb969f33bebb97"),
        "ResNet50": ("resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "4d473c1dd8becc155b73f8504c6f6626"),
        "VGG16": ("vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"),
    }[family]
    return name, f"{KERAS_APPLICATIONS_URL}{folder}/{name}", md5


def cache_dir():
    """The folder `keras.utils.get_file(..., cache_subdir='models')` reads and writes."""
    base = os.environ.get("KERAS_HOME")
    if base is None:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK) and not os.access(os.path.dirname(os.path.abspath(base)), os.W_OK):
        base = os.path.join("/tmp", ".keras")  # get_file's own fallback
    return os.path.join(base, "models")


def _reachable(url, timeout=CONNECT_TIMEOUT_S):
    """None if the host of `url` accepts a TCP connection within `timeout` s, else the reason.

    Name resolution ignores socket timeouts, so it runs in a thread that is abandoned after `timeout`."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    outcome = ["no answer in %.0f s" % timeout]

    def connect():
        try:
            socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout).close()
            outcome[0] = None
        except OSError as exc:
            outcome[0] = str(exc) or type(exc).__name__

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0]


def fetch_imagenet(family, height, width):
    """The cached ImageNet weights file of `family`, downloaded first if needed (keras.utils.get_file)."""
    name, url, md5 = imagenet_file(family, height, width)
    cached = os.path.join(cache_dir(), name)
    offline = (f"--encoder_weights imagenet: cannot download {name} from {url} ({{}}); on a machine with "
               f"network access fetch it (see docs/pretrained.md) and copy it to {cached}, "
               f"or pass --encoder_weights PATH")
    if not os.path.isfile(cached):
        reason = _reachable(url)
        if reason:
            raise UserError(offline.format(reason))
    import keras
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        # cache_dir explicitly: keras reads KERAS_HOME once, when it is imported.
        return keras.utils.get_file(name, url, cache_dir=os.path.dirname(cache_dir()), cache_subdir="models",
                                    file_hash=md5)
    except Exception as exc:  # urllib, hash and disk errors all end as the same one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(offline.format(reason.split(" -- ")[-1])) from None
    finally:
        socket.setdefaulttimeout(previous)


# === Reading a weights file ===

def build_reference(family):
    """The family's `keras.applications` model without top, randomly initialised (nothing downloads)."""
    import keras
    spec = FAMILIES[family]
    return getattr(keras.applications, spec.constructor)(
        weights=None, include_top=False, input_shape=(REFERENCE_SIZE, REFERENCE_SIZE, 3), **spec.kwargs)


def read_weights(path, family, reference):
    """{layer name: arrays} from PATH: a Keras 2 `.h5` read by name, a `.keras` model, or a Keras 3
    `.weights.h5` loaded into `reference` (its layout is positional: only the family's model reads it)."""

    from utils.model_files import check_model_file, first_line, loader_errors
    from utils.training import h5_layer_weights, layer_weights
    flag = "--encoder_weights"
    if check_model_file(path, flag, accepted=("keras", "h5")) == "keras":
        from utils.inference import load_keras_model
        source = load_keras_model(path, flag)
    else:
        with loader_errors(path, flag, "h5py"):
            weights = h5_layer_weights(path)
        if weights is not None:
            return weights
        try:
            reference.load_weights(path)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            detail = next((line.strip() for line in lines if line.strip().startswith("Layer '")),
                          first_line(exc))
            raise UserError(f"{flag} {path}: not {FAMILIES[family].describe()} weights ({detail}); "
                            "is it another family's file?") from None
        source = reference
    return layer_weights(source)


# === Loading ===

def encoder_layers(model, family, reference=None):
    """-> (the weighted layers of `model` that carry a `family` layer name, how many weighted layers the
    family's model has): what `--encoder_weights` loads (tools/model_summary.py prints the counts)."""
    from utils.training import weighted_layers
    reference = reference or build_reference(family)
    family_layers = {layer.name for layer in weighted_layers(reference)}
    return [layer for layer in weighted_layers(model) if layer.name in family_layers], len(family_layers)


def load_encoder_weights(model, family, source, height, width):
    """Load `family`'s weights from `source` ('imagenet' or a file) into `model`'s encoder; -> the names
    of the layers loaded. Raises UserError naming the first encoder layer the file lacks or mismatches."""
    started = time.perf_counter()
    path = fetch_imagenet(family, height, width) if source == "imagenet" else source
    reference = build_reference(family)
    encoder, family_size = encoder_layers(model, family, reference)
    if not encoder:
        raise UserError(f"--encoder_weights: no layer of {model.name} has a {FAMILIES[family].describe()} name")
    weights = read_weights(path, family, reference)
    for layer in encoder:
        arrays = weights.get(layer.name)
        if arrays is None:
            raise UserError(f"--encoder_weights {path}: encoder layer {layer.name} of {model.name} is not in "
                            f"the file (not {FAMILIES[family].describe()} weights?)")
        shapes, expected = [tuple(a.shape) for a in arrays], [tuple(w.shape) for w in layer.weights]
        if shapes != expected:
            raise UserError(f"--encoder_weights {path}: encoder layer {layer.name} of {model.name} has weight "
                            f"shapes {expected}, the file {shapes} (not {FAMILIES[family].describe()} weights?)")
    for layer in encoder:
        layer.set_weights(weights[layer.name])
    arrays = sum(len(layer.weights) for layer in encoder)
    print(f"encoder weights: loaded {len(encoder)} layers ({arrays} weight arrays) of "
          f"{FAMILIES[family].describe()} from {path} ({len(encoder)} of its {family_size} weighted "
          f"layers are in {model.name}; {time.perf_counter() - started:.1f} s)")
    return [layer.name for layer in encoder]


# === train.py: which family, and its preprocessing ===

def choose_encoder_weights(args, entry, options):
    """-> the encoder family --encoder_weights loads (or None); sets --image_init and --channel_order
    to that family's preprocess_input, refusing an explicit flag that contradicts it."""
    args.encoder_weights = check_source(args.encoder_weights)
    if args.encoder_weights == "none":
        args.channel_order = args.channel_order or "bgr"
        return None
    family = entry.encoder_family(options)
    if family is None:
        backbone = f" --backbone {options['backbone']}" if "backbone" in options else ""
        raise UserError(f"--encoder_weights: --model_name {args.model_name}{backbone} has no keras.applications "
                        f"encoder; the models that take it: {', '.join(encoder_models())}")
    spec = FAMILIES[family]
    for flag, wanted in (("image_init", spec.image_init), ("channel_order", spec.channel_order)):
        if flag in args._given and getattr(args, flag) != wanted:
            raise UserError(f"--{flag} {getattr(args, flag)} contradicts --encoder_weights: {spec.describe()} "
                            f"was trained on --image_init {spec.image_init} --channel_order {spec.channel_order} "
                            f"input; leave --{flag} out")
        setattr(args, flag, wanted)
    return family
