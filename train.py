"""Train a segmentation model on a folder data set.

    python train.py                                  # unet on the embedded demo set
    python train.py --data_root ../shared/datasets --dataset_name bbufdataset --epochs 50

Writes under `<train_save_path>/<exp_name>/<model_name>/`: the best checkpoint
by validation mean IoU, a resume checkpoint, `log.csv`, TensorBoard logs in
`log/` and the run configuration `config.json` (see utils/run.py).
"""
import argparse
import os
import sys
from dataclasses import dataclass

from utils.cli import crops_count, positive_int, slide_stride, str2bool  # sets TF_CPP_MIN_LOG_LEVEL before keras loads
from utils.errors import UserError, run_cli
from utils.image import CHANNEL_ORDERS, IMAGE_INITS
from utils.schedules import LR_SCHEDULES

DEFAULT_METRICS = "accuracy,iou_score,dice_score"


def parse_args(argv=None):
    """The flags; nothing here loads Keras, so `--help` and flag errors answer at once."""
    from losses import add_loss_arguments
    from Models import add_model_arguments
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # === The seed's flags ===
    p.add_argument("--exp_name", default="exp1", help="experiment name (a folder under --train_save_path)")
    p.add_argument("--dataset_name", default="demo", help="data set folder under --data_root")
    p.add_argument("--loss", default="ce", help="loss name (see losses/)")
    p.add_argument("--n_classes", type=positive_int, default=2, help="number of classes, background included")
    p.add_argument("--input_height", type=positive_int, default=224)
    p.add_argument("--input_width", type=positive_int, default=224)
    p.add_argument("--resize_op", type=int, choices=(1, 2, 3), default=1,
                   help="1: resize, 2: letterbox, 3: random crops of the full-resolution image "
                        "(validation and test.py then slide a window over each whole image)")
    p.add_argument("--validate", type=str2bool, default=True, help="validate after each epoch (true/false)")
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--train_batch_size", type=positive_int, default=4)
    p.add_argument("--val_batch_size", type=positive_int, default=4)
    p.add_argument("--model_name", default="unet", help="model name (see Models/)")
    p.add_argument("--train_save_path", default="weights/", help="root folder of all runs")
    p.add_argument("--resume", default="",
                   help="'auto', a run folder, or its resume checkpoint: continue that run where it stopped")
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
    p.add_argument("--aux_weight", type=float, default=0.4, help="loss weight of auxiliary heads (PSPNet: 0.4)")
    p.add_argument("--crops_per_image", type=crops_count, default="auto",
                   help="--resize_op 3: crops drawn from each image per epoch (auto: the number of "
                        "non-overlapping crops its area holds, at least 1)")
    p.add_argument("--stride", type=positive_int, default=None,
                   help="--resize_op 3: sliding-window stride in pixels for validation and test.py "
                        "(default: 2/3 of the window)")
    p.add_argument("--per_class_metrics", type=str2bool, default=True,
                   help="also log every metric per class (<metric>/<class> columns)")
    # === Scale, precision, schedules, fine-tuning ===
    p.add_argument("--mixed_precision", type=str2bool, default=False,
                   help="float16 (GPU) / bfloat16 (CPU) compute, float32 weights and softmax")
    p.add_argument("--jit_compile", type=str2bool, default=False, help="compile the train step with XLA")
    p.add_argument("--lr_schedule", default="constant", help=", ".join(LR_SCHEDULES))
    p.add_argument("--warmup_epochs", type=int, default=0, help="linear learning-rate warm-up epochs")
    p.add_argument("--lr_step", type=positive_int, default=10, help="step: epochs between decays")
    p.add_argument("--lr_gamma", type=float, default=0.1, help="step/plateau: decay factor")
    p.add_argument("--lr_patience", type=positive_int, default=5, help="plateau: epochs without a better score")
    p.add_argument("--max_minutes", type=float, default=0,
                   help="stop at the first epoch end after N minutes of training (0: no limit); "
                        "--resume continues the run")
    p.add_argument("--early_stopping", type=int, default=0,
                   help="stop after N epochs without a better validation mIoU (0: never)")
    add_weight_arguments(p)
    p.add_argument("--tensorboard_images", type=int, default=4,
                   help="validation images shown (image | truth | prediction) in TensorBoard each epoch")
    add_model_arguments(p)
    add_loss_arguments(p)
    args = p.parse_args(argv)
    args._given = given_flags(p, argv)
    return args


