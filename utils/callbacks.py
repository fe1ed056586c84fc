"""The checkpoint callback: best model by a validation score, plus an atomic resume point."""
import math
import os

import keras

from utils.run import STATE_FILE, save_model_atomic, write_json_atomic


class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch: save the best model (by `monitor`, higher is better) and a resume point.

    Order of writes: new checkpoint file (atomic), then state.json pointing
    to it (atomic), then removal of the file it replaces; a kill at any moment
    leaves state.json naming a complete checkpoint.
    """

    def __init__(self, run_dir, model_name, monitor, state=None):
        super().__init__()
        self.run_dir = run_dir
        self.model_name = model_name
        self.monitor = monitor
        self.state = dict(state or {})
        self.state.setdefault("monitor", monitor)
        self.state.setdefault("best_score", None)
        self.state.setdefault("best_checkpoint", None)
        self.state.setdefault("best_epoch", None)

    def _path(self, name):
        return os.path.join(self.run_dir, name) if name else None

    def _replace(self, key, new_name):
        old = self.state.get(key)
        self.state[key] = new_name
        return old

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        done = epoch + 1  # Keras counts from 0; files and logs count epochs from 1
        score = logs.get(self.monitor)
        stale = []
        best = self.state["best_score"]
        if score is not None and math.isfinite(score) and (best is None or score > best):
            name = f"{self.model_name}.{done:02d}-{score:.6f}.keras"
            save_model_atomic(self.model, self._path(name))
            stale.append(self._replace("best_checkpoint", name))
            self.state.update(best_score=float(score), best_epoch=done)
        resume_name = f"resume-epoch{done:03d}.keras"
        save_model_atomic(self.model, self._path(resume_name))
        stale.append(self._replace("resume_checkpoint", resume_name))
        self.state["epoch"] = done
        write_json_atomic(self._path(STATE_FILE), self.state)
        for name in stale:
            if name and name not in (self.state["best_checkpoint"], self.state["resume_checkpoint"]):
                path = self._path(name)
                if os.path.exists(path):
                    os.remove(path)
