"""Training curves in TensorBoard: each loss at the steps that computed it, and every learning rate.

Lightning's own step logging does not fit co-training. A value logged with ``self.log`` stays in its
results until the epoch ends and is written again at every later logging step, so ``train/lm_loss`` shows a
plateau across the domain model's steps; and it writes only every ``log_every_n_steps`` batches, so an epoch
shorter than that logs no training loss at all. :class:`TrainingCurves` writes the losses itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_bridge.run.lightning_internals import attached_trainer


class TrainingCurves(Callback):
    """Writes the training losses recorded with :func:`log_training_loss` and the learning rates.

    Every ``trainer.log_every_n_steps`` optimizer steps, and at the end of every epoch whatever its length,
    each loss recorded since its last point is written once: the mean of its values, at the last step that
    computed it. A co-training side's loss therefore appears only at steps where that side trained. The
    learning rate of every optimizer parameter group is written at the same moments, as
    ``lr/<model>/<group>`` (``lr/domain``, ``lr/lm/backbone``, ``lr/lm/id_head``, ``lr/lm/info_sharing``).
    """

    def __init__(self) -> None:
        self._values: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._steps: dict[str, int] = {}
        self._written_at = -1

    def record(self, name: str, value: torch.Tensor, step: int) -> None:
        self._values[name].append(value.detach())
        self._steps[name] = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every, step = trainer.log_every_n_steps, trainer.global_step
        due = every > 0 and step % every == 0 and step != self._written_at  # once per step (gradient accumulation)
        if due or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or trainer.should_stop:
            self._write(trainer, pl_module)
            self._written_at = step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)  # an epoch cut short (max_steps, a limit on batches) is written too

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._values:
            return
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for name, values in self._values.items():
            by_step[self._steps[name]][name] = float(torch.stack(values).float().mean())
        by_step[max(by_step)].update(learning_rates(trainer, pl_module))
        for step, metrics in sorted(by_step.items()):
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        self._values.clear()
        self._steps.clear()


def learning_rates(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
    """``lr/<model>/<group>`` for every parameter group of every optimizer; a model with one group is
    ``lr/<model>``. Models are named after the module's batch kinds (``domain``, ``lm``), groups by their
    ``name`` key or their position."""
    models = getattr(pl_module, "train_batch_kinds", ())
    out = {}
    for index, optimizer in enumerate(trainer.optimizers):
        model = models[index] if index < len(models) else f"optimizer{index}"
        groups = optimizer.param_groups
        for position, group in enumerate(groups):
            key = f"lr/{model}" if len(groups) == 1 else f"lr/{model}/{group.get('name', f'group{position}')}"
            out[key] = float(group["lr"])
    return out


class StepLoss(NamedTuple):
    """One optimizer step's loss and what to log of it: its own name first (shown in the progress bar), then
    its parts (an LM's task losses). An LM step also hands over its item-text task's queries, which
    co-training's text anchor reuses."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]
    item_text_queries: tuple[torch.Tensor, torch.Tensor] | None = None


def log_step(module: L.LightningModule, step: StepLoss, batch_size: int) -> None:
    """Records every value of ``step.logs`` with :func:`log_training_loss`, the first in the progress bar."""
    for k, (name, value) in enumerate(step.logs.items()):
        log_training_loss(module, name, value, batch_size, prog_bar=k == 0)


def log_training_loss(module: L.LightningModule, name: str, value: torch.Tensor, batch_size: int,
                      prog_bar: bool = False) -> None:
    """Records a training loss for :class:`TrainingCurves` (and shows it in the progress bar with
    ``prog_bar``, at the steps whose value the bar shows). Without that callback (a Trainer built by hand) it
    is ``module.log`` as usual, at every step."""
    trainer = attached_trainer(module)
    curves = next((c for c in trainer.callbacks if isinstance(c, TrainingCurves)), None) if trainer else None
    if curves is None:
        module.log(name, value, prog_bar=prog_bar, batch_size=batch_size)
        return
    curves.record(name, value, trainer.global_step)
    if prog_bar and _shown_this_step(trainer):
        module.log(name, value, prog_bar=True, logger=False, batch_size=batch_size)


def _shown_this_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes step metrics after this step (every ``log_every_n_steps``, counted in
    optimizer steps), the only steps whose progress-bar value anyone sees. A per-step ``self.log`` costs about
    a millisecond of Lightning bookkeeping, several percent of a LightGCN step on MovieLens-100K, where
    recording the value for the curve costs about 3 µs. (Only here: Lightning refuses a key logged with
    ``prog_bar`` on some steps of an epoch and without it on others.)"""
    every, step = trainer.log_every_n_steps, trainer.global_step
    return every <= 1 or step == 0 or (step + 1) % every == 0
