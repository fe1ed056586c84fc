"""The measurements behind tools/benchmark.py's overhead, pipeline-reference and slide sections.

- `measure_overhead`: steady-state training images/s of train.py itself (its loader, loss,
  metrics incl. per-class, callbacks; `--validate false`) against a bare `model.fit` of the same
  model, batch and image count on in-memory arrays. Each side runs in its own subprocess (same
  thread pools, same start-up), one after the other, and is timed from epoch end to epoch end
  after the first epoch, so a checkpoint written at an epoch's end counts in its epoch, as it
  does for a user. Ablations (`OVERHEAD_ABLATIONS`) rerun train.py with one piece switched off,
  to show where the difference goes.
- `naive_batches` / `tfdata_pipeline`: the two references the toolkit's input pipeline is held to,
  each producing the same batches (float32 (B, S, S, 3) BGR / 255, int32 (B, S, S) labels).
- `measure_slide`: slide-inference megapixels/s (unet, random weights), whole against slide on
  one image, and peak RSS of one slide prediction per image size, each in a fresh subprocess.

Run as a script only by those subprocesses (`python tools/benchmark_sections.py _overhead CONFIG`).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from utils.errors import UserError  # noqa: E402

# name -> what train.py runs without (see _train_side)
OVERHEAD_ABLATIONS = {
    "per_class": "--per_class_metrics false",
    "metrics": "no compiled metrics (and no RunCommit, which needs iou_score)",
    "tensorboard": "no TensorBoard callback",
    "checkpoints": "no RunCommit (no log row, checkpoints or state.json)",
    "callbacks": "no callbacks at all",
    "workers1": "--workers 1",
    "memory_loader": "batches decoded once, served from memory by a PyDataset (the adapter's cost alone)",
}


# === Flags of these sections (tools/benchmark.py) ===

def check_ablations(text):
    names = list(OVERHEAD_ABLATIONS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OVERHEAD_ABLATIONS]
    if unknown:
        raise UserError(f"--overhead_ablations {', '.join(unknown)} unknown; "
                        f"valid: all, {', '.join(OVERHEAD_ABLATIONS)}")
    return names


def parse_sizes(text):
    """'1000x1000,6000x4000' -> [(1000, 1000), (6000, 4000)] (height x width)."""
    sizes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = item.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise UserError(f"--slide_sizes {text}: {item!r} is not HEIGHTxWIDTH with positive integers")
        sizes.append((int(parts[0]), int(parts[1])))
    if not sizes:
        raise UserError("--slide_sizes: give at least one HEIGHTxWIDTH size")
    return sizes


# === Overhead: train.py against a bare fit ===

def _epoch_timer(stamps):
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Last in the list: its stamp follows every other callback's epoch-end work."""

        def on_epoch_end(self, epoch, logs=None):
            stamps.append(time.perf_counter())
    return EpochTimer()


def _train_side(config, stamps):
    import train
    argv = ["--data_root", os.path.dirname(config["data_dir"]), "--dataset_name", os.path.basename(config["data_dir"]),
            "--model_name", config["model"], "--n_classes", str(config["n_classes"]),
            "--input_height", str(config["size"]), "--input_width", str(config["size"]),
            "--train_batch_size", str(config["batch_size"]), "--epochs", str(config["epochs"]),
            "--validate", "false", "--train_save_path", config["save_dir"], "--exp_name", "overhead"]
    ablation = config.get("ablation")
    if ablation == "per_class":
        argv += ["--per_class_metrics", "false"]
    if ablation == "workers1":
        argv += ["--workers", "1"]
    if ablation == "metrics":
        import metrics
        metrics.get_metrics = lambda *args, **kwargs: []
    dropped = {"metrics": ("RunCommit",), "tensorboard": ("TensorBoard",), "checkpoints": ("RunCommit",),
               "callbacks": None}.get(ablation, ())
    make_callbacks = train.make_callbacks

    def timed_callbacks(*args, **kwargs):
        callbacks, monitor = make_callbacks(*args, **kwargs)
        kept = [] if dropped is None else [c for c in callbacks if type(c).__name__ not in dropped]
        return kept + [_epoch_timer(stamps)], monitor
    train.make_callbacks = timed_callbacks
    if ablation == "memory_loader":
        make_generators = train.make_generators

        def memory_generators(*args, **kwargs):
            loader, val = make_generators(*args, **kwargs)
            return _MemoryBatches(loader), val
        train.make_generators = memory_generators
    code = train.main(argv)
    if code:
        raise RuntimeError(f"train.py exited with {code}")


class _MemoryBatches:
    """Wraps a SegmentationDataset's batches, decoded once, in a PyDataset of the same length."""

    def __new__(cls, loader):
        import keras

        class MemoryBatches(keras.utils.PyDataset):
            def __init__(self):
                super().__init__(workers=1, use_multiprocessing=False)
                self.batches = [loader[i] for i in range(len(loader))]
                self.user_error = None

            def __len__(self):
                return len(self.batches)

            def __getitem__(self, index):
                return self.batches[index]
        return MemoryBatches()


