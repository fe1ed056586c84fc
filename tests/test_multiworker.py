"""Several machines: two train.py workers on 127.0.0.1 (TF_CONFIG, MultiWorkerMirroredStrategy) compute
what one process computes on the global batch; TF_CONFIG's task decides which worker writes the run folder."""
import json
import math
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, read_log, read_state, write_dataset


def tf_config(ports, index, kind="worker"):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": kind, "index": index}})


# === The worker's rank ===

@pytest.mark.parametrize("config, rank", [
    (None, 0),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', 1),
    # With a chief task, worker 0 is not the chief: it must not write the chief's run folder.
    ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', 1),
    ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', 0),
    ('{"cluster": {"worker": ["a:1"], "evaluator": ["e:1"]}, "task": {"type": "evaluator", "index": 0}}', -1),
])
def test_worker_index_is_zero_for_the_chief_only(monkeypatch, config, rank):
    from utils.distributed import worker_index
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", config)
    assert worker_index() == rank


@pytest.mark.parametrize("config, fragment", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "integer 'index'"),
    ('{"cluster": ["a:1"], "task": {"type": "worker", "index": 0}}', "'cluster' must map"),
])
def test_bad_tf_config_is_a_user_error(monkeypatch, config, fragment):
    from utils.distributed import worker_index
    from utils.errors import UserError
    monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(UserError, match=fragment):
        worker_index()


def test_a_cluster_without_multi_gpus_is_refused(monkeypatch):
    """Each worker would train alone, and all of them would write the chief's run folder."""
    from utils.distributed import make_strategy
    from utils.errors import UserError
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    with pytest.raises(UserError, match="cluster of 2 tasks but --multi_gpus is false"):
        make_strategy(False)
    monkeypatch.setenv("TF_CONFIG", tf_config([1], 0))
    assert make_strategy(False)[1:] == (1, "one device")


# === Two workers on this machine ===

def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(args, logs, timeout=300):
    """Start one train.py per log file as the workers of one cluster; -> their exit codes.

    A worker that fails leaves the others blocked in a collective (and deaf to SIGTERM), so the
    first failure, or the deadline, SIGKILLs every worker still running.
    """
    ports = free_ports(len(logs))
    processes = []
    try:
        for index, log in enumerate(logs):
            env = dict(os.environ, TF_CONFIG=tf_config(ports, index), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
            with open(log, "w") as handle:
                processes.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)],
                                                  cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT))
        deadline = time.time() + timeout
        while time.time() < deadline:
            codes = [p.poll() for p in processes]
            if all(code is not None for code in codes) or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.5)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()
    return [p.returncode for p in processes]


@pytest.mark.slow
def test_two_workers_match_one_process_on_the_global_batch(tmp_path):
    """Batch 2 on each of two workers (global batch 4) computes what batch 4 computes in one process.

    One epoch (two optimizer steps); as in test_training.py's two-device test, the replicas' gradient
    sum rounds differently from one device's batch mean (measured: loss 1.5e-7 relative, weights
    9e-7), and unet's batch norm is synchronised across the workers or the weights would differ
    by far more. The reference run trains meanwhile, to keep the test near two minutes.
    """
    import numpy as np

    from utils.inference import load_keras_model
    data = str(tmp_path / "data")
    write_dataset(data, n_train=8, n_test=4)

    def args(save, batch, *extra):
        return ["--data_root", data, "--dataset_name", "tiny", "--input_height", 32, "--input_width", 32,
                "--epochs", 1, "--seed", 3, "--optimizer_name", "sgd", "--tensorboard_images", 2,
                "--train_save_path", str(tmp_path / save), "--train_batch_size", batch, "--val_batch_size", batch,
                *extra]

    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    full_env.pop("TF_CONFIG", None)
    single = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args("one", 4))], cwd=ROOT,
                              env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
        codes = run_workers(args("two", 2, "--multi_gpus", "true"), logs)
        single_out = single.communicate(timeout=300)[0]
    finally:
        if single.poll() is None:
            single.kill()
            single.wait()
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(f"worker {i} (exit {c}):\n{o[-4000:]}" for i, (c, o) in
                                         enumerate(zip(codes, outputs)))
    assert single.returncode == 0, single_out
    for output in outputs:
        assert "MultiWorkerMirroredStrategy (TF_CONFIG); 2 replica(s) x batch 2 = global batch 4" in output

    # The chief (worker 0) writes the run folder; worker 1 keeps its copy apart.
    chief = str(tmp_path / "two" / "exp1" / "unet")
    state = read_state(chief)
    assert state["epoch"] == 1 and os.path.isfile(os.path.join(chief, state["best_checkpoint"]))
    assert f"saving to {chief};" in outputs[0]
    assert f"saving to {os.path.join(str(tmp_path / 'two'), '.worker1', 'exp1', 'unet')};" in outputs[1]

    reference = str(tmp_path / "one" / "exp1" / "unet")
    (row_one,), (row_two,) = read_log(reference), read_log(chief)
    for key in ("loss", "accuracy", "iou_score", "val_loss", "val_accuracy", "val_iou_score"):
        assert math.isclose(float(row_one[key]), float(row_two[key]), rel_tol=1e-4), (key, row_one[key], row_two[key])
    one, two = (load_keras_model(os.path.join(r, "resume-epoch001.keras")) for r in (reference, chief))
    worst = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(one.weights, two.weights))
    assert worst < 1e-5