def add_weight_arguments(p):
    p.add_argument("--pretrained", default=None,
                   help="a .keras model or .h5 weights file: weights loaded into the layers of the same name")
    p.add_argument("--encoder_weights", default="none",
                   help="none, imagenet (keras.applications' file, cached in ~/.keras/models) or a "
                        "keras.applications weights file / .keras model: the encoder starts from it and the "
                        "input gets its preprocessing (docs/pretrained.md)")
    p.add_argument("--channel_order", default=None, choices=CHANNEL_ORDERS,
                   help="channel order the network sees (default bgr; --encoder_weights sets its own)")
    p.add_argument("--freeze_epochs", type=int, default=0,
                   help="keep the --pretrained/--encoder_weights layers frozen for the first N epochs, "
                        "then train everything")


def given_flags(parser, argv):
    """The flags the command line sets (a resumed run keeps its own value for every other one)."""
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]


# === Step 1 (utils/run.open_run): the run folder, new or resumed. Step 2: every name and size, resolved once to its registry entry ===

@dataclass
class Choices:
    """What the flags name, resolved and checked before any data is read or Keras loads."""
    model: object          # Models.ModelEntry
    model_options: dict
    metric_names: list
    loss_options: dict     # without --class_weights auto's values: those need the label counts
    base_lr: float
    encoder_family: str = None  # the keras.applications family --encoder_weights loads, or None


def resolve_names(args):
    from losses import check_loss_name, check_options, loss_options
    from metrics import parse_metric_names
    from Models import get_entry, given_options
    from utils.optimizers import default_lr
    entry = get_entry(args.model_name)
    options = entry.resolve(given_options(args))
    entry.check_size(args.input_height, args.input_width, options)
    metric_names = parse_metric_names(args.metrics)
    if "iou_score" not in metric_names:
        metric_names.append("iou_score")  # the checkpoint criterion
    if not args.n_classes <= args.ignore_label <= 255:
        raise UserError(f"--ignore_label {args.ignore_label} must be in {args.n_classes}..255 "
                        f"(above the class ids of --n_classes {args.n_classes})")
    check_loss_name(args.loss, args.n_classes)
    loss_opts = check_options(args.loss, args.n_classes, loss_options(args))
    check_training_flags(args)
    from utils.encoder_weights import choose_encoder_weights
    family = choose_encoder_weights(args, entry, options)
    base_lr = args.lr if args.lr is not None else default_lr(args.optimizer_name)
    return Choices(entry, options, metric_names, loss_opts, base_lr, family)


