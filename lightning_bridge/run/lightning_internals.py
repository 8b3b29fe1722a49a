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
from lightning.pytorch.loops.fit_loop import _FitLoop
from lightning.pytorch.loops.loop import _Loop


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


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether the fit loop validates right after the training batch that has just ended (asked from
    ``on_train_batch_end``): the epoch loop's own test, which needs its data fetcher."""
    return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


class _FitLoopResumingFinishedEpochs(_FitLoop):
    """Lightning's fit loop, except that a checkpoint written at the end of an epoch (every batch done)
    resumes into the next epoch even when ``max_steps`` is set. Lightning 2.6 restarts the finished epoch
    whenever training counts steps: it runs that epoch's end again, counts it twice and trains one epoch
    fewer (a 3-epoch run resumed after its first epoch stopped at 18 of 27 steps)."""

    @_FitLoop.restarting.setter
    def restarting(self, restarting: bool) -> None:
        progress = self.epoch_progress.current
        finished = (progress.ready == progress.started == progress.processed
                    and self.epoch_loop.batch_progress.is_last_batch)
        if restarting and finished:
            _Loop.restarting.fset(self, False)  # as Lightning resumes it without max_steps
        else:
            _FitLoop.restarting.fset(self, restarting)


def resume_finished_epochs_as_finished(trainer: L.Trainer) -> None:
    """Gives ``trainer`` the fit loop above; call before the checkpoint is restored (a ``setup`` hook)."""
    if type(trainer.fit_loop) is _FitLoop:
        trainer.fit_loop.__class__ = _FitLoopResumingFinishedEpochs


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
