"""Learning-rate schedules as pure functions of the epoch (and, for `plateau`, of the run state).

Keras-free: train.py checks `--lr_schedule` with the other flags before TensorFlow loads, and a
resumed run recomputes the same rate from the epoch number and state.json.
"""
import math

LR_SCHEDULES = ("constant", "step", "cos", "poly", "plateau")


def scheduled_lr(schedule, base_lr, epoch, epochs, warmup_epochs=0, step=10, gamma=0.1, power=0.9):
    """Learning rate of 0-based `epoch` (constant, step, cos, poly; plateau's is `base_lr` here).

    Warm-up rises linearly to `base_lr` over the first `warmup_epochs`; the
    schedule then runs over the remaining epochs.
    """
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    t, span = epoch - warmup_epochs, max(1, epochs - warmup_epochs)
    if schedule == "step":
        return base_lr * gamma ** (t // step)
    if schedule == "cos":
        return base_lr * 0.5 * (1 + math.cos(math.pi * t / span))
    if schedule == "poly":
        return base_lr * (1 - t / span) ** power
    return base_lr


class Schedule:
    """The run's learning rate per epoch; `plateau` keeps its counters in the run state's `lr_plateau`.

    `lr_for(epoch, state)` is read at each epoch start; `after_epoch(epoch, score, state)` is called
    once per epoch by the callback that commits state.json, so the counters are saved with the epoch.
    """

    def __init__(self, name, base_lr, epochs, warmup_epochs=0, step=10, gamma=0.1, patience=5):
        self.name, self.base_lr, self.epochs = name, base_lr, epochs
        self.warmup_epochs, self.step, self.gamma, self.patience = warmup_epochs, step, gamma, patience

    def lr_for(self, epoch, state):
        if self.name == "plateau" and epoch >= self.warmup_epochs:
            return state.get("lr_plateau", {}).get("lr", self.base_lr)
        return scheduled_lr(self.name, self.base_lr, epoch, self.epochs, self.warmup_epochs, self.step, self.gamma)

    def after_epoch(self, epoch, score, state):
        """Plateau: multiply the rate by `gamma` after `patience` epochs without a better `score`."""
        if self.name != "plateau" or epoch < self.warmup_epochs or score is None or not math.isfinite(score):
            return
        plateau = state.setdefault("lr_plateau", {"lr": self.base_lr, "best": None, "wait": 0})
        if plateau["best"] is None or score > plateau["best"]:
            plateau.update(best=float(score), wait=0)
        else:
            plateau["wait"] += 1
            if plateau["wait"] >= self.patience:
                plateau.update(lr=plateau["lr"] * self.gamma, wait=0)
