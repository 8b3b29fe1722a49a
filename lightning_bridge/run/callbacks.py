"""Callbacks that the CLI adds to every run."""

from __future__ import annotations

import csv
import itertools
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.trainer.states import TrainerFn

from lightning_bridge.run.lightning_internals import (
    LastCheckpointOnDemand,
    resume_finished_epochs_as_finished,
    validation_follows,
)

log = logging.getLogger(__name__)


class RunCheckpoint(LastCheckpointOnDemand):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always the newest training state.

    Lightning 2.6 rewrites ``last.ckpt`` at an epoch end only when a top-k checkpoint was saved at the same
    step, so with validation every epoch it stays at the best epoch. Here ``last.ckpt`` is written by this
    class alone: at every train-epoch end (after validation, so every checkpoint callback's best-k
    bookkeeping and the epoch's scheduler step are in it), every ``last_every_n_train_steps`` optimizer
    steps (a killed run loses at most that many), and at the end of training. A step whose validation
    follows is written once every checkpoint callback has recorded that validation: Lightning resumes a
    state saved before it as one saved after, so a run killed inside it would resume past it (at
    ``max_steps``, stop at once) and keep an earlier best.

    Args:
        last_every_n_train_steps: also rewrite ``last.ckpt`` every this many optimizer steps (0: only at
            epoch ends).
        enable_version_counter: as ``ModelCheckpoint``, but off by default: a best checkpoint that a killed
            run saved after its ``last.ckpt`` is saved again by the resumed run under the same name, and
            replaces it rather than sitting beside it as ``-v1``.
        **kwargs: as ``ModelCheckpoint``.
    """

    def __init__(self, last_every_n_train_steps: int = 0, enable_version_counter: bool = False,
                 **kwargs: Any) -> None:
        if last_every_n_train_steps < 0:
            raise ValueError(f"checkpoint.last_every_n_train_steps must be >= 0, got {last_every_n_train_steps}")
        if kwargs.get("save_last") == "link":  # a link points at the newest top-k file, not the newest state
            raise ValueError("checkpoint.save_last='link' would make last.ckpt a link to an older top-k "
                             "checkpoint; expected true or false")
        super().__init__(enable_version_counter=enable_version_counter, **kwargs)
        self.last_every_n_train_steps = last_every_n_train_steps
        self._mid_epoch_step = -1  # global step of the last mid-epoch last.ckpt
        self._after_validation = False  # last.ckpt is due once this step's validation is recorded

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key, so that checkpoints written by plain ModelCheckpoints resume with theirs."""
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == TrainerFn.FITTING:  # an epoch-end last.ckpt resumes into the next epoch under max_steps too
            resume_finished_epochs_as_finished(trainer)

    def _write_last(self, trainer: L.Trainer) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if not self.save_last or trainer.fast_dev_run or not fitting:
            return
        self.write_last(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the last batch's state is written at the epoch end, after validation
        every, step = self.last_every_n_train_steps, trainer.global_step
        # Training that stops inside an epoch (max_steps, a timer) is saved here, as a mid-epoch state: saved
        # at the epoch end, a resumed run would take the unfinished epoch for a finished one.
        stops = trainer.should_stop or 0 <= trainer.max_steps <= step
        if (every and step % every == 0) or stops:
            if validation_follows(trainer):
                self._after_validation = True
            else:
                self._write_last(trainer)
            self._mid_epoch_step = step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)  # this validation's top-k save
        if trainer.checkpoint_callbacks[-1] is self:  # the last to record the validation writes what is due
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, RunCheckpoint):
                    callback._write_due(trainer)

    def _write_due(self, trainer: L.Trainer) -> None:
        if self._after_validation:
            self._after_validation = False
            self._write_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or self._mid_epoch_step != trainer.global_step:
            self._after_validation = False
            self._write_last(trainer)
        else:
            self._write_due(trainer)  # a checkpoint callback of another kind came last at the validation

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self.last_model_path:
            self._write_last(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keeps the best-k bookkeeping when resuming in the run folder the checkpoint came from, however
        its path is spelt and wherever the folder was moved or copied since: Lightning compares the path
        strings, and otherwise drops the bookkeeping and writes ``last-v1.ckpt`` beside ``last.ckpt``."""
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and saved != self.dirpath and _same_folder(state_dict, self.dirpath):
            state_dict = _moved(state_dict, self.dirpath)
        super().load_state_dict(state_dict)


def _checkpoint_files(state: dict[str, Any]) -> list[str]:
    return [p for p in (*state.get("best_k_models", {}), state.get("last_model_path")) if p]


def _same_folder(state: dict[str, Any], dirpath: str) -> bool:
    """Whether ``dirpath`` is the folder a checkpoint callback's saved state describes: the same folder, or
    a moved copy holding every checkpoint file it names."""
    if os.path.realpath(state["dirpath"]) == os.path.realpath(dirpath):
        return True
    files = _checkpoint_files(state)
    return bool(files) and all(os.path.isfile(os.path.join(dirpath, os.path.basename(p))) for p in files)


def _moved(state: dict[str, Any], dirpath: str) -> dict[str, Any]:
    """The saved state with every checkpoint path pointing into ``dirpath``."""
    def here(path: str) -> str:
        return os.path.join(dirpath, os.path.basename(path)) if path else path

    return {**state, "dirpath": dirpath, "best_model_path": here(state.get("best_model_path", "")),
            "kth_best_model_path": here(state.get("kth_best_model_path", "")),
            "last_model_path": here(state.get("last_model_path", "")),
            "best_k_models": {here(p): v for p, v in state.get("best_k_models", {}).items()}}


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved ``config.yaml`` into the run folder, except where ``test``, ``validate`` or
    ``predict`` write beside a fitted run: there the run's own config stays the record of how it was trained.
    Nor does an evaluation without a logger write one: it has no run folder, only the caller's directory.
    A resumed fit whose config differs keeps the previous one as ``config.v<N>.yaml`` and says so."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir
        if stage != "fit" and (not trainer.loggers or (log_dir and (Path(log_dir) / self.config_filename).exists())):
            return
        path = Path(log_dir or ".") / self.config_filename
        before = path.read_bytes() if trainer.is_global_zero and path.is_file() else None
        super().setup(trainer, pl_module, stage)
        if before is not None and path.is_file() and path.read_bytes() != before:
            kept = next(path.with_name(f"{path.stem}.v{n}{path.suffix}") for n in itertools.count()
                        if not path.with_name(f"{path.stem}.v{n}{path.suffix}").exists())
            kept.write_bytes(before)
            log.warning("%s now holds this run's config; the one it replaced is kept as %s", path, kept.name)


class TopKWriter(BasePredictionWriter):
    """Writes ``predict``'s top-K items per user as TSV: user, rank, item (raw ids), score and title.

    Args:
        path: output file; defaults to ``predictions.tsv`` in the run's log folder. Under DDP each rank
            writes ``<stem>.rank<N>.tsv``.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self._file = None
        self._writer = None
        self.written: Path | None = None
        self.users_written = 0
        self.longest_list = 0  # the most recommendations any user got
        self._warned_short = False

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.path or os.path.join(trainer.log_dir or ".", "predictions.tsv"))
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.written = path
        self.users_written = self.longest_list = 0
        # written aside and renamed when complete: two predicts into one file never mix, and a failed one
        # leaves the file as it was
        self._partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self._file = self._partial.open("w", newline="")
        self._writer = csv.writer(self._file, delimiter="\t", lineterminator="\n")
        self._writer.writerow(["user_id", "rank", "item_id", "score", "title"])

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        data = trainer.datamodule
        scores = prediction["scores"]
        broken = torch.isnan(scores) | (scores == math.inf)
        if broken.any():
            user = int(prediction["users"][broken.any(1).nonzero()[0, 0]])
            raise FloatingPointError(
                f"predict: the model scores user {data.raw_user_id(user)!r} with NaN or +inf; the checkpoint's "
                f"weights are not finite, so no predictions were written for this batch")
        for user, items, values in zip(prediction["users"].tolist(), prediction["items"].tolist(),
                                       scores.tolist(), strict=True):
            # -inf marks an item the user has already seen: fewer unseen items than predict_top_k
            kept = [(item, score) for item, score in zip(items, values, strict=True) if score != -math.inf]
            if len(kept) < len(items) and not self._warned_short:
                self._warned_short = True
                log.warning("predict: user %s has only %d unseen items, fewer than predict_top_k=%d; their list "
                            "is shorter, and so may others' be", data.raw_user_id(user), len(kept),
                            getattr(pl_module, "predict_top_k", len(items)))
            self.users_written += 1
            self.longest_list = max(self.longest_list, len(kept))
            for rank, (item, score) in enumerate(kept, start=1):
                self._writer.writerow([data.raw_user_id(user), rank, data.raw_item_id(item), f"{score:.6g}",
                                       data.item_title(item) or ""])

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._file.close()
        os.replace(self._partial, self.written)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
            self._partial.unlink(missing_ok=True)
