"""Speed and memory on this machine, each beside the machine's own limit, in one run.

    python tools/benchmark.py                                   # everything, every model (long on a CPU)
    python tools/benchmark.py --models unet,enet --skip memory
    python tools/benchmark.py --models unet --variants          # + --jit_compile / --mixed_precision speed-ups
    python tools/benchmark.py --sections overhead,pipeline      # the toolkit against a bare fit / tf.data
    python tools/benchmark.py --sections overhead --overhead_ablations all   # where train.py's time goes

Sections (prints a table each, and writes everything to --output as JSON):
- peak: fp32 matmul and 3x3-conv FLOP/s of this backend on this machine;
- pipeline: the training input pipeline (decode, resize, normalise, batch) in
  images/s at 224x224 from a data set folder, beside a naive single-threaded
  cv2 loop and a tf.data pipeline (decode, resize, normalise, batch,
  prefetch(AUTOTUNE)) making the same batches from the same files;
- overhead: steady-state training images/s of train.py itself (its loader,
  loss, metrics incl. per-class, callbacks; no validation) against a bare
  model.fit of the same model, batch and images held in memory, each in a
  subprocess, timed epoch end to epoch end after the first epoch (the
  fastest epoch of each, the least disturbed on a shared machine);
  --overhead_ablations reruns train.py with one piece off each
  (tools/benchmark_sections.OVERHEAD_ABLATIONS);
- slide: unet (random weights) at --slide_window windows: slide against whole
  megapixels/s on the first --slide_sizes image, and slide's peak resident
  memory per size, each in a fresh subprocess;
- models: per model, training images/s (batch 4, 224x224, random data in
  memory), forward multiply-adds, and the achieved training FLOP/s
  (3 x 2 x MACs per image: forward + two backward products) as a fraction
  of the conv peak; inference images/s in Keras and onnxruntime (batch 8);
- memory: peak resident memory of 2-epoch train.py runs on 100 and 1,000
  synthetic images, to show memory does not grow with the data set.
Targets are printed beside the measurements.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.cli import positive_int  # noqa: E402  (also quiets TensorFlow's C++ logging)
from utils.errors import UserError, run_cli  # noqa: E402
from tools.benchmark_sections import OVERHEAD_ABLATIONS, check_ablations, parse_sizes  # noqa: E402  (Keras-free)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("peak", "pipeline", "models", "memory", "overhead", "slide")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="", help="comma-separated names (default: all registered)")
    p.add_argument("--size", type=positive_int, default=224)
    p.add_argument("--batch_size", type=positive_int, default=4)
    p.add_argument("--data_dir", default=os.path.join(os.path.dirname(ROOT), "shared", "datasets", "bbufdataset"),
                   help="data set folder for the pipeline section (falls back to data/demo)")
    p.add_argument("--seconds", type=float, default=10.0, help="minimum timed seconds per measurement")
    p.add_argument("--sections", default="",
                   help=f"comma-separated sections to run (default: all): {', '.join(SECTIONS)}")
    p.add_argument("--skip", default="", help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    p.add_argument("--overhead_model", default="unet")
    p.add_argument("--overhead_size", type=positive_int, default=128)
    p.add_argument("--overhead_epochs", type=positive_int, default=4, help="epochs per side; the first is not timed")
    p.add_argument("--overhead_repeats", type=positive_int, default=1,
                   help="alternate bare and train.py runs this many times (fastest epoch of all; a busy machine)")
    p.add_argument("--overhead_data", default=None,
                   help="data set folder of the overhead section (default: --data_dir)")
    p.add_argument("--overhead_ablations", default="", help="comma-separated, or 'all': train.py runs with one piece "
                                                            "off (per_class, metrics, tensorboard, checkpoints, "
                                                            "callbacks, workers1, memory_loader)")
    p.add_argument("--slide_window", type=positive_int, default=256)
    p.add_argument("--slide_sizes", default="1000x1000,6000x4000", help="HxW images: the first is also timed whole")
    p.add_argument("--train_only", action="store_true", help="models: training speed only (no inference columns)")
    p.add_argument("--variants", action="store_true", help="also time unet with --jit_compile / --mixed_precision")
    p.add_argument("--output", default="benchmark.json", help="JSON results (a new name if it exists)")
    return p.parse_args(argv)


def timed(step, seconds, min_calls=3):
    """(calls, elapsed seconds) of `step()` after one warm-up call."""
    step()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls, time.perf_counter() - start


# === Peak ===

def measure_peak(seconds):
    import keras
    import numpy as np
    a = keras.ops.convert_to_tensor(np.random.rand(2048, 2048).astype("float32"))
    calls, elapsed = timed(lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, a)[0, 0]), seconds)
    matmul = calls * 2 * 2048 ** 3 / elapsed
    conv = keras.layers.Conv2D(64, 3, padding="same", use_bias=False)
    x = keras.ops.convert_to_tensor(np.random.rand(4, 224, 224, 64).astype("float32"))
    conv(x)
    calls, elapsed = timed(lambda: keras.ops.convert_to_numpy(conv(x)[0, 0, 0, 0]), seconds)
    conv_flops = calls * 2 * 4 * 224 * 224 * 64 * 64 * 9 / elapsed
    return {"matmul_flops": matmul, "conv_flops": conv_flops}


# === Input pipeline ===

def measure_pipeline(data_dir, size, batch_size, seconds):
    """Images/s of the toolkit's loader as fit drives it, a naive cv2 loop and tf.data, on the same files
    and the same batches (float32 (B, size, size, 3) BGR / 255, int32 labels)."""
    from data import Preprocessing, SegmentationDataset, pair_files
    from tools.benchmark_sections import naive_loop, tfdata_epochs, tfdata_pipeline
    pairs = pair_files(os.path.join(data_dir, "train_image"), os.path.join(data_dir, "train_label"))
    calls, elapsed = timed(lambda: naive_loop(pairs, size, batch_size), seconds, min_calls=1)
    out = {"files": len(pairs), "naive_images_per_s": calls * len(pairs) / elapsed}

    dataset = SegmentationDataset(pairs, batch_size, Preprocessing(size, size), n_classes=256, shuffle=True,
                                  workers=min(4, os.cpu_count() or 1))

    def epoch():  # Keras' own threaded enqueuer, as model.fit drives it
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
        for _ in PyDatasetAdapter(dataset, shuffle=False).get_numpy_iterator():
            pass
        dataset.on_epoch_end()
    calls, elapsed = timed(epoch, seconds, min_calls=1)
    # data.SegmentationDataset builds batches on its own `threads`; Keras' enqueuer sees one worker.
    out.update(pipeline_images_per_s=calls * len(pairs) / elapsed,
               workers=getattr(dataset, "threads", dataset.workers))
    try:
        reference = tfdata_pipeline(pairs, size, batch_size)
    except ImportError:  # another backend without TensorFlow installed: no reference to compare with
        return out
    calls, elapsed = timed(tfdata_epochs(reference, len(dataset)), seconds, min_calls=1)
    out["tfdata_images_per_s"] = calls * len(pairs) / elapsed
    return out


# === Models ===

def measure_model(name, options, size, batch_size, seconds, jit_compile=False, mixed_precision=False,
                  inference=True):
    import keras
    import numpy as np

    from Models import MODELS
    from tools.model_summary import forward_macs, legal_size
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed_precision else "float32")
    height, width = legal_size(MODELS[name], size, size, options)
    model = MODELS[name].build(2, height, width, **options)
    heads = len(model.outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.001), loss=["sparse_categorical_crossentropy"] * heads,
                  jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, height, width, 3), dtype=np.float32)
    y = rng.integers(0, 2, (batch_size, height, width)).astype("int32")
    targets = y if heads == 1 else [y] * heads
    start = time.perf_counter()
    model.train_on_batch(x, targets)
    compile_seconds = time.perf_counter() - start
    calls, elapsed = timed(lambda: model.train_on_batch(x, targets), seconds)
    train_rate = calls * batch_size / elapsed
    keras.mixed_precision.set_global_policy("float32")
    row = {"input": f"{height}x{width}", "params": model.count_params(), "compile_s": compile_seconds,
           "train_images_per_s": train_rate}
    if not mixed_precision and keras.backend.backend() == "tensorflow":  # counted on a TensorFlow graph
        row["gmacs"] = forward_macs(model, height, width) / 1e9
    if inference:
        from tools.benchmark_inference import inference_rates
        from utils.inference import main_output_model
        main_model = main_output_model(model)
        rates = inference_rates(main_model, [8], seconds / 2)
        row.update(keras_infer_images_per_s=rates["keras", 8], onnx_infer_images_per_s=rates["onnxruntime", 8])
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


# === Memory against data set size ===

MEMORY_RUN = """
import resource, sys
sys.path.insert(0, {root!r})
import train
code = train.main(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def measure_memory(counts=(100, 1000)):
    import cv2
    import numpy as np
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as root:
        rng = np.random.default_rng(0)
        for count in counts:
            base = os.path.join(root, f"n{count}")
            for split in ("train_image", "train_label"):
                os.makedirs(os.path.join(base, split))
            for i in range(count):
                label = np.zeros((96, 96), np.uint8)
                label[rng.integers(0, 60):, rng.integers(0, 60):] = 1
                image = (label[..., None] * 150 + rng.integers(0, 60, (96, 96, 3))).astype(np.uint8)
                cv2.imwrite(os.path.join(base, "train_image", f"{i:05d}.jpg"), image)
                cv2.imwrite(os.path.join(base, "train_label", f"{i:05d}.png"), label)
            args = ["--data_root", root, "--dataset_name", f"n{count}", "--model_name", "unet",
                    "--input_height", "64", "--input_width", "64", "--epochs", "2", "--validate", "false",
                    "--train_save_path", os.path.join(root, "runs"), "--exp_name", f"n{count}",
                    "--tensorboard_images", "0"]
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", MEMORY_RUN.format(root=ROOT), *args], cwd=ROOT,
                                    capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            peak = [line for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
            if result.returncode != 0 or not peak:
                raise RuntimeError(f"memory run on {count} images failed: {result.stderr[-500:]}")
            results[count] = {"peak_rss_mb": int(peak[0].split()[1]) / 1024,
                              "seconds": time.perf_counter() - start}
    return results


# === Overhead: train.py against a bare fit ===

def run_overhead(args, ablations):
    from tools.benchmark_sections import measure_overhead
    data_dir = args.overhead_data or args.data_dir
    if not os.path.isdir(data_dir):
        data_dir = os.path.join(ROOT, "data", "demo")
    out = measure_overhead(data_dir, args.overhead_model, args.overhead_size, args.batch_size, args.overhead_epochs,
                           ablations=ablations, repeats=args.overhead_repeats)
    out["data_dir"] = data_dir
    print(f"\noverhead ({args.overhead_model} {args.overhead_size}x{args.overhead_size}, batch {args.batch_size}, "
          f"{out['train']['images']} images of {data_dir}, fastest of {len(out['train']['epoch_s'])} timed epochs):")
    print("| run | img/s | mean img/s | vs bare fit |\n|---|---|---|---|")
    rows = [("bare model.fit (in memory)", out["bare"], 1.0), ("train.py", out["train"], out["ratio"])]
    rows += [(f"train.py, {OVERHEAD_ABLATIONS[name]}", timing, timing["ratio"])
             for name, timing in out["ablations"].items()]
    for label, timing, ratio in rows:
        print(f"| {label} | {timing['images_per_s']:.2f} | {timing['mean_images_per_s']:.2f} | {ratio:.2f} |",
              flush=True)
    return out


# === Report ===

def section_set(text, flag):
    names = {s.strip() for s in text.split(",") if s.strip()}
    if names - set(SECTIONS):
        raise UserError(f"{flag} {text}: unknown section(s) {', '.join(sorted(names - set(SECTIONS)))}; "
                        f"sections are {', '.join(SECTIONS)}")
    return names


def verdict(ok):
    return "MET" if ok else "NOT MET"


def main(argv=None):
    args = parse_args(argv)
    from Models import MODELS
    from tools.model_summary import VARIANTS
    skip = section_set(args.skip, "--skip")
    if args.sections:
        skip |= set(SECTIONS) - section_set(args.sections, "--sections")
    ablations = check_ablations(args.overhead_ablations)
    slide_sizes = parse_sizes(args.slide_sizes)
    names = [n for n in args.models.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise UserError(f"--models {', '.join(unknown)} unknown; valid names: {', '.join(MODELS)}")
    output = args.output
    stem, n = os.path.splitext(output)[0], 1
    while os.path.exists(output):
        n += 1
        output = f"{stem}_{n}.json"

    import keras
    results = {"machine": {"cpus": os.cpu_count(), "backend": keras.backend.backend(),
                           "keras": keras.__version__}, "args": vars(args)}

    def save():
        with open(output, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)

    if "peak" not in skip or "models" not in skip:
        peak = results["peak"] = measure_peak(args.seconds)
        print(f"peak: matmul {peak['matmul_flops'] / 1e9:.1f} GFLOP/s, 3x3 conv {peak['conv_flops'] / 1e9:.1f} GFLOP/s"
              f" ({keras.backend.backend()}, {os.cpu_count()} cores)", flush=True)
        save()

    if "pipeline" not in skip:
        data_dir = args.data_dir if os.path.isdir(args.data_dir) else os.path.join(ROOT, "data", "demo")
        pipe = results["pipeline"] = measure_pipeline(data_dir, args.size, args.batch_size, args.seconds)
        pipe["data_dir"] = data_dir
        tfdata = f"; tf.data {pipe['tfdata_images_per_s']:.1f} img/s" if "tfdata_images_per_s" in pipe else ""
        print(f"pipeline ({pipe['files']} files of {data_dir}, {args.size}x{args.size}): "
              f"{pipe['pipeline_images_per_s']:.1f} img/s with {pipe['workers']} threads; naive cv2 loop "
              f"{pipe['naive_images_per_s']:.1f} img/s{tfdata}", flush=True)
        save()

    if "overhead" not in skip:
        results["overhead"] = run_overhead(args, ablations)
        save()

    if "models" not in skip:
        print(f"\n| model | input | GMACs | train img/s (batch {args.batch_size}) | achieved GFLOP/s | of conv peak "
              "| keras infer img/s (b8) | onnxruntime img/s (b8) | compile s |")
        print("|---|---|---|---|---|---|---|---|---|")
        results["models"] = {}
        for name in names:
            for options, label in VARIANTS.get(name, [({}, name)]):
                try:
                    row = measure_model(name, options, args.size, args.batch_size, args.seconds,
                                        inference=not args.train_only)
                except Exception as exc:  # report and go on: one model must not hide the others' numbers
                    print(f"| `{label}` | failed: {str(exc).splitlines()[0][:100]} |", flush=True)
                    continue
                nan = float("nan")  # no multiply-add count off TensorFlow
                row["achieved_flops"] = 6 * row.get("gmacs", nan) * 1e9 * row["train_images_per_s"]
                row["fraction_of_conv_peak"] = row["achieved_flops"] / results["peak"]["conv_flops"]
                results["models"][label] = row
                print(f"| `{label}` | {row['input']} | {row.get('gmacs', nan):.2f} | "
                      f"{row['train_images_per_s']:.2f} | "
                      f"{row['achieved_flops'] / 1e9:.1f} | {row['fraction_of_conv_peak']:.0%} | "
                      f"{row.get('keras_infer_images_per_s', float('nan')):.2f} | "
                      f"{row.get('onnx_infer_images_per_s', float('nan')):.2f} | "
                      f"{row['compile_s']:.0f} |", flush=True)
                save()
        if args.variants:
            base = results["models"].get("unet") or measure_model("unet", {}, args.size, args.batch_size,
                                                                   args.seconds, inference=False)
            variants = results["variants"] = {"float32": base["train_images_per_s"]}
            for label, kwargs in (("jit_compile", {"jit_compile": True}),
                                  ("mixed_precision (bfloat16)", {"mixed_precision": True})):
                variants[label] = measure_model("unet", {}, args.size, args.batch_size, args.seconds,
                                                inference=False, **kwargs)["train_images_per_s"]
            print("\nunet training img/s: " + ", ".join(f"{k} {v:.2f} ({v / variants['float32']:.2f}x)"
                                                     for k, v in variants.items()), flush=True)
            save()

    if "slide" not in skip:
        from tools.benchmark_sections import measure_slide
        slide = results["slide"] = measure_slide(slide_sizes[0], slide_sizes, args.slide_window)
        print(f"\nslide inference (unet, {args.slide_window}-pixel windows, stride 2/3): "
              f"{'x'.join(map(str, slide_sizes[0]))} image slide {slide['slide']['megapixels_per_s']:.3f} MP/s "
              f"({slide['slide']['seconds']:.1f} s), whole {slide['whole']['megapixels_per_s']:.3f} MP/s "
              f"({slide['whole']['seconds']:.1f} s); slide peak RSS: " + ", ".join(
                  f"{size} {row['peak_rss_mb']:.0f} MB" for size, row in slide["memory"].items()), flush=True)
        save()

    if "memory" not in skip:
        memory = results["memory"] = measure_memory()
        print(f"\nmemory (2-epoch unet runs, 64x64): 100 images {memory[100]['peak_rss_mb']:.0f} MB, "
              f"1,000 images {memory[1000]['peak_rss_mb']:.0f} MB", flush=True)
        save()

    # === Targets ===
    print("\ntargets:")
    pipe, models = results.get("pipeline"), results.get("models") or {}
    if "overhead" in results:
        ratio = results["overhead"]["ratio"]
        print(f"  train.py / bare fit >= 0.95: {ratio:.2f} -> {verdict(ratio >= 0.95)}")
    if pipe:
        ratio = pipe["pipeline_images_per_s"] / pipe["naive_images_per_s"]
        print(f"  pipeline / naive loop >= 2.0: {ratio:.2f} -> {verdict(ratio >= 2)}")
        if "tfdata_images_per_s" in pipe:
            ratio = pipe["pipeline_images_per_s"] / pipe["tfdata_images_per_s"]
            print(f"  pipeline / tf.data >= 1.0: {ratio:.2f} -> {verdict(ratio >= 1)}")
        if models:
            fastest = max(models.items(), key=lambda item: item[1]["train_images_per_s"])
            ratio = pipe["pipeline_images_per_s"] / fastest[1]["train_images_per_s"]
            print(f"  input pipeline >= 10x fastest model's training ({fastest[0]}): {ratio:.1f}x -> "
                  f"{verdict(ratio >= 10)}")
            for label, row in models.items():  # the loader's share: its time per image over the model's
                share = row["train_images_per_s"] / pipe["pipeline_images_per_s"]
                print(f"  {label}: loader's share {share:.0%} of the step time -> "
                      f"{'the device waits for data' if share >= 1 else 'the loader keeps up'}")
    if "unet" in models:
        fraction = models["unet"]["fraction_of_conv_peak"]
        print(f"  unet training >= 50% of conv peak: {fraction:.0%} -> {verdict(fraction >= 0.5)}")
    if "memory" in results:
        growth = results["memory"][1000]["peak_rss_mb"] / results["memory"][100]["peak_rss_mb"] - 1
        print(f"  peak memory growth 100 -> 1,000 images < 10%: {growth:+.1%} -> {verdict(growth < 0.10)}")
    save()
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
