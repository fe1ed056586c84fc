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

from utils.errors import UserError

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"


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
