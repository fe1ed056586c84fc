"""The epoch commit (log row, checkpoints, plateau schedule, early stopping, state.json) on a tiny model."""
import os

import pytest

from conftest import read_log, read_state


def test_scheduled_learning_rates_by_hand():
    from utils.schedules import scheduled_lr
    assert [scheduled_lr("step", 1.0, e, 30, step=10, gamma=0.1) for e in (0, 9, 10, 25)] == \
        pytest.approx([1.0, 1.0, 0.1, 0.01])
    # 1 warm-up epoch of 5: 0.5, then cosine over the remaining 4: 1, (1 + cos(pi/4)) / 2, 0.5, (1 + cos(3pi/4)) / 2
    assert [scheduled_lr("cos", 1.0, e, 5, warmup_epochs=1) for e in range(5)] == \
        pytest.approx([0.5, 1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    assert [scheduled_lr("poly", 1.0, e, 4) for e in range(4)] == \
        pytest.approx([1.0, 0.75 ** 0.9, 0.5 ** 0.9, 0.25 ** 0.9])
    assert scheduled_lr("constant", 0.3, 7, 10) == 0.3


def tiny_compiled_model():
    import keras
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    return model


def run_commit(run_dir, state, epochs=10, early_stopping=0, schedule=None):
    from utils.callbacks import RunCommit
    from utils.schedules import Schedule
    callback = RunCommit(str(run_dir), "m", "val_iou_score", state, schedule or Schedule("constant", 1.0, epochs),
                         os.path.join(str(run_dir), "log.csv"), epochs, early_stopping)
    callback.set_model(tiny_compiled_model())
    return callback


@pytest.mark.parametrize("best_epoch, done, stops", [(1, 2, False), (1, 3, True), (3, 3, False), (None, 2, True)])
def test_early_stopping_counts_from_the_best_epoch_and_is_committed_in_state_json(tmp_path, best_epoch, done, stops):
    """The counter is state.json's best_epoch, and the stop itself is in state.json, so a resumed run
    knows it stopped (before, `stopped_early` was set after state.json was written, and lost)."""
    state = {"best_epoch": best_epoch, "best_score": 0.9, "best_checkpoint": None}
    callback = run_commit(tmp_path, state, early_stopping=2)
    callback.on_epoch_end(done - 1, {"val_iou_score": 0.5})  # not better than 0.9
    assert callback.model.stop_training is stops
    on_disk = read_state(str(tmp_path))
    assert on_disk["epoch"] == done
    assert on_disk.get("stopped_early") == ({"epoch": done, "patience": 2, "epochs": 10} if stops else None)


def test_a_monitor_missing_from_the_logs_is_an_error_naming_what_exists(tmp_path):
    """Before: a monitor that is not logged (e.g. an auxiliary head's name) silently saved no best checkpoint."""
    from utils.errors import UserError
    callback = run_commit(tmp_path, {})
    with pytest.raises(UserError, match=r"'val_iou_score' is not in the epoch's logs.*logged: loss, val_main_iou"):
        callback.on_epoch_end(0, {"loss": 0.3, "val_main_iou": 0.5})
    assert not os.path.exists(tmp_path / "state.json")


def test_plateau_schedule_decays_after_patience_and_keeps_counters_in_state(tmp_path):
    from utils.schedules import Schedule
    schedule = Schedule("plateau", 1.0, 10, gamma=0.5, patience=2)
    state = {}
    callback = run_commit(tmp_path, state, schedule=schedule)
    rates = []
    for epoch, score in enumerate([0.5, 0.6, 0.6, 0.55, 0.7]):
        callback.model.optimizer.learning_rate.assign(schedule.lr_for(epoch, state))
        logs = {"val_iou_score": score}
        callback.on_epoch_end(epoch, logs)
        rates.append(logs["learning_rate"])
    # epochs 3 and 4 do not beat 0.6: after the second of them the rate halves for epoch 5
    assert rates == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5])
    assert read_state(str(tmp_path))["lr_plateau"] == {"lr": 0.5, "best": 0.7, "wait": 0}
    assert [float(row["learning_rate"]) for row in read_log(str(tmp_path))] == pytest.approx(rates)


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from utils.run import save_model_atomic, write_json_atomic
    path = tmp_path / "state.json"
    write_json_atomic(str(path), {"epoch": 1})
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"epoch": object()})  # not JSON: fails half-way through the dump
    assert read_state(str(tmp_path)) == {"epoch": 1}

    class Broken:
        def save(self, name):
            with open(name, "wb") as handle:
                handle.write(b"half")
            raise OSError("disk full")
    (tmp_path / "m.keras").write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        save_model_atomic(Broken(), str(tmp_path / "m.keras"))
    assert (tmp_path / "m.keras").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "state.json"]


def test_an_improved_epoch_serialises_the_model_once_and_its_best_checkpoint_outlives_the_resume_file(tmp_path,
                                                                                                      monkeypatch):
    import keras
    import numpy as np

    import utils.callbacks
    saves = []
    real_save = utils.callbacks.save_model_atomic
    monkeypatch.setattr(utils.callbacks, "save_model_atomic", lambda model, path: saves.append(path) or
                        real_save(model, path))
    callback = run_commit(tmp_path, {})
    callback.model.set_weights([np.full((2, 1), 3.0, np.float32), np.array([0.5], np.float32)])
    callback.on_epoch_end(0, {"val_iou_score": 0.4})
    assert [os.path.basename(p) for p in saves] == ["resume-epoch001.keras"]
    state = read_state(str(tmp_path))
    assert state["best_checkpoint"] == "m.01-0.400000.keras" and state["resume_checkpoint"] == "resume-epoch001.keras"
    callback.model.set_weights([np.zeros((2, 1), np.float32), np.zeros(1, np.float32)])
    callback.on_epoch_end(1, {"val_iou_score": 0.3})  # worse: a resume checkpoint only; epoch 1's is removed
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".keras")) == ["m.01-0.400000.keras",
                                                                             "resume-epoch002.keras"]
    best = keras.models.load_model(os.path.join(tmp_path, "m.01-0.400000.keras"))
    np.testing.assert_array_equal(best.get_weights()[0], np.full((2, 1), 3.0, np.float32))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
