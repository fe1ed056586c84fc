"""A training run's folder: configuration, resume state, atomic writes.

`<train_save_path>/<exp_name>/<model_name>/` holds
- `config.json`   every setting of the run (test.py reads it beside a checkpoint);
- `state.json`    the last completed epoch, the resume checkpoint, the best score;
- `resume-epochNNN.keras` model + optimizer state after the last completed epoch;
- `<model>.<epoch:02d>-<score:.6f>.keras` the best checkpoint so far;
- `log.csv`, `log/` (TensorBoard).
"""
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field

from utils.errors import UserError

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
# On resume the run's own settings win, except these when given (how much longer, how fast to load).
RESUME_MAY_CHANGE = ("epochs", "workers", "resume", "early_stopping", "max_minutes")


@contextlib.contextmanager
def _replace_when_written(path, tmp):
    """Yield `tmp` to write; then rename it over `path` atomically, or remove it if writing failed."""
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path, data):
    """Write JSON so that a crash leaves either the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".json")
    with _replace_when_written(path, tmp):
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())


def save_model_atomic(model, path):
    """`model.save` to a temporary name in the same folder, then an atomic rename."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    with _replace_when_written(path, tmp):
        model.save(tmp)  # Keras insists on the .keras suffix, which tmp keeps
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())


def read_json(path, what):
    """The JSON object in `path`; anything else (missing, a folder, unreadable, not UTF-8, not JSON, JSON
    that is not an object) is a one-line `UserError` naming `path` and `what` it should hold."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: {what} is a folder, expected a JSON file") from None
    except OSError as exc:
        raise UserError(f"{path}: {what} cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: {what} is not UTF-8 text, so not JSON") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: {what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise UserError(f"{path}: {what} is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
        raise UserError(f"{path}: {what} must be a JSON object, not {kinds.get(type(data), 'null')}")
    return data


def find_run_config(weights_path):
    """The run config beside a checkpoint (or in a run folder), or None."""
    folder = weights_path if os.path.isdir(weights_path) else os.path.dirname(os.path.abspath(weights_path))
    path = os.path.join(folder, CONFIG_FILE)
    return read_json(path, "run configuration") if os.path.isfile(path) else None


def best_checkpoint(run_dir):
    """The best checkpoint recorded in a run folder's state.json."""
    state_path = os.path.join(run_dir, STATE_FILE)
    state = read_json(state_path, "run state")
    best = state.get("best_checkpoint")
    if not best or not os.path.isfile(os.path.join(run_dir, best)):
        raise UserError(f"{run_dir}: the run has no best checkpoint yet (see {STATE_FILE})")
    return os.path.join(run_dir, best)


# === Opening a run: new, or resumed where it stopped (train.py) ===

@dataclass
class Run:
    """The run folder and its state.json (`state` is empty for a new run; RunCommit owns it from here)."""
    dir: str
    checkpoint: str = None  # the resume checkpoint to load, or None for a new run
    state: dict = field(default_factory=dict)
    saved_config: dict = field(default_factory=dict)

    @property
    def completed(self):
        return self.state.get("epoch", 0)


def open_run(args):
    """-> Run for train.py's parsed `args` (`args._given`: the flags the command line set).

    On resume the run's config.json replaces the flags, but those of
    RESUME_MAY_CHANGE that are given. A new run refuses a folder that already
    holds one; `--resume` takes `auto`, the run folder or its resume checkpoint.
    """
    if args.multi_gpus and os.environ.get("TF_CONFIG"):
        from utils.distributed import worker_index
        if worker_index() != 0:  # only the chief writes the run folder; the others keep a private copy
            args.train_save_path = os.path.join(args.train_save_path, f".worker{worker_index()}")
    run_dir = os.path.join(args.train_save_path, args.exp_name, args.model_name)
    if not args.resume:
        if any(os.path.exists(os.path.join(run_dir, f)) for f in (STATE_FILE, CONFIG_FILE)):
            raise UserError(f"{run_dir} already holds a run; pass --resume auto to continue it, "
                            "or choose another --exp_name")
        return Run(run_dir)
    if args.resume != "auto":
        if not os.path.exists(args.resume):
            raise UserError(f"--resume {args.resume}: no such file or folder")
        run_dir = args.resume if os.path.isdir(args.resume) else os.path.dirname(os.path.abspath(args.resume))
    state_path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(state_path):
        if args.resume == "auto":
            return Run(run_dir)  # nothing to resume yet: start fresh
        raise UserError(f"--resume {args.resume}: {state_path} not found (not a run folder of train.py)")
    state = check_state(read_json(state_path, "run state"), state_path)
    checkpoint = os.path.join(run_dir, state["resume_checkpoint"])
    if os.path.isfile(args.resume) and os.path.abspath(args.resume) != os.path.abspath(checkpoint):
        raise UserError(f"--resume {args.resume}: only the run folder or its resume checkpoint "
                        f"({state['resume_checkpoint']}, after epoch {state['epoch']}) continues the run; "
                        f"to start a new run from these weights pass --pretrained {args.resume}")
    from utils.model_files import check_model_file
    check_model_file(checkpoint, "--resume", accepted=("keras",))
    saved = read_json(os.path.join(run_dir, CONFIG_FILE), "run configuration")
    for key, value in saved.items():
        if hasattr(args, key) and not (key in RESUME_MAY_CHANGE and key in args._given):
            setattr(args, key, value)
    return Run(run_dir, checkpoint, state, saved)


def check_state(state, path):
    """state.json as train.py wrote it, or one line saying what is wrong with it."""
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) \
            or not isinstance(state.get("resume_checkpoint"), str):
        raise UserError(f"{path}: not a train.py run state (needs an integer 'epoch' and a 'resume_checkpoint' "
                        "file name); the run cannot resume")
    return state


def finished_message(args, run):
    """Why a resumed run has nothing left to do, or None."""
    best = os.path.join(run.dir, run.state.get("best_checkpoint") or "")
    if run.completed >= args.epochs:
        return f"{run.dir}: all {args.epochs} epochs already done; best checkpoint: {best}"
    stopped = run.state.get("stopped_early")
    if stopped and stopped.get("patience") == args.early_stopping and stopped.get("epochs") == args.epochs:
        return (f"{run.dir}: stopped early at epoch {stopped['epoch']} (no better {run.state.get('monitor')} "
                f"for {stopped['patience']} epochs); best checkpoint: {best}. To train on, pass another "
                "--early_stopping (0: off) or --epochs")
    return None
