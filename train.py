"""Train a segmentation model on a folder data set.

    python train.py                                  # unet on the embedded demo set
    python train.py --data_root ../shared/datasets --dataset_name bbufdataset --epochs 50

Writes under `<train_save_path>/<exp_name>/<model_name>/`: the best checkpoint
by validation mean IoU, a resume checkpoint, `log.csv`, TensorBoard logs in
`log/` and the run configuration `config.json` (see utils/run.py).
"""
import argparse
import csv
import os
import sys

from utils.cli import positive_int, str2bool  # sets TF_CPP_MIN_LOG_LEVEL before keras loads
from utils.errors import UserError, run_cli
from utils.image import IMAGE_INITS

DEFAULT_METRICS = "accuracy,iou_score,dice_score"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # === The seed's flags ===
    p.add_argument("--exp_name", default="exp1", help="experiment name (a folder under --train_save_path)")
    p.add_argument("--dataset_name", default="demo", help="data set folder under --data_root")
    p.add_argument("--loss", default="ce", help="loss name (see losses/)")
    p.add_argument("--n_classes", type=positive_int, default=2, help="number of classes, background included")
    p.add_argument("--input_height", type=positive_int, default=224)
    p.add_argument("--input_width", type=positive_int, default=224)
    p.add_argument("--resize_op", type=int, choices=(1, 2), default=1, help="1: resize, 2: letterbox")
    p.add_argument("--validate", type=str2bool, default=True, help="validate after each epoch (true/false)")
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--train_batch_size", type=positive_int, default=4)
    p.add_argument("--val_batch_size", type=positive_int, default=4)
    p.add_argument("--model_name", default="unet", help="model name (see Models/)")
    p.add_argument("--train_save_path", default="weights/", help="root folder of all runs")
    p.add_argument("--resume", default="", help="'auto' or a run folder / checkpoint to continue")
    p.add_argument("--optimizer_name", default="adadelta", help="sgd, adam, adamw, rmsprop, adadelta, nadam")
    p.add_argument("--image_init", default="divide", choices=IMAGE_INITS)
    p.add_argument("--multi_gpus", type=str2bool, default=False)
    # === Additions ===
    p.add_argument("--data_root", default="data", help="folder holding the data sets")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling and augmentation")
    p.add_argument("--ignore_label", type=int, default=255, help="label value excluded from loss and metrics")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help="comma-separated metric names")
    p.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1),
                   help="threads decoding batches")
    p.add_argument("--augment", type=str2bool, default=False,
                   help="online augmentation: random scale, crop, flip, rotation, colour jitter (true/false)")
    # === Model options (only for the models that take them) ===
    p.add_argument("--backbone", default=None, help="pspnet: vanilla|mobilenet|resnet50; deeplab_v3+: mobilenet|xception")
    p.add_argument("--downsample_factor", type=int, default=None, help="deeplab_v3+: output stride 8 or 16")
    p.add_argument("--aux_branch", type=str2bool, default=None, help="pspnet: train an auxiliary head too")
    p.add_argument("--aux_weight", type=float, default=0.4, help="loss weight of the auxiliary head (PSPNet: 0.4)")
    p.add_argument("--per_class_metrics", type=str2bool, default=True,
                   help="also log every metric per class (<metric>/<class> columns)")
    # === Scale, precision, schedules, fine-tuning ===
    p.add_argument("--mixed_precision", type=str2bool, default=False,
                   help="float16 (GPU) / bfloat16 (CPU) compute, float32 weights and softmax")
    p.add_argument("--jit_compile", type=str2bool, default=False, help="compile the train step with XLA")
    p.add_argument("--lr_schedule", default="constant", help="constant, step, cos, poly or plateau")
    p.add_argument("--warmup_epochs", type=int, default=0, help="linear learning-rate warm-up epochs")
    p.add_argument("--lr_step", type=positive_int, default=10, help="step: epochs between decays")
    p.add_argument("--lr_gamma", type=float, default=0.1, help="step/plateau: decay factor")
    p.add_argument("--lr_patience", type=positive_int, default=5, help="plateau: epochs without a better score")
    p.add_argument("--early_stopping", type=int, default=0,
                   help="stop after N epochs without a better validation mIoU (0: never)")
    p.add_argument("--pretrained", default=None,
                   help="a .keras model or .h5 weights file: weights loaded into the layers of the same name")
    p.add_argument("--freeze_epochs", type=int, default=0,
                   help="keep the --pretrained layers frozen for the first N epochs, then train everything")
    p.add_argument("--tensorboard_images", type=int, default=4,
                   help="validation images shown (image | truth | prediction) in TensorBoard each epoch")
    from losses import add_loss_arguments
    add_loss_arguments(p)
    return p.parse_args(argv)


