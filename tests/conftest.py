"""Shared fixtures: the repo on sys.path, quiet TensorFlow, tiny synthetic data sets."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(os.path.dirname(ROOT), "shared", "datasets")
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def shared_dataset(name):
    """Path of a data set in ../shared/datasets; skips the test when it is absent (a fresh clone)."""
    path = os.path.join(SHARED_DATASETS, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} not present")
    return path


def write_dataset(root, name="tiny", n_train=6, n_test=3, size=(40, 48), n_classes=2, seed=0,
                  splits=("train", "test")):
    """A tiny data set in the toolkit's layout: PNG images whose bright square is class 1 (2, ...)."""
    import cv2
    rng = np.random.default_rng(seed)
    base = os.path.join(root, name)
    for split, count in zip(splits, (n_train, n_test, n_test)):
        os.makedirs(os.path.join(base, f"{split}_image"), exist_ok=True)
        os.makedirs(os.path.join(base, f"{split}_label"), exist_ok=True)
        for i in range(count):
            label = np.zeros(size, np.uint8)
            for cls in range(1, n_classes):
                y, x = rng.integers(0, size[0] - 10), rng.integers(0, size[1] - 10)
                label[y:y + 10, x:x + 10] = cls
            image = (label[..., None] * (200 // max(1, n_classes - 1)) + rng.integers(0, 40, size + (3,)))
            cv2.imwrite(os.path.join(base, f"{split}_image", f"{split}{i}.png"), image.astype(np.uint8))
            cv2.imwrite(os.path.join(base, f"{split}_label", f"{split}{i}.png"), label)
    return base


@pytest.fixture
def tiny_dataset(tmp_path):
    write_dataset(str(tmp_path))
    return str(tmp_path), "tiny"


# === Running the scripts as a user does ===

def run_script(script, *args, cwd=ROOT, env=None, timeout=600):
    """Run `python <script> args...` from the repo (script relative to ROOT); -> CompletedProcess."""
    import subprocess
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """Exit 2, no traceback, exactly one `error: ` line on stderr holding every fragment."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def read_log(run_dir):
    """log.csv of a train.py run as a list of dicts."""
    import csv
    with open(os.path.join(run_dir, "log.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def read_state(run_dir):
    import json
    with open(os.path.join(run_dir, "state.json")) as handle:
        return json.load(handle)


def run_without(code, *args, modules=("keras", "tensorflow")):
    """Run `python -c code args...` in the repo, then fail (non-zero exit) if it imported any of `modules`:
    flag parsing and name checks must answer before Keras loads."""
    import subprocess
    check = ("\nimport sys as _sys\n_bad = sorted({m.split('.')[0] for m in _sys.modules} & set(%r))\n"
             "assert not _bad, f'imported: {_bad}'\n" % (tuple(modules),))
    return subprocess.run([sys.executable, "-c", code + check, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
