"""A NaN or infinite training loss stops the run before it reaches the weights, with an error that names its
likely cause."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step, the model and the value."""


class StopOnNonFiniteLoss(Callback):
    """Stops training before a non-finite loss is back-propagated, so no NaN reaches the weights or a
    checkpoint: the last ``last.ckpt`` stays the last good state.

    The message names the cause it can see: the starting weights when no optimizer step has run yet (the
    initialisation, or a warm start), else in co-training the other side when its last step blew the shared
    tables up (an LM learning rate of 1e30 makes the *domain* loss NaN one step later), else the side whose
    loss it is."""

    GROWTH = 100.0  # a step that multiplies the shared tables' largest value by more than this blew them up

    def __init__(self) -> None:
        self._before: float | None = None
        self._last_step: tuple[str, int, float, float] | None = None  # side, global step, scale before, after

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if getattr(pl_module, "side_for_step", None):  # co-training: which side blew the shared tables up
            self._before = _table_scale(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._before is not None:
            self._last_step = (_side(trainer, pl_module, trainer.global_step - 1), trainer.global_step - 1,
                               self._before, _table_scale(pl_module))
            self._before = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        # every rank stops together (one waiting in a collective for a stopped one would hang)
        if trainer.strategy.reduce_boolean_decision(math.isfinite(value), all=True):
            return
        side = _side(trainer, pl_module, trainer.global_step)
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        kept = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written before it"
        raise NonFiniteLossError(
            f"the {side} loss is {value} at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"training stopped before this step changed any weight{kept}. {self._cause(trainer, pl_module, side)}")

    def _cause(self, trainer: L.Trainer, pl_module: L.LightningModule, side: str) -> str:
        scale = _table_scale(pl_module)
        tables = f" (the shared tables' largest value is {scale:.3g})" if scale is not None else ""
        if self._last_step is None and trainer.global_step == 0:
            return (f"No optimizer step has run yet, so the starting weights give it{tables}: check the "
                    "initialisation (model.init_args.init, model.init_args.init_std) or the warm start.")
        if self._last_step is not None:
            other, step, before, after = self._last_step
            blown = not math.isfinite(after) or after > self.GROWTH * max(before, 1e-12)
            if other != side and blown:
                return (f"The {other} model's optimizer step at global step {step} took the shared tables' largest "
                        f"value from {before:.3g} to {after:.3g}: lower the {other} model's learning rate "
                        f"(model.init_args.{other}.init_args.optimizer.init_args.lr) or clip its gradients "
                        f"(model.init_args.schedule.{other}_clip).")
        section = f"{side}.init_args." if getattr(pl_module, "side_for_step", None) else ""
        return (f"Lower the {side} model's learning rate (model.init_args.{section}optimizer.init_args.lr) or clip "
                f"gradients{tables}.")


def _side(trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> str:
    """The model whose step ``step`` is: in co-training the schedule says, else the model's only side."""
    side_for_step = getattr(pl_module, "side_for_step", None)
    return side_for_step(step) if side_for_step else getattr(pl_module, "train_batch_kinds", ("model",))[0]


def _table_scale(pl_module: L.LightningModule) -> float | None:
    """The largest absolute value in the model's InfoSharing tables (None: it has none)."""
    info = getattr(pl_module, "info", None) or getattr(getattr(pl_module, "recommender", None), "info", None)
    if info is None:
        return None
    with torch.no_grad():
        return max(float(p.detach().abs().max()) for p in (info.user.weight, info.item.weight))
