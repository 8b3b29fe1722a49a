"""Callbacks for the kill tests, which stop a run at a known point. ``SlowSteps`` slows each training step and
announces it on stdout, so that a test can SIGKILL the run in the middle of an epoch; ``DiesAt``
stands in for a kill at one step, inside its training or its validation. Neither changes a number the run computes."""

import time

from lightning.pytorch.callbacks import Callback


class SlowSteps(Callback):
    def __init__(self, seconds: float = 0.5) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"STEP {trainer.global_step} EPOCH {trainer.current_epoch} BATCH {batch_idx}", flush=True)
        time.sleep(self.seconds)


class Killed(Exception):
    """The stand-in kill."""


class DiesAt(Callback):
    """Raises ``Killed`` when the run reaches global step ``step`` inside ``where``: "validation" (the
    validation that follows the step's training batch) or "training" (the batch after the step)."""

    def __init__(self, step: int, where: str = "validation") -> None:
        self.step, self.where = step, where

    def _maybe_die(self, trainer, where: str) -> None:
        if where == self.where and trainer.global_step == self.step and not trainer.sanity_checking:
            raise Killed(f"killed in {where} at step {self.step}")

    def on_validation_start(self, trainer, pl_module) -> None:
        self._maybe_die(trainer, "validation")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._maybe_die(trainer, "training")