# === Run folder and resume ===

def resolve_resume(args):
    """-> (run_dir, checkpoint to load or None, state dict or None)."""
    from utils.run import STATE_FILE, read_json
    run_dir = os.path.join(args.train_save_path, args.exp_name, args.model_name)
    if not args.resume:
        if os.path.exists(os.path.join(run_dir, STATE_FILE)) or os.path.exists(os.path.join(run_dir, "config.json")):
            raise UserError(f"{run_dir} already holds a run; pass --resume auto to continue it, "
                            "or choose another --exp_name")
        return run_dir, None, None
    if args.resume != "auto":
        target = args.resume
        if not os.path.exists(target):
            raise UserError(f"--resume {target}: no such file or folder")
        run_dir = target if os.path.isdir(target) else os.path.dirname(os.path.abspath(target))
    state_path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(state_path):
        if args.resume == "auto":
            return run_dir, None, None  # nothing to resume yet: start fresh
        raise UserError(f"--resume {args.resume}: {state_path} not found (not a run folder of train.py)")
    state = read_json(state_path, "run state")
    checkpoint = os.path.join(run_dir, state["resume_checkpoint"])
    if args.resume not in ("auto", run_dir) and os.path.isfile(args.resume):
        checkpoint = args.resume
    return run_dir, checkpoint, state


def load_run_config(args, run_dir):
    """On resume, the run's own settings win; only --epochs, --workers and --early_stopping may change."""
    from utils.run import read_json
    saved = read_json(os.path.join(run_dir, "config.json"), "run configuration")
    for key, value in saved.items():
        if key not in ("epochs", "workers", "resume", "early_stopping") and hasattr(args, key):
            setattr(args, key, value)
    return saved


