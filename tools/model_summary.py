"""Parameters and forward multiply-adds of every registered model, beside the seed's counts.

    python tools/model_summary.py [--height 224 --width 224 --n_classes 2] [--models unet,enet] [--markdown]

Multiply-adds are counted from the TensorFlow graph of one forward pass at
batch 1, from the static shapes of every convolution (regular, dilated,
depthwise, transposed) and matrix product. Element-wise work (batch norm, activations, resizing) is not
included, as in fvcore/ptflops. A model whose rule rejects the size is built
at its smallest legal size at least as large, and the row says so.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from utils.errors import UserError, run_cli  # noqa: E402

# The seed README's parameter counts (224x224x3, 2 classes; pspnet at its smallest size).
SEED_PARAMS = {
    "enet": 371558, "fcn8": 3609196, "unet": 7167618, "attunet": 8913058, "r2unet": 17652930,
    "r2attunet": 16958530, "unet++": 9171170, "segnet": 2941218, "icnet": 6740610, "pspnet": 964226,
    "mobilenet_unet": 407778, "mobilenet_fcn8": 3432764, "seunet": 1964530, "scseunet": 1959266,
    "vggunet": 25884170, "unet_xception_resnetblock": 38431730, "deeplab_v2": 37799752, "hrnet": 28608672,
}


def _variants():
    """name -> [(options, label)]: one row per backbone of the models that take --backbone. The
    default backbone keeps the plain name and no options where the seed's table has the model."""
    from Models import MODELS
    variants = {}
    for name, entry in MODELS.items():
        choice = entry.options.get("backbone")
        if choice is None:
            continue
        variants[name] = []
        for value in choice.valid:
            plain = value == choice.default and name in SEED_PARAMS
            variants[name].append(({}, name) if plain else ({"backbone": value}, f"{name} (backbone {value})"))
    return variants


VARIANTS = _variants()


def _op_macs(op):
    """Multiply-adds of one TensorFlow op from its static shapes (0 for element-wise ops)."""
    import numpy as np

    def dims(tensor):
        return [int(d) for d in tensor.shape]
    if op.type == "Conv2D":  # output (N, H, W, Cout), kernel (kh, kw, Cin, Cout)
        kh, kw, cin, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.outputs[0]))) * kh * kw * cin
    if op.type == "DepthwiseConv2dNative":  # each output value: kh * kw products
        kh, kw, _, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.outputs[0]))) * kh * kw
    if op.type == "Conv2DBackpropInput":  # transposed conv: each input value scatters kh * kw * Cout
        kh, kw, cout, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.inputs[2]))) * kh * kw * cout
    if op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a = dims(op.inputs[0])
        transpose = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        inner = a[-2] if transpose else a[-1]
        return int(np.prod(dims(op.outputs[0]))) * inner
    return 0


def forward_macs(model, height, width):
    """Multiply-adds of one forward pass at batch 1: convolutions and matrix products."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([1, height, width, 3], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph  # inlines nested functions
    return sum(_op_macs(op) for op in graph.get_operations())


def legal_size(entry, height, width, options=None):
    """The smallest legal (height, width) at least as large, by the entry's rule for these options."""
    rule = entry.size_rule(options or {})
    return rule.nearest(height)[1], rule.nearest(width)[1]


def rows(names, height, width, n_classes):
    import keras

    from Models import MODELS
    for name in names:
        entry = MODELS[name]
        for options, label in VARIANTS.get(name, [({}, name)]):
            h, w = legal_size(entry, height, width, options)
            keras.backend.clear_session()
            model = entry.build(n_classes, h, w, **options)
            yield {"name": label, "size": f"{h}x{w}", "resized": (h, w) != (height, width),
                   "params": model.count_params(), "macs": forward_macs(model, h, w),
                   "seed": SEED_PARAMS.get(name) if not options else None,
                   "rule": entry.size_rule(options).describe(),
                   "encoder": encoder_column(model, entry.encoder_family(options))}


def encoder_column(model, family):
    """The keras.applications family whose ImageNet weights --encoder_weights loads, with the layers
    that load of that model's weighted layers; '-' for a model without one."""
    if family is None:
        return "-"
    from utils.encoder_weights import FAMILIES, encoder_layers
    loaded, total = encoder_layers(model, family)
    return f"{FAMILIES[family].short()} ({len(loaded)}/{total})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--n_classes", type=int, default=2)
    parser.add_argument("--models", default="", help="comma-separated names (default: all registered)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    from Models import MODELS
    names = [n for n in args.models.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise UserError(f"--models {', '.join(unknown)} unknown; valid names: {', '.join(MODELS)}")
    if args.markdown:
        print("| name | input | size rule | params | forward GMACs | seed's params | vs seed | ImageNet encoder |")
        print("|---|---|---|---|---|---|---|---|")
    else:
        print(f"{'name':<34} {'input':>9} {'params':>12} {'GMACs':>8} {'seed params':>12} {'vs seed':>8}")
    for row in rows(names, args.height, args.width, args.n_classes):
        seed = f"{row['seed']:,}" if row["seed"] else "-"
        ratio = f"{row['params'] / row['seed'] - 1:+.1%}" if row["seed"] else "-"
        size = row["size"] + (" *" if row["resized"] else "")
        if args.markdown:
            print(f"| `{row['name']}` | {size} | {row['rule']} | {row['params']:,} | {row['macs'] / 1e9:.2f} "
                  f"| {seed} | {ratio} | {row['encoder']} |")
        else:
            print(f"{row['name']:<34} {size:>9} {row['params']:>12,} {row['macs'] / 1e9:>8.2f} {seed:>12} {ratio:>8}")
    print(f"\n{args.n_classes} classes; * = the model's smallest legal size at least "
          f"{args.height}x{args.width}; GMACs = 1e9 forward multiply-adds at batch 1.")


if __name__ == "__main__":
    run_cli(main)