def _bare_side(config, stamps):
    import keras
    import numpy as np

    from data import Preprocessing, load_pair, pair_files
    from Models import get_entry
    from utils.optimizers import get_optimizer
    pairs = pair_files(os.path.join(config["data_dir"], "train_image"), os.path.join(config["data_dir"], "train_label"))
    prep = Preprocessing(config["size"], config["size"])
    samples = [load_pair(image, label, prep, config["n_classes"]) for image, label in pairs]
    x = np.stack([s[0] for s in samples])
    y = np.stack([s[1] for s in samples])
    keras.utils.set_random_seed(0)
    model = get_entry(config["model"]).build(config["n_classes"], config["size"], config["size"])
    heads = len(model.outputs)
    model.compile(optimizer=get_optimizer("adadelta"), loss=["sparse_categorical_crossentropy"] * heads)
    model.fit(x, y if heads == 1 else [y] * heads, batch_size=config["batch_size"], epochs=config["epochs"],
              shuffle=True, verbose=2, callbacks=[_epoch_timer(stamps)])
    return len(pairs)


def _run_side(config):
    """One side in this process -> {"images": per epoch, "epoch_s": [steady-state epoch seconds]}."""
    from utils.backend import import_keras
    import_keras()
    from data import pair_files
    stamps = []
    if config["side"] == "bare":
        _bare_side(config, stamps)
    else:
        _train_side(config, stamps)
    images = len(pair_files(os.path.join(config["data_dir"], "train_image"),
                            os.path.join(config["data_dir"], "train_label")))
    return {"images": images, "epoch_s": [b - a for a, b in zip(stamps, stamps[1:])]}