def check_training_flags(args):
    from utils.training import LR_SCHEDULES
    if args.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"--lr_schedule {args.lr_schedule!r} is unknown; valid: {', '.join(LR_SCHEDULES)}")
    for flag in ("warmup_epochs", "early_stopping", "freeze_epochs", "tensorboard_images"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be >= 0")
    if args.warmup_epochs >= args.epochs:
        raise UserError(f"--warmup_epochs {args.warmup_epochs} must be below --epochs {args.epochs}")
    if not 0 < args.lr_gamma <= 1:
        raise UserError(f"--lr_gamma {args.lr_gamma}: must be in (0, 1]")
    if args.freeze_epochs and not args.pretrained:
        raise UserError("--freeze_epochs freezes the layers loaded by --pretrained; pass --pretrained too")
    if args.early_stopping and not args.validate:
        raise UserError("--early_stopping watches the validation mIoU; it needs --validate true")


def trim_log(log_path, completed_epochs):
    """Drop log.csv rows of epochs after the resume point, so the log stays continuous."""
    if not os.path.isfile(log_path):
        return
    with open(log_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < completed_epochs]
    with open(log_path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(kept)


# === Main ===

def main(argv=None):
    args = parse_args(argv)
    if args.multi_gpus and os.environ.get("TF_CONFIG"):
        from utils.training import worker_index
        if worker_index() != 0:  # only the chief writes the run folder; the others keep a private copy
            args.train_save_path = os.path.join(args.train_save_path, f".worker{worker_index()}")
    run_dir, checkpoint, state = resolve_resume(args)
    saved_config = load_run_config(args, run_dir) if checkpoint else {}
    check_training_flags(args)
    completed = state["epoch"] if state else 0
    if completed >= args.epochs:
        print(f"{run_dir}: all {args.epochs} epochs already done; best checkpoint: "
              f"{os.path.join(run_dir, state['best_checkpoint'] or '')}")
        return 0

    import keras

    import numpy as np

    from data import Preprocessing, SegmentationDataset, load_pair, read_class_names
    from utils.image import fit_image, read_image
    from losses import get_loss, loss_options
    from metrics import get_metrics, parse_metric_names
    from tools.verify_dataset import verify
    from utils.augment import build_augmenter
    from Models import build_model, check_options, get_builder
    from utils.callbacks import RunCheckpoint
    from utils.optimizers import check_name, default_lr, get_optimizer
    from utils.run import write_json_atomic

    # Check every name and size before touching data or building anything.
    builder = get_builder(args.model_name)
    check_name(args.optimizer_name)
    options = {k: getattr(args, k) for k in ("backbone", "downsample_factor", "aux_branch")
               if getattr(args, k) is not None}
    check_options(args.model_name, options)
    # Some models' size rule depends on their options (deeplab_v3+'s output stride).
    rule_for = getattr(builder, "size_rule_for", None)
    (rule_for(**options) if rule_for else builder.size_rule).check(args.model_name, args.input_height,
                                                                   args.input_width)
    metric_names = parse_metric_names(args.metrics)
    if "iou_score" not in metric_names:
        metric_names.append("iou_score")  # the checkpoint criterion
    if not args.n_classes <= args.ignore_label <= 255:
        raise UserError(f"--ignore_label {args.ignore_label} must be in {args.n_classes}..255 "
                        f"(above the class ids of --n_classes {args.n_classes})")
    get_loss(args.loss, args.n_classes, args.ignore_label, **loss_options(args))  # checks names and options
    class_names = read_class_names(args.data_root, args.dataset_name, args.n_classes)

    # === Data: the cheap checks of tools/verify_dataset.py stop a bad data set before any training ===
    report = verify(args.data_root, args.dataset_name, args.n_classes, args.ignore_label, cheap=True)
    for warning in report.warnings:
        print(f"warning: {warning}")
    if not report.ok:
        more = f" (and {len(report.errors) - 1} more: run tools/verify_dataset.py)" if len(report.errors) > 1 else ""
        raise UserError(report.errors[0] + more)
    train_pairs = report.splits["train"].pairs
    val_pairs, val_split = None, None
    if args.validate:
        val_split = next((s for s in ("val", "test") if s in report.splits), None)
        if val_split is None:
            raise UserError(f"--validate true but {os.path.join(args.data_root, args.dataset_name)} has no "
                            "val_image/val_label or test_image/test_label folders; pass --validate false")
        val_pairs = report.splits[val_split].pairs
    counts = report.splits["train"].class_counts
    loss_opts = loss_options(args, counts)  # --class_weights auto: median frequency of these counts
    loss = get_loss(args.loss, args.n_classes, args.ignore_label, **loss_opts)
    if loss_opts.get("class_weights"):
        print("class weights: " + ", ".join(f"{w:.3f}" for w in loss_opts["class_weights"]))
    shares = counts[:args.n_classes] / max(1, counts[:args.n_classes].sum())
    print(f"train: {len(train_pairs)} pairs; class pixel shares: "
          + ", ".join(f"{i}={s:.3f}" for i, s in enumerate(shares)))
    if val_pairs:
        note = " (no val split: validating on the test split, as the original did)" if val_split == "test" else ""
        print(f"validation: {len(val_pairs)} pairs from {val_split}_image/{note}")

    prep = Preprocessing(args.input_height, args.input_width, args.image_init, args.resize_op, args.ignore_label)
    augmenter = (build_augmenter(args.input_height, args.input_width, args.ignore_label,
                                 keep_aspect=args.resize_op == 2) if args.augment else None)

    # === Devices, precision, model ===
    from utils.training import (EarlyStopping, LearningRateControl, load_pretrained, make_strategy,
                                set_frozen, set_precision, synchronize_batch_norm)
    from utils.monitoring import ValidationImages, write_curves
    policy = set_precision(args.mixed_precision)
    scope, replicas, devices = make_strategy(args.multi_gpus)
    keras.utils.set_random_seed(args.seed + completed)
    frozen = saved_config.get("frozen_layers", [])
    base_lr = args.lr if args.lr is not None else default_lr(args.optimizer_name)

    def compile_model(model):
        metrics = get_metrics(metric_names, args.n_classes, args.ignore_label, per_class=args.per_class_metrics,
                              class_names=class_names)
        optimizer = get_optimizer(args.optimizer_name, base_lr)
        if len(model.outputs) == 1:
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=args.jit_compile)
        else:  # main head first, then auxiliary heads: one loss each, metrics on the main head only
            aux = len(model.outputs) - 1
            model.compile(optimizer=optimizer, loss=[loss] * (aux + 1), loss_weights=[1.0] + [args.aux_weight] * aux,
                          metrics=[metrics] + [[]] * aux, jit_compile=args.jit_compile)

    with scope:
        if checkpoint:
            print(f"resuming from {checkpoint} after epoch {completed}")
            import metrics.confusion  # noqa: F401  registers the compiled metrics' classes for load_model
            model = keras.models.load_model(checkpoint, safe_mode=True)
            model.jit_compile = args.jit_compile
        else:
            model = build_model(args.model_name, args.n_classes, args.input_height, args.input_width, **options)
            if args.pretrained:
                loaded = load_pretrained(model, args.pretrained)
                if args.freeze_epochs:
                    frozen = loaded
                    set_frozen(model, frozen, True)
                    if not model.trainable_weights:
                        raise UserError(f"--freeze_epochs: every layer came from --pretrained {args.pretrained}; "
                                        "nothing would train")
            if replicas > 1 and keras.backend.backend() == "tensorflow":
                synchronize_batch_norm(model)
            compile_model(model)
    copies = len(model.outputs)
    global_train_batch, global_val_batch = args.train_batch_size * replicas, args.val_batch_size * replicas
    train_data = SegmentationDataset(train_pairs, global_train_batch, prep, args.n_classes, shuffle=True,
                                     seed=args.seed, augmenter=augmenter, workers=args.workers,
                                     start_epoch=completed, label_copies=copies)
    val_data = (SegmentationDataset(val_pairs, global_val_batch, prep, args.n_classes, shuffle=False,
                                    workers=args.workers, label_copies=copies) if val_pairs else None)
    print(f"{args.model_name}: {model.count_params():,} parameters, input {args.input_height}x{args.input_width}, "
          f"{args.n_classes} classes, loss {args.loss}, optimizer {args.optimizer_name} "
          f"(lr {base_lr:g}, schedule {args.lr_schedule}), precision {policy}")
    print(f"devices: {devices}; {replicas} replica(s) x batch {args.train_batch_size} = "
          f"global batch {global_train_batch}")

    # === Run folder ===
    os.makedirs(run_dir, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "resume"}
    config.update(class_names=class_names, loss_options=loss_opts, model_options=options,
                  augment_config=augmenter.config() if augmenter else None, frozen_layers=frozen,
                  replicas=replicas, precision_policy=policy,
                  keras_version=keras.__version__, backend=keras.backend.backend())
    write_json_atomic(os.path.join(run_dir, "config.json"), config)
    # With auxiliary heads Keras prefixes the main head's metrics with its output name.
    score = "iou_score" if copies == 1 else f"{model.output_names[0]}_iou_score"
    monitor = f"val_{score}" if val_data else score
    log_path = os.path.join(run_dir, "log.csv")
    trim_log(log_path, completed)
    checkpointer = RunCheckpoint(run_dir, args.model_name, monitor, state)
    lr_control = LearningRateControl(args.lr_schedule, base_lr, args.epochs, args.warmup_epochs, args.lr_step,
                                     args.lr_gamma, args.lr_patience, monitor, checkpointer.state)
    extras = []
    if val_pairs and args.tensorboard_images:
        shown = val_pairs[:args.tensorboard_images]
        raw = [load_pair(image, label, prep, args.n_classes) for image, label in shown]
        display = [fit_image(read_image(image), args.input_height, args.input_width, args.resize_op)
                   for image, _ in shown]
        extras.append(ValidationImages(os.path.join(run_dir, "log"), np.stack([r[0] for r in raw]),
                                       np.stack(display), np.stack([r[1] for r in raw]), args.ignore_label))
    print(f"saving to {run_dir}; best checkpoint by {monitor} (mean IoU over classes)")

    def fit(until, first):
        """Train epochs first+1..until; the callbacks are new each call so the CSV log appends."""
        # Order matters for kill -9: the epoch's log row is written before state.json commits the
        # epoch (a resume trims rows past the committed epoch), and early stopping reads the new state.
        callbacks = [lr_control, *extras, keras.callbacks.CSVLogger(log_path, append=first > 0),
                     keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "log")), checkpointer]
        if args.early_stopping:
            callbacks.append(EarlyStopping(args.early_stopping, checkpointer.state))
        model.fit(train_data, validation_data=val_data, epochs=until, initial_epoch=first,
                  callbacks=callbacks, verbose=2 if not sys.stdout.isatty() else "auto")

    # === Train: frozen pretrained layers first (--freeze_epochs), then everything ===
    if frozen and completed < args.freeze_epochs:
        print(f"epochs {completed + 1}-{min(args.freeze_epochs, args.epochs)}: {len(frozen)} pretrained layers frozen")
        fit(min(args.freeze_epochs, args.epochs), completed)
        completed = max(completed, min(args.freeze_epochs, args.epochs))
    still_frozen = {layer.name for layer in model._flatten_layers() if not layer.trainable} & set(frozen)
    if still_frozen and completed >= args.freeze_epochs and not model.stop_training:
        with scope:
            set_frozen(model, frozen, False)
            compile_model(model)  # a new optimizer: the unfrozen weights need their own slots
        print(f"epoch {completed + 1} on: all layers trainable")
    if completed < args.epochs and not model.stop_training:
        fit(args.epochs, completed)
    if os.path.isfile(log_path):
        try:
            curves = write_curves(log_path, os.path.join(run_dir, "curves.png"))
            print(f"loss and metric curves: {curves}")
        except Exception as exc:  # a plot must never fail a finished run
            print(f"warning: could not write curves.png ({exc})")

    final = checkpointer.state
    best = os.path.join(run_dir, final["best_checkpoint"]) if final["best_checkpoint"] else None
    print(f"best {monitor}: {final['best_score'] if final['best_score'] is not None else float('nan'):.6f} "
          f"at epoch {final['best_epoch']}; best checkpoint: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
