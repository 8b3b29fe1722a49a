"""Each private Lightning API the project uses (all of them in ``lightning_bridge.run.lightning_internals``), pinned
against the installed Lightning: a release that moves one fails here, by name."""

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loops.fit_loop import _FitLoop
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

from lightning_bridge.data.datasets import SyntheticDataModule
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.run import lightning_internals
from lightning_bridge.run.lightning_internals import (
    LastCheckpointOnDemand,
    attached_trainer,
    offer_checkpoint,
    resume_finished_epochs_as_finished,
    tensorboard_file_writer,
    validation_follows,
)


@pytest.mark.parametrize(("owner", "name", "parameters"), [
    (ModelCheckpoint, "_monitor_candidates", ["self", "trainer"]),
    (ModelCheckpoint, "_save_topk_checkpoint", ["self", "trainer", "monitor_candidates"]),
    (ModelCheckpoint, "_save_last_checkpoint", ["self", "trainer", "monitor_candidates"]),
    (_TrainingEpochLoop, "_should_check_val_fx", ["self", "data_fetcher"]),
])
def test_the_private_methods_used_keep_their_signatures(owner, name, parameters):
    assert list(inspect.signature(getattr(owner, name)).parameters) == parameters


def test_model_checkpoint_still_records_the_step_it_saved_at(tmp_path):
    assert ModelCheckpoint(dirpath=tmp_path)._last_global_step_saved == 0


def test_a_validation_at_the_step_training_stops_keeps_its_best(tmp_path):
    """Training stopped by max_steps writes last.ckpt at that step, then validates: that validation's best is
    still saved (before, Lightning skipped it as already saved at that step)."""
    from lightning_bridge.run.callbacks import RunCheckpoint

    checkpoint = RunCheckpoint(dirpath=tmp_path / "ckpt", monitor="train_steps", mode="max", save_last=True,
                               filename="best-{step}")

    class CountsSteps(DomainModule):
        def on_validation_epoch_end(self) -> None:
            super().on_validation_epoch_end()
            self.log("train_steps", float(self.trainer.global_step))

    trainer = L.Trainer(max_steps=6, val_check_interval=3, check_val_every_n_epoch=None, accelerator="cpu",
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[checkpoint], default_root_dir=tmp_path)
    trainer.fit(CountsSteps(40, 30, encoder="mf", embedding_dim=4),
                datamodule=SyntheticDataModule(num_users=40, num_items=30, batch_size=16))
    assert Path(checkpoint.best_model_path).name == "best-step=6.ckpt"
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_no_other_module_reaches_into_lightning_privately():
    package = Path(lightning_internals.__file__).parent
    private = ("._monitor_candidates", "._save_topk_checkpoint", "_save_last_checkpoint", "._get_file_writer",
               "._trainer", "._checkpoint_connector", "._parse_ckpt_path", "._should_check_val_fx", "_FitLoop",
               "._data_fetcher")
    for path in package.rglob("*.py"):
        if path.name != "lightning_internals.py":
            source = path.read_text()
            assert not [name for name in private if name in source], path


def test_attached_trainer_is_none_until_a_trainer_holds_the_module(tmp_path):
    model = DomainModule(40, 30, encoder="mf", embedding_dim=4)
    assert attached_trainer(model) is None
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=SyntheticDataModule(num_users=40, num_items=30, batch_size=16))
    assert attached_trainer(model) is trainer


def test_an_offered_checkpoint_enters_the_top_k_and_last_is_written_only_on_demand(tmp_path):
    offered = {}

    class Offer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            offer_checkpoint(checkpoint, trainer, "domain/val/ndcg@10", 2.0)  # no validation reaches 2
            offered["path"] = checkpoint.best_model_path

    checkpoint = LastCheckpointOnDemand(dirpath=tmp_path / "ckpt", monitor="domain/val/ndcg@10", mode="max",
                                        save_last=True)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[checkpoint, Offer()],
                        default_root_dir=tmp_path)
    trainer.fit(DomainModule(40, 30, encoder="mf", embedding_dim=4),
                datamodule=SyntheticDataModule(num_users=40, num_items=30, batch_size=16))
    assert checkpoint.best_model_path == offered["path"] and float(checkpoint.best_model_score) == 2.0
    assert not (tmp_path / "ckpt" / "last.ckpt").exists()  # Lightning's own last-saves were ignored
    checkpoint.write_last(trainer)
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == trainer.global_step


def test_the_tensorboard_writer_takes_summaries(tmp_path):
    writer = tensorboard_file_writer(TensorBoardLogger(tmp_path))
    assert callable(writer.add_summary)


def test_validation_follows_the_batches_lightning_validates_after(tmp_path):
    seen = []

    class Records(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((trainer.global_step, validation_follows(trainer)))

    trainer = L.Trainer(max_steps=7, val_check_interval=3, check_val_every_n_epoch=None, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Records()],
                        default_root_dir=tmp_path)
    trainer.fit(DomainModule(40, 30, encoder="mf", embedding_dim=4),
                datamodule=SyntheticDataModule(num_users=40, num_items=30, batch_size=16))
    assert [step for step, follows in seen if follows] == [3, 6]


def test_the_fit_loop_restarts_a_finished_epoch_only_without_the_replacement(tmp_path):
    """Lightning's own loop restarts a finished epoch under max_steps (the behaviour replaced); the
    replacement restarts an unfinished one as Lightning does and a finished one not at all."""
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, default_root_dir=tmp_path)
    loop = trainer.fit_loop
    assert type(loop) is _FitLoop
    for progress in (loop.epoch_progress.current, loop.epoch_progress.total):
        progress.ready = progress.started = progress.processed = 1  # an epoch's end, every batch done
    loop.epoch_loop.batch_progress.is_last_batch = True
    loop.restarting = True
    assert loop.restarting  # Lightning: restarts the finished epoch
    resume_finished_epochs_as_finished(trainer)
    assert isinstance(trainer.fit_loop, _FitLoop) and trainer.fit_loop is loop
    loop.restarting = True
    assert not loop.restarting and not loop.epoch_loop.restarting
    loop.epoch_loop.batch_progress.is_last_batch = False  # max_steps stopped it inside the epoch
    loop.restarting = True
    assert loop.restarting