def time_side(side, data_dir, model="unet", size=128, batch_size=4, epochs=3, n_classes=2, ablation=None):
    """Steady-state images/s of one side (`bare` or `train`), in a fresh subprocess."""
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        config = dict(side=side, data_dir=os.path.abspath(data_dir), model=model, size=size, batch_size=batch_size,
                      epochs=epochs, n_classes=n_classes, ablation=ablation, save_dir=os.path.join(tmp, "runs"),
                      output=os.path.join(tmp, "result.json"))
        result = subprocess.run([sys.executable, os.path.abspath(__file__), "_overhead", json.dumps(config)],
                                cwd=ROOT, capture_output=True, text=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if result.returncode != 0 or not os.path.isfile(config["output"]):
            raise RuntimeError(f"overhead run ({side}{', ' + ablation if ablation else ''}) failed: "
                               f"{(result.stderr or result.stdout)[-800:]}")
        with open(config["output"], encoding="utf-8") as handle:
            timing = json.load(handle)
    # The fastest epoch is the one least slowed by other processes on a shared machine; the mean is kept.
    timing["images_per_s"] = timing["images"] / min(timing["epoch_s"])
    timing["mean_images_per_s"] = timing["images"] * len(timing["epoch_s"]) / sum(timing["epoch_s"])
    return timing


def measure_overhead(data_dir, model="unet", size=128, batch_size=4, epochs=3, n_classes=2, ablations=(),
                     repeats=1):
    """{"bare": timing, "train": timing, "ratio": train / bare, "ablations": {name: timing}} (see time_side).

    Rates (and the ratio) are of each side's fastest steady-state epoch; `mean_images_per_s` beside them.
    `repeats` > 1 alternates bare and train.py runs that many times and pools their epochs: on a machine
    shared with other work, the fastest of more epochs is a steadier estimate of each side's own speed.
    """
    if epochs < 2:
        raise ValueError("the overhead needs 2 or more epochs: the first one is not timed")
    kwargs = dict(model=model, size=size, batch_size=batch_size, epochs=epochs, n_classes=n_classes)
    runs = {"bare": [], "train": []}
    for _ in range(max(1, repeats)):
        for side in runs:
            runs[side].append(time_side(side, data_dir, **kwargs))
    bare, full = (_pooled(runs[side]) for side in ("bare", "train"))
    out = {"bare": bare, "train": full, "ratio": full["images_per_s"] / bare["images_per_s"], "ablations": {}}
    for name in ablations:
        timing = time_side("train", data_dir, ablation=name, **kwargs)
        timing["ratio"] = timing["images_per_s"] / bare["images_per_s"]
        out["ablations"][name] = timing
    return out


def _pooled(timings):
    epochs = [s for timing in timings for s in timing["epoch_s"]]
    images = timings[0]["images"]
    return {"images": images, "epoch_s": epochs, "images_per_s": images / min(epochs),
            "mean_images_per_s": images * len(epochs) / sum(epochs)}


# === Input pipeline references ===

def naive_batches(pairs, size, batch_size):
    """A user's single-threaded cv2 loop: read, resize, normalise, stack; yields (images, labels) batches.

    The same output as the toolkit's batches at `--image_init divide`, BGR, `--resize_op 1`.
    """
    import cv2
    import numpy as np
    for start in range(0, len(pairs), batch_size):
        images, labels = [], []
        for image_path, label_path in pairs[start:start + batch_size]:
            image = cv2.resize(cv2.imread(image_path), (size, size), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(cv2.imread(label_path, cv2.IMREAD_GRAYSCALE), (size, size),
                               interpolation=cv2.INTER_NEAREST)
            images.append(image.astype(np.float32) / np.float32(255.0))
            labels.append(label.astype(np.int32))
        yield np.stack(images), np.stack(labels)


def naive_loop(pairs, size, batch_size):
    for _ in naive_batches(pairs, size, batch_size):
        pass


def tfdata_pipeline(pairs, size, batch_size):
    """The tf.data pipeline a user would write for the same batches (BGR / 255, nearest labels)."""
    import tensorflow as tf

    def load(image_path, label_path):
        image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
        image = tf.image.resize(image, (size, size), method="bilinear")[..., ::-1] / 255.0  # RGB -> BGR
        label = tf.io.decode_png(tf.io.read_file(label_path), channels=1)[..., 0]
        # cv2's INTER_NEAREST picks source pixel floor(i * in / out); tf.image.resize's "nearest" samples at
        # pixel centres and picks another pixel at some borders, so the same rows and columns are gathered.
        shape = tf.shape(label)
        rows, cols = (tf.cast(tf.floor(tf.range(size, dtype=tf.float64) * tf.cast(n, tf.float64) / size), tf.int32)
                      for n in (shape[0], shape[1]))
        label = tf.gather(tf.gather(label, rows, axis=0), cols, axis=1)
        return image, tf.cast(label, tf.int32)
    images, labels = (list(column) for column in zip(*pairs))
    return (tf.data.Dataset.from_tensor_slices((images, labels)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def tfdata_epochs(dataset, batches):
    """-> epoch(): pulls one epoch's `batches` from one iterator over the repeated dataset, so the
    reference runs at its steady state (no per-epoch iterator start, which on a 40-image set costs
    more than the epoch): the stricter comparison for the toolkit."""
    iterator = iter(dataset.repeat())

    def epoch():
        for _ in range(batches):
            next(iterator)
    return epoch


# === Slide inference (#13) ===

SLIDE_RUN = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from tools.benchmark_sections import slide_predict
seconds = slide_predict(*json.loads(sys.argv[1]))
print("SLIDE", json.dumps({{"seconds": seconds, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def slide_predict(height, width, window=256, mode="slide", batch_size=4, model="unet", repeats=1):
    """Seconds of the fastest of `repeats` `utils.tiling.predict_image` calls on a random
    height x width image, unet with random weights, after a warm-up: one window batch (slide), one
    whole prediction (whole: the model rebuilt at the padded size, cached by the predictor)."""
    from utils.backend import import_keras
    import_keras()
    import numpy as np

    from data import Preprocessing
    from Models import get_entry
    from utils.inference import keras_predictor
    from utils.tiling import predict_image
    net = get_entry(model).build(2, window, window)
    predictor = keras_predictor(net, {"model_name": model, "n_classes": 2})
    predictor(np.zeros((batch_size, window, window, 3), np.float32))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    prep = Preprocessing(window, window)
    if mode == "whole":  # its first call builds the model at the padded size and traces it: not timed
        predict_image(image, predictor, prep, mode, batch_size=batch_size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        probs = predict_image(image, predictor, prep, mode, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    assert probs.shape[:2] == (height, width)
    return best


def slide_run(height, width, mode="slide", window=256, batch_size=4, model="unet", repeats=1):
    """{"seconds", "megapixels_per_s", "peak_rss_mb"} of one prediction in a fresh subprocess."""
    args = json.dumps([height, width, window, mode, batch_size, model, repeats])
    result = subprocess.run([sys.executable, "-c", SLIDE_RUN.format(root=ROOT), args], cwd=ROOT,
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    line = [x for x in result.stdout.splitlines() if x.startswith("SLIDE ")]
    if result.returncode != 0 or not line:
        raise RuntimeError(f"{mode} {height}x{width} failed: {(result.stderr or result.stdout)[-500:]}")
    out = json.loads(line[0][len("SLIDE "):])
    return {"seconds": out["seconds"], "megapixels_per_s": height * width / 1e6 / out["seconds"],
            "peak_rss_mb": out["peak_rss_kb"] / 1024}


def measure_slide(speed_size=(1000, 1000), memory_sizes=((1000, 1000), (6000, 4000)), window=256, batch_size=4):
    """Whole against slide on one image (speed), then slide's peak RSS per image size."""
    out = {"window": window, "speed_image": list(speed_size), "memory": {}}
    for mode in ("slide", "whole"):
        out[mode] = slide_run(*speed_size, mode=mode, window=window, batch_size=batch_size)
    for height, width in memory_sizes:
        same = (height, width) == tuple(speed_size)
        out["memory"][f"{height}x{width}"] = out["slide"] if same else slide_run(height, width, "slide", window,
                                                                                batch_size)
    return out


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "_overhead":
    run_config = json.loads(sys.argv[2])
    timing = _run_side(run_config)
    with open(run_config["output"], "w", encoding="utf-8") as out_file:
        json.dump(timing, out_file)
