"""The command line: ``python main.py {fit,validate,test,predict} --config configs/<run>.yaml``."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.data.datamodule import RecDataModule
from lightning_bridge.data.requests import check_k
from lightning_bridge.evaluation.figures import TestFigures, draw_test_figures
from lightning_bridge.run.after_fit import export_run, monitored_side, other_side_checkpoint, test_each_at_its_best
from lightning_bridge.run.callbacks import RunConfigSaver, TopKWriter
from lightning_bridge.run.checkpoints import ReadOnce, RunRecord, plain
from lightning_bridge.run.class_registry import register_configured
from lightning_bridge.run.console import configure_console, ignore_evaluation_noise, summary_table
from lightning_bridge.run.folders import DEFAULT_LOG_DIR, check_saved_configs, route_logger
from lightning_bridge.run.given_checkpoint import (
    GivenCheckpoint,
    check_data,
    model_config_from,
    named_load_error,
    read_given,
)
from lightning_bridge.run.hparams import RunHparams, keep_data_hparams_apart
from lightning_bridge.run.lock import RunFolderLock
from lightning_bridge.run.non_finite import StopOnNonFiniteLoss
from lightning_bridge.run.options import add_run_options
from lightning_bridge.run.resume import ApplyOptimizerSettings, check_data_changes, data_changes
from lightning_bridge.run.training_log import TrainingCurves

log = logging.getLogger(__name__)


class BridgeCLI(LightningCLI):
    """LightningCLI with the project's defaults: dataset sizes linked into the model, a checkpoint that keeps
    ``last.ckpt`` and the best by validation NDCG@10, a predictions writer, and optional test after fit.

    Co-training keeps one best checkpoint per model: ``checkpoint`` monitors one side (by default the domain
    model) and a second checkpoint, ``best-<other side>-...``, the other side's validation NDCG@10, so that
    each model is tested (and can be exported) at its own best epoch rather than at the other's.
    """

    test_metrics: dict[str, float]
    """After ``fit --test_after_fit true``: the reported test metrics, each model's from its own best."""
    exported: Path | None = None
    """After ``fit`` (unless ``--export_after_fit false``): the run's artefacts folder."""
    warm_start_checkpoint: str | None = None
    """After a fit with ``model.warm_start.auto``: the domain model's best checkpoint that co-training began from."""
    warm_start_score: float | None = None
    """Its validation score (the monitored metric)."""
    best_checkpoints: dict[str, str]
    """After ``fit``: each model's best checkpoint (``"domain"``, ``"lm"``) as training left it. Read these, not
    the checkpoint callbacks: testing after fit loads checkpoints, which restores the callbacks' states as they
    were when that checkpoint was saved."""
    best_scores: dict[str, float]
    """After ``fit``: each model's best validation score, which picked ``best_checkpoints``."""

    _given: GivenCheckpoint | None = None
    """The ``--ckpt_path`` checkpoint as read and checked (Lightning is handed it, not the file again)."""
    _optimizer_plan: dict[int | None, set[str]] | None = None
    """Resuming with changed optimizer settings: which optimizer takes which keys from the config."""
    _lock: RunFolderLock | None = None
    """The run folder's lock, held from before fit writes there until it ends."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        add_run_options(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Refuses a run folder's saved ``config.yaml`` that names an unregistered class before jsonargparse
        imports it (a config you write yourself may name any class, and its checkpoints may name it too)."""
        if args is None or isinstance(args, list | tuple):
            check_saved_configs(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)
        register_configured(plain(self.config))  # the user's own classes, imported by their own config

    # ---- checkpoints given on the command line ---------------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Reads ``--ckpt_path`` safely (a damaged file is an error naming it) and compares the model config
        with the one the checkpoint was trained with, before Lightning replaces the config's
        hyperparameters with the checkpoint's.

        Resuming a fit with contradicting settings is an error listing them (``--allow_config_changes true``
        lets the config win). At test / predict time the checkpoint's architecture wins, with a warning
        naming what it replaced, and the evaluation knobs (``predict_with``, ``ks``...) stay the config's.
        """
        subcommand = self.config.get("subcommand")
        given = self._given = read_given(self.config[subcommand]) if subcommand else None
        if given is None:
            return
        model = plain(self.config[subcommand].model)
        fitting = subcommand == "fit"
        differences, self._optimizer_plan = given.model_differences(
            model, fitting, fitting and self.config.fit.allow_config_changes)
        if fitting and differences:  # resumed with them applied (model_differences refused them otherwise)
            return
        if differences:
            log.warning("%s: the checkpoint's model settings replace the config's: %s", given.path,
                        "; ".join(differences))
        self.config = model_config_from(self.parser, self.config, given.checkpoint, model)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("test", "validate"):  # the compact summary replaces Lightning's table of every metric
            parser.set_defaults(verbose=False)
        return parser

    def _run_subcommand(self, subcommand: str) -> None:
        with warnings.catch_warnings():
            if subcommand != "fit":
                ignore_evaluation_noise()
            try:
                super()._run_subcommand(subcommand)
            except RuntimeError as err:
                named = named_load_error(self.config[subcommand].get("ckpt_path"), err)
                if named is err:
                    raise
                raise named from err
            finally:  # also when fit fails: the folder is free for the next run
                if self._lock is not None:
                    self._lock.release()

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, handed the ``--ckpt_path`` checkpoint as read and checked (see :class:`ReadOnce`)."""
        trainer = super().instantiate_trainer(**kwargs)
        if self._given is not None:
            strategy = trainer.strategy
            strategy.checkpoint_io = ReadOnce(strategy.checkpoint_io, self._given.path, self._given.checkpoint)
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        configure_console(config.get("verbosity") or "info")
        route_logger(config, self.subcommand)

    def _add_tensorboard_callbacks(self) -> None:
        """The whole config and final metrics in the HPARAMS tab (``run.hparams``), training curves per
        model and learning rates (``training_log``), figures by activity and popularity after each test."""
        self.trainer.callbacks.append(RunHparams(self.config[self.subcommand].as_dict()))
        keep_data_hparams_apart(self.model, self.datamodule)
        if self.subcommand == "fit":
            self.trainer.callbacks.append(TrainingCurves())
        if self.subcommand in ("fit", "test"):
            self.trainer.callbacks.append(TestFigures())

    def before_validate(self) -> None:
        check_data(self.datamodule, self.model, self._given)
        self._add_tensorboard_callbacks()

    def before_test(self) -> None:
        check_data(self.datamodule, self.model, self._given)
        self._add_tensorboard_callbacks()

    def before_predict(self) -> None:
        # predicting for updated histories is what predict is for
        check_data(self.datamodule, self.model, self._given, interactions=False)
        if hasattr(self.model, "predicting_model"):  # before any file is opened
            check_k(self.model.predicting_model()[1], "model.predict_top_k")
        request = self.config_init[self.subcommand].get("predict_for")
        if isinstance(self.datamodule, RecDataModule):
            self.datamodule.request_predictions(request)

    def after_validate(self) -> None:
        self._print_summary("val")

    def after_test(self) -> None:
        self._print_summary("test")
        draw_test_figures(self.trainer)

    def _print_summary(self, stage: str) -> None:
        """``test`` and ``validate`` end with the table ``fit --test_after_fit`` ends with."""
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        if self.trainer.is_global_zero and any(k.endswith(f"/{stage}/ndcg@10") for k in metrics):
            print(summary_table(metrics, {"": self.config[self.subcommand].get("ckpt_path") or "the config's "
                                                "initial weights"}, stage))

    def after_predict(self) -> None:
        writer = next((c for c in self.trainer.callbacks if isinstance(c, TopKWriter)), None)
        if self.trainer.is_global_zero and writer is not None and writer.written is not None:
            print(f"predict: up to {writer.longest_list} recommendations each for {writer.users_written} users "
                  f"written to {writer.written}")

    def before_fit(self) -> None:
        folder = getattr(self.trainer.logger, "log_dir", None)
        if folder and self.trainer.is_global_zero:  # before anything is written there
            self._lock = RunFolderLock(folder)
            self._lock.acquire()
        fingerprint = check_data(self.datamodule, self.model, self._given)
        if fingerprint is not None:
            self.trainer.callbacks.append(RunRecord(self.config.fit.model, fingerprint))
        if self._given is not None and isinstance(self.datamodule, RecDataModule):
            check_data_changes(data_changes(self._given.data_settings, dict(self.datamodule.hparams)),
                               self.config.fit.allow_config_changes, self._given.mid_epoch,
                               self.config.fit.ckpt_path)
        if self._optimizer_plan:
            self.trainer.callbacks.append(ApplyOptimizerSettings(self._optimizer_plan))
        self.trainer.callbacks.append(StopOnNonFiniteLoss())
        self._add_tensorboard_callbacks()
        other = other_side_checkpoint(self.model, self.trainer.checkpoint_callback)
        if other is not None:
            self.trainer.callbacks.append(other)

    def after_fit(self) -> None:
        if isinstance(self.model, BridgeModule) and self.model.warm_started_from:
            self.warm_start_checkpoint, self.warm_start_score = self.model.warm_started_from
        # read before testing: loading a checkpoint restores the callbacks' states as they were saved in it
        kept = [c for c in self.trainer.checkpoint_callbacks if monitored_side(c) and c.best_model_path]
        best = self.best_checkpoints = {monitored_side(c): c.best_model_path for c in kept}
        self.best_scores = {monitored_side(c): float(c.best_model_score) for c in kept}
        last = self.trainer.checkpoint_callback.last_model_path if self.trainer.checkpoint_callback else ""
        if self.config.fit.test_after_fit:
            self.test_metrics = test_each_at_its_best(self.trainer, self.model, self.datamodule, best)
            draw_test_figures(self.trainer)
        if self.config.fit.export_after_fit:
            folder = Path(self.trainer.log_dir or ".").resolve() / "export"  # log_dir is a collective under DDP
            if self.trainer.is_global_zero:
                self.exported = export_run(self.model, self.datamodule, best, last, folder,
                                           getattr(self, "test_metrics", None))

def main(args: list[str] | None = None) -> BridgeCLI:
    """Runs the CLI; ``args`` lets tests drive it exactly as the shell does."""
    cli = BridgeCLI(
        L.LightningModule, RecDataModule, subclass_mode_model=True, subclass_mode_data=True,
        seed_everything_default=42, save_config_callback=RunConfigSaver, save_config_kwargs={"overwrite": True},
        args=args,
        trainer_defaults={"logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                     "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": "run"}}},
    )
    # After a run under several processes (never after a failure: a rank still in a collective would hang):
    # left to the interpreter's exit, gloo's threads can abort a rank ("terminate called without an active
    # exception"), and Lightning then kills the others
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return cli
