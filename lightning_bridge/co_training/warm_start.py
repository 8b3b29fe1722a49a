"""The automatic warm start of co-training: the domain model trains alone until its own validation stops
improving, and co-training starts from its best epoch.

Counting the warm-up in the domain model's own epochs and ending it by early stopping makes it transfer across
datasets: a co-training epoch is as long as the longer of the two batch streams (usually the LM's), so a fixed
number of co-training epochs can be hundreds of domain epochs on a small dataset, far past the domain model's
best.

BridgeModule starts it itself (``configure_callbacks``), so ``Trainer.fit`` from Python and the CLI do the same.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_bridge.data.contract import connect_data
from lightning_bridge.run.console import ProgressLog
from lightning_bridge.run.lightning_internals import offer_checkpoint

if TYPE_CHECKING:
    from lightning_bridge.co_training.bridge import BridgeModule

log = logging.getLogger(__name__)
MONITOR = "domain/val/ndcg@10"


class WarmStartAsCandidate(Callback):
    """Co-training has to beat where it started. When the main fit starts, the warm-started weights become the
    first candidate for the domain model's best checkpoint, scored by the warm start's best validation (the
    same metric on the same split, and the same weights): a co-training whose validation never beats it does
    not replace the model it started from."""

    def __init__(self, score: float | None) -> None:
        self.score = score

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.score is None:
            return
        for callback in trainer.checkpoint_callbacks:
            if callback.monitor == MONITOR:
                offer_checkpoint(callback, trainer, MONITOR, self.score)


class AutomaticWarmStart(WarmStartAsCandidate):
    """Before the first co-training step the domain model trains alone (``warm_start_domain``), and its best
    epoch starts co-training as the first candidate for the domain model's best checkpoint. A resumed run
    skips it: its checkpoint holds its own state."""

    def __init__(self) -> None:
        super().__init__(score=None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: BridgeModule) -> None:
        if trainer.ckpt_path:
            return
        if trainer.world_size > 1:
            raise ValueError("model.warm_start.auto runs on one process; under several devices warm-start from a "
                             "domain-only run with model.warm_start.checkpoint instead")
        data = trainer.datamodule
        if data is None:
            raise ValueError("model.warm_start.auto needs the data as a LightningDataModule "
                             "(trainer.fit(model, datamodule=...)): the warm start validates on its split")
        accelerator = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
        path, self.score = warm_start_domain(pl_module, data, trainer.log_dir or ".", accelerator)
        data.trainer = pl_module.domain.trainer = trainer  # the warm start's own trainer borrowed both
        connect_data(data, pl_module.data_needs())  # the domain model alone had asked for its batches only
        pl_module.warm_started_from = (path, self.score)


def warm_start_domain(bridge: BridgeModule, datamodule: L.LightningDataModule, log_dir: str,
                      accelerator: str = "cpu") -> tuple[str, float]:
    """Trains ``bridge.domain`` alone (sharing the bridge's InfoSharing) with early stopping on validation,
    loads its best epoch back into the bridge, and returns that checkpoint's path (under ``log_dir``) and its
    validation score."""
    settings = bridge.warm_start
    folder = os.path.join(log_dir, "warm_start")
    checkpoint = ModelCheckpoint(dirpath=os.path.join(folder, "checkpoints"), monitor=MONITOR, mode="max",
                                 save_top_k=1, filename="best-{epoch}")
    trainer = L.Trainer(
        max_epochs=settings.max_epochs, check_val_every_n_epoch=settings.val_every,
        accelerator=accelerator, devices=1, num_sanity_val_steps=0, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1,
        logger=TensorBoardLogger(folder, name="", version=""),
        callbacks=[EarlyStopping(MONITOR, mode="max", patience=settings.patience), checkpoint,
                   ProgressLog(name="warm start"),
                   DomainSettingsInCheckpoints(bridge),
                   *([TextChannelFromTheStart(bridge)] if bridge.knowledge.text_channel else [])])
    trainer.fit(bridge.domain, datamodule=datamodule)
    if not checkpoint.best_model_path:
        raise RuntimeError(f"warm start: no validation ran in {settings.max_epochs} epochs; lower "
                           "model.warm_start.val_every or raise model.warm_start.max_epochs")
    bridge.warm_start_from(checkpoint.best_model_path)
    log.info("warm start: domain model best at %s (%s=%.4f after %d epochs)", checkpoint.best_model_path,
             MONITOR, float(checkpoint.best_model_score), trainer.current_epoch)
    return checkpoint.best_model_path, float(checkpoint.best_model_score)


class DomainSettingsInCheckpoints(Callback):
    """The warm start's checkpoints carry the domain model's whole settings, the shared tables' width and
    initialisation (the bridge's) included, so that ``main.py test --ckpt_path`` tests the model co-training
    began from on its own."""

    def __init__(self, bridge: BridgeModule) -> None:
        self.bridge = bridge

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["hyper_parameters"] = self.bridge.domain_hyper_parameters()


class TextChannelFromTheStart(Callback):
    """With ``model.knowledge.text_channel`` the domain model trains alone with the LM's text part of every item vector
    from its first step: the text must shape the vectors while BPR learns them, not be added to a model
    that has already converged without it."""

    def __init__(self, bridge: BridgeModule) -> None:
        self.bridge = bridge

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bridge.lm.to(pl_module.device)
        self.bridge.lm.recommender.attach(trainer.datamodule)
        self.bridge.prepare_text_channel(trainer.datamodule)
        self.bridge.encode_item_texts(epoch=0)
