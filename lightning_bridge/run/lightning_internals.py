"""Every use of a private Lightning API, in one place.

Lightning has no public way to do these few things; each function says what it reaches for and why, and
``tests/test_lightning_internals.py`` pins each against the installed Lightning (pyproject admits the minor
releases that were checked). A new Lightning release that moves one of them fails there, not deep in a run.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The trainer ``module`` is attached to, or None (``module.trainer`` raises when there is none)."""
    return module._trainer


def offer_checkpoint(callback: ModelCheckpoint, trainer: L.Trainer, monitor: str, score: float) -> None:
    """Offers the module's current weights to ``callback``'s top-k as if a validation had scored them
    ``score`` on ``monitor`` (the warm start competes with co-training's own checkpoints)."""
    candidates = callback._monitor_candidates(trainer)
    candidates[monitor] = torch.tensor(score)
    callback._save_topk_checkpoint(trainer, candidates)


def tensorboard_file_writer(logger: TensorBoardLogger) -> Any:
    """The event-file writer under ``logger`` (the HPARAMS plugin's summaries have no public writer)."""
    return logger.experiment._get_file_writer()


class LastCheckpointOnDemand(ModelCheckpoint):
    """A ``ModelCheckpoint`` that writes ``last.ckpt`` only when :meth:`write_last` asks: Lightning's own writes
    of it, tied to its top-k saves, are ignored (``RunCheckpoint`` decides when the newest state is saved)."""

    _asked = False

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self._asked:
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def write_last(self, trainer: L.Trainer) -> None:
        """Writes ``last.ckpt`` now, with the current monitored values. Lightning skips any later save at a
        step it has saved at; ``last.ckpt`` written before a validation at the same step (training stopped by
        ``max_steps``) must not keep that validation's best from being saved, so the step is not recorded."""
        self._asked, saved_at = True, self._last_global_step_saved
        try:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._asked, self._last_global_step_saved = False, saved_at