def check_training_flags(args):
    if args.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"--lr_schedule {args.lr_schedule!r} is unknown; valid: {', '.join(LR_SCHEDULES)}")
    for flag in ("warmup_epochs", "early_stopping", "freeze_epochs", "tensorboard_images", "max_minutes"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be >= 0")
    if args.warmup_epochs >= args.epochs:
        raise UserError(f"--warmup_epochs {args.warmup_epochs} must be below --epochs {args.epochs}")
    if not 0 < args.lr_gamma <= 1:
        raise UserError(f"--lr_gamma {args.lr_gamma}: must be in (0, 1]")
    if args.pretrained:
        from utils.model_files import check_model_file
        check_model_file(args.pretrained, "--pretrained", accepted=("keras", "h5"))
    encoder_weights = str(args.encoder_weights).strip().lower() != "none"
    if args.pretrained and encoder_weights:
        raise UserError("--pretrained and --encoder_weights both set starting weights; pass one of them")
    if args.freeze_epochs and not (args.pretrained or encoder_weights):
        raise UserError("--freeze_epochs freezes the layers loaded by --pretrained or --encoder_weights; "
                        "pass one of them too")
    slide_stride(args)
    if args.stride is not None and args.resize_op != 3:
        raise UserError("--stride sets the sliding window of --resize_op 3 runs; pass --resize_op 3 too")
    if args.early_stopping and not args.validate:
        raise UserError("--early_stopping watches the validation mIoU; it needs --validate true")


# === Step 3: the data splits ===

@dataclass
class Splits:
    train: list
    val: list               # None without --validate
    class_names: list
    class_counts: object    # per-class label pixels of the training split (only for --class_weights auto)
    prep: object            # data.Preprocessing
    augmenter: object       # None without --augment


def load_splits(args):
    """The cheap checks of tools/verify_dataset.py stop a bad data set before any training."""
    from data import Preprocessing, read_class_names
    from tools.verify_dataset import verify
    from utils.augment import build_augmenter
    class_names = read_class_names(args.data_root, args.dataset_name, args.n_classes)
    report = verify(args.data_root, args.dataset_name, args.n_classes, args.ignore_label, cheap=True)
    for warning in report.warnings:
        print(f"warning: {warning}")
    if not report.ok:
        more = f" (and {len(report.errors) - 1} more: run tools/verify_dataset.py)" if len(report.errors) > 1 else ""
        raise UserError(report.errors[0] + more)
    train = report.splits["train"].pairs
    # Counting decodes every training label (~3 ms each): only --class_weights auto needs the counts.
    counts = report.splits["train"].class_counts if str(args.class_weights).strip().lower() == "auto" else None
    line = f"train: {len(train)} pairs"
    if counts is not None:
        shares = counts[:args.n_classes] / max(1, counts[:args.n_classes].sum())
        line += "; class pixel shares: " + ", ".join(f"{i}={s:.3f}" for i, s in enumerate(shares))
    print(line)
    val = None
    if args.validate:
        split = next((s for s in ("val", "test") if s in report.splits), None)
        if split is None:
            raise UserError(f"--validate true but {os.path.join(args.data_root, args.dataset_name)} has no "
                            "val_image/val_label or test_image/test_label folders; pass --validate false")
        val = report.splits[split].pairs
        note = " (no val split: validating on the test split, as the original did)" if split == "test" else ""
        print(f"validation: {len(val)} pairs from {split}_image/{note}")
    prep = Preprocessing(args.input_height, args.input_width, args.image_init, args.resize_op, args.ignore_label,
                         args.channel_order)
    augmenter = None
    if args.augment:  # crops: scale/rotate/flip the full image, then crop (mmsegmentation's order)
        crops = {"full_image": True} if args.resize_op == 3 else {}
        augmenter = build_augmenter(args.input_height, args.input_width, args.ignore_label,
                                    keep_aspect=args.resize_op == 2, **crops)
    return Splits(train, val, class_names, counts, prep, augmenter)


# === Step 4: devices, the model, its loss and optimizer ===

@dataclass
class Session:
    model: object
    scope: object           # the distribution strategy's scope (a null context on one device)
    replicas: int
    devices: str
    policy: str
    loss: object
    loss_options: dict
    frozen: list            # layers loaded by --pretrained/--encoder_weights and frozen for --freeze_epochs
    compile: object         # compile(model): a new optimizer, same loss and metrics


def build_session(args, choices, run, splits):
    import keras

    from losses import get_loss
    from losses.class_weights import parse_class_weights
    from metrics import get_metrics
    from utils.distributed import make_strategy
    from utils.training import set_precision
    loss_opts = dict(choices.loss_options)
    if splits.class_counts is not None:  # --class_weights auto: median frequency of the training label counts
        loss_opts["class_weights"] = parse_class_weights("auto", args.n_classes, splits.class_counts)
    if loss_opts.get("class_weights"):
        print("class weights: " + ", ".join(f"{w:.3f}" for w in loss_opts["class_weights"]))
    loss = get_loss(args.loss, args.n_classes, args.ignore_label, **loss_opts)
    policy = set_precision(args.mixed_precision)
    scope, replicas, devices = make_strategy(args.multi_gpus)
    keras.utils.set_random_seed(args.seed + run.completed)

    def compile_model(model):
        from utils.optimizers import get_optimizer
        metrics = get_metrics(choices.metric_names, args.n_classes, args.ignore_label,
                              per_class=args.per_class_metrics, class_names=splits.class_names)
        heads = len(model.outputs)  # main head first, then auxiliary heads: metrics on the main head only
        model.compile(optimizer=get_optimizer(args.optimizer_name, choices.base_lr),
                      loss=loss if heads == 1 else [loss] * heads,
                      loss_weights=None if heads == 1 else [1.0] + [args.aux_weight] * (heads - 1),
                      metrics=metrics if heads == 1 else [metrics] + [[]] * (heads - 1),
                      jit_compile=args.jit_compile)

    with scope:
        model, frozen = (resume_model(args, run) if run.checkpoint
                         else new_model(args, choices, replicas))
        if not run.checkpoint:
            compile_model(model)
    return Session(model, scope, replicas, devices, policy, loss, loss_opts, frozen, compile_model)


def resume_model(args, run):
    import keras

    from utils.inference import register_custom_objects
    register_custom_objects(compiled=True)  # the checkpoint names the layers, loss and metric classes
    print(f"resuming from {run.checkpoint} after epoch {run.completed}")
    try:
        model = keras.models.load_model(run.checkpoint, safe_mode=True)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--resume: {run.checkpoint} does not load ({first_line})") from None
    model.jit_compile = args.jit_compile
    return model, run.saved_config.get("frozen_layers", [])


def new_model(args, choices, replicas):
    import keras

    from utils.distributed import synchronize_batch_norm
    from utils.encoder_weights import load_encoder_weights
    from utils.training import load_pretrained, set_frozen
    model = choices.model.build(args.n_classes, args.input_height, args.input_width, **choices.model_options)
    frozen, loaded = [], []
    if args.pretrained:
        loaded, source = load_pretrained(model, args.pretrained), f"--pretrained {args.pretrained}"
    elif choices.encoder_family:
        loaded = load_encoder_weights(model, choices.encoder_family, args.encoder_weights, args.input_height,
                                      args.input_width)
        source = f"--encoder_weights {args.encoder_weights}"
    if loaded and args.freeze_epochs:
        frozen = loaded
        set_frozen(model, frozen, True)
        if not model.trainable_weights:
            raise UserError(f"--freeze_epochs: every layer came from {source}; nothing would train")
    if replicas > 1 and keras.backend.backend() == "tensorflow":
        synchronize_batch_norm(model)
    return model, frozen


# === Step 5: the run folder's config.json ===

def write_run_config(args, choices, run, session, splits):
    import keras

    from utils.run import CONFIG_FILE, write_json_atomic
    os.makedirs(run.dir, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "resume" and not k.startswith("_")}
    # test.py repeats how the run was validated: a crop-trained model slides over the whole image.
    config.update(inference_mode="slide" if args.resize_op == 3 else "resize", stride=slide_stride(args))
    config.update(class_names=splits.class_names, loss_options=session.loss_options,
                  model_options=choices.model_options, frozen_layers=session.frozen,
                  encoder_family=choices.encoder_family,
                  augment_config=splits.augmenter.config() if splits.augmenter else None,
                  replicas=session.replicas, precision_policy=session.policy,
                  keras_version=keras.__version__, backend=keras.backend.backend())
    write_json_atomic(os.path.join(run.dir, CONFIG_FILE), config)


# === Step 6: data generators and callbacks ===

def make_generators(args, run, session, splits):
    from data import SegmentationDataset
    heads = len(session.model.outputs)
    train = SegmentationDataset(splits.train, args.train_batch_size * session.replicas, splits.prep, args.n_classes,
                                shuffle=True, seed=args.seed, augmenter=splits.augmenter, workers=args.workers,
                                start_epoch=run.completed, label_copies=heads,
                                **({"crops_per_image": args.crops_per_image} if args.resize_op == 3 else {}))
    if not splits.val or args.resize_op == 3:  # crops: NativeValidation scores the full images instead
        return train, None
    val = SegmentationDataset(splits.val, args.val_batch_size * session.replicas, splits.prep, args.n_classes,
                              shuffle=False, workers=args.workers, label_copies=heads)
    return train, val


def make_callbacks(args, choices, run, session, splits):
    """-> (callbacks, monitor). RunCommit comes first (after NativeValidation, whose scores it reads): it adds
    the learning rate to the logs the others see. --resize_op 3 shows no TensorBoard image panel: its
    validation images are full size, not network size."""
    import keras

    from utils.callbacks import EpochLearningRate, RunCommit, trim_log
    from utils.schedules import Schedule
    model = session.model
    # With auxiliary heads Keras prefixes the main head's metrics with its output name.
    score = "iou_score" if len(model.outputs) == 1 else f"{model.output_names[0]}_iou_score"
    monitor = f"val_{score}" if splits.val else score
    log_path = os.path.join(run.dir, "log.csv")
    trim_log(log_path, run.completed)
    schedule = Schedule(args.lr_schedule, choices.base_lr, args.epochs, args.warmup_epochs, args.lr_step,
                        args.lr_gamma, args.lr_patience)
    run.state.pop("stopped_early", None)  # finished_message let this run go on: its flags changed
    callbacks = [RunCommit(run.dir, args.model_name, monitor, run.state, schedule, log_path, args.epochs,
                           args.early_stopping),
                 EpochLearningRate(schedule, run.state),
                 keras.callbacks.TensorBoard(log_dir=os.path.join(run.dir, "log"))]
    if args.max_minutes:
        from utils.training import TimeLimit
        callbacks.append(TimeLimit(args.max_minutes * 60))
    if splits.val and args.resize_op == 3:  # before RunCommit, which reads its scores
        from metrics import get_metrics
        from utils.native_validation import NativeValidation

        def fresh_metrics():
            return get_metrics(choices.metric_names, args.n_classes, args.ignore_label,
                               per_class=args.per_class_metrics, class_names=splits.class_names)
        callbacks.insert(0, NativeValidation(splits.val, splits.prep, args.n_classes, fresh_metrics, session.loss,
                                             slide_stride(args), args.val_batch_size))
    if splits.val and args.tensorboard_images and args.resize_op != 3:
        from utils.monitoring import ValidationImages
        callbacks.append(ValidationImages.from_pairs(os.path.join(run.dir, "log"), splits.val[:args.tensorboard_images],
                                                     splits.prep, args.n_classes))
    return callbacks, monitor


# === Step 7: train, frozen pretrained layers first (--freeze_epochs), then everything ===

def train(args, run, session, data, callbacks):
    model, (train_data, val_data) = session.model, data
    verbose = 2 if not sys.stdout.isatty() else "auto"

    def fit(until):
        try:
            # shuffle=False: the data set draws its own order from (seed, epoch), so a resumed run sees the
            # batches an uninterrupted one would (Keras' shuffle reorders batches with Python's `random`).
            model.fit(train_data, validation_data=val_data, epochs=until, initial_epoch=run.completed,
                      callbacks=callbacks, verbose=verbose, shuffle=False)
        except Exception:
            # TensorFlow re-raises a batch's UserError (a bad label file) as its own error type.
            for generator in (train_data, val_data):
                if generator is not None and generator.user_error is not None:
                    raise generator.user_error from None
            raise

    frozen_until = min(args.freeze_epochs, args.epochs)
    if session.frozen and run.completed < frozen_until:
        print(f"epochs {run.completed + 1}-{frozen_until}: {len(session.frozen)} pretrained layers frozen")
        fit(frozen_until)
    if model.stop_training or run.completed >= args.epochs:
        return
    still_frozen = {layer.name for layer in model._flatten_layers() if not layer.trainable} & set(session.frozen)
    if still_frozen:
        from utils.training import set_frozen
        with session.scope:
            set_frozen(model, session.frozen, False)
            session.compile(model)  # a new optimizer: the unfrozen weights need their own slots
        print(f"epoch {run.completed + 1} on: all layers trainable")
    fit(args.epochs)


def report(run, monitor):
    from utils.monitoring import write_curves
    log_path = os.path.join(run.dir, "log.csv")
    if os.path.isfile(log_path):
        try:
            print(f"loss and metric curves: {write_curves(log_path, os.path.join(run.dir, 'curves.png'))}")
        except Exception as exc:  # a plot must never fail a finished run
            print(f"warning: could not write curves.png ({exc})")
    state = run.state
    best = os.path.join(run.dir, state["best_checkpoint"]) if state.get("best_checkpoint") else None
    score = state["best_score"] if state.get("best_score") is not None else float("nan")
    print(f"best {monitor}: {score:.6f} at epoch {state.get('best_epoch')}; best checkpoint: {best}")


# === Main ===

def main(argv=None):
    from utils.run import finished_message, open_run
    args = parse_args(argv)
    run = open_run(args)
    choices = resolve_names(args)
    done = finished_message(args, run)
    if done:
        print(done)
        return 0
    from utils.backend import import_keras
    import_keras()  # before the data code, which subclasses keras.utils.PyDataset
    splits = load_splits(args)
    session = build_session(args, choices, run, splits)
    data = make_generators(args, run, session, splits)
    print(f"{args.model_name}: {session.model.count_params():,} parameters, input {args.input_height}x"
          f"{args.input_width}, {args.n_classes} classes, loss {args.loss}, optimizer {args.optimizer_name} "
          f"(lr {choices.base_lr:g}, schedule {args.lr_schedule}), precision {session.policy}")
    print(f"devices: {session.devices}; {session.replicas} replica(s) x batch {args.train_batch_size} = "
          f"global batch {args.train_batch_size * session.replicas}")
    write_run_config(args, choices, run, session, splits)
    callbacks, monitor = make_callbacks(args, choices, run, session, splits)
    print(f"saving to {run.dir}; best checkpoint by {monitor} (mean IoU over classes)")
    train(args, run, session, data, callbacks)
    report(run, monitor)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
