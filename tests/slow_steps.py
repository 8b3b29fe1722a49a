"""A callback for the kill test: slows each training step and announces it on stdout, so that the test can
SIGKILL the run at a known point in the middle of an epoch. It changes no number the run computes."""

import time

from lightning.pytorch.callbacks import Callback


class SlowSteps(Callback):
    def __init__(self, seconds: float = 0.5) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"STEP {trainer.global_step} EPOCH {trainer.current_epoch} BATCH {batch_idx}", flush=True)
        time.sleep(self.seconds)
