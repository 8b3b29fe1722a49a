"""The command line: ``python main.py {fit,validate,test,predict} --config configs/<run>.yaml``."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.data.datamodule import RecDataModule
from lightning_bridge.data.requests import PredictionRequest, check_k
from lightning_bridge.figures import TestFigures
from lightning_bridge.models.lm import LMModule
from lightning_bridge.run.callbacks import RunCheckpoint, RunConfigSaver, StopOnNonFiniteLoss, TopKWriter
from lightning_bridge.run.checkpoints import (
    DATA_LINKED,
    EVALUATION_KNOBS,
    CheckpointError,
    ReadOnce,
    RunRecord,
    check_finite_weights,
    config_differences,
    plain,
    read_checkpoint,
    saved_model_config,
    setting_changes,
)
from lightning_bridge.run.class_registry import check_class_paths, register_configured
from lightning_bridge.run.console import (
    ProgressLog,
    Verbosity,
    configure_console,
    ignore_evaluation_noise,
    summary_table,
)
from lightning_bridge.run.fingerprint import KEY as FINGERPRINT_KEY
from lightning_bridge.run.fingerprint import check_fingerprint, check_sizes, dataset_fingerprint
from lightning_bridge.run.folders import RUN_CHECKPOINTS, is_run_folder, run_checkpoint, saved_configs
from lightning_bridge.run.hparams import RunHparams
from lightning_bridge.run.lock import RunFolderLock
from lightning_bridge.run.resume import (
    ApplyOptimizerSettings,
    check_data_changes,
    check_resumable,
    data_changes,
    resume_plan,
    stopped_mid_epoch,
)
from lightning_bridge.run.training_log import TrainingCurves
from lightning_bridge.serving.artefacts import export_checkpoints

log = logging.getLogger(__name__)
# ckpt_path values that name no file: Lightning resolves them itself
SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")
DEFAULT_LOG_DIR = "logs"


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
    """After a fit with ``model.warm_start_auto``: the domain model's best checkpoint that co-training began from."""
    warm_start_score: float | None = None
    """Its validation score (the monitored metric)."""
    best_checkpoints: dict[str, str]
    """After ``fit``: each model's best checkpoint (``"domain"``, ``"lm"``) as training left it. Read these, not
    the checkpoint callbacks: testing after fit loads checkpoints, which restores the callbacks' states as they
    were when that checkpoint was saved."""
    best_scores: dict[str, float]
    """After ``fit``: each model's best validation score, which picked ``best_checkpoints``."""

    _checkpoint: dict[str, Any] | None = None
    """What the run needs of the ``--ckpt_path`` checkpoint: its data fingerprint and table sizes."""
    _optimizer_plan: dict[int | None, set[str]] | None = None
    """Resuming with changed optimizer settings: which optimizer takes which keys from the config."""
    _preloaded: tuple[str, dict[str, Any]] | None = None
    _lock: RunFolderLock | None = None
    """The run folder's lock, held from before fit writes there until it ends."""
    """The ``--ckpt_path`` checkpoint as read and checked, until Lightning loads it."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "domain/val/ndcg@10", "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}-{step}"})
        parser.add_lightning_class_args(TopKWriter, "predictions")
        parser.add_lightning_class_args(ProgressLog, "progress")
        parser.add_argument("--verbosity", type=Verbosity, default="info",
                            help="Which of the project's log messages reach stderr: warning, info (progress, "
                                 "the warm start, the export) or debug")
        parser.add_class_arguments(PredictionRequest, "predict_for", help="Whom predict recommends for")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="After fit, test the best checkpoint and print its metrics")
        parser.add_argument("--export_after_fit", type=bool, default=True,
                            help="After fit, write the run's portable artefacts into <run>/export "
                                 "(lightning_bridge.serving.artefacts), each model from its best checkpoint")
        parser.add_argument("--allow_config_changes", type=bool, default=False,
                            help="Resume (fit --ckpt_path) with settings that differ from the checkpoint's, "
                                 "each applied: optimizer settings (written over the restored optimizer state; "
                                 "a learning rate under a scheduler is refused), what the model reads every "
                                 "step (regularisation, dropout, the schedule, loss weights), and training-batch "
                                 "settings of the data (not inside an epoch). Architecture, initialisation, "
                                 "classes, the data and its split are refused (lightning_bridge.run.resume)")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Refuses a run folder's saved ``config.yaml`` that names an unregistered class before jsonargparse
        imports it (a config you write yourself may name any class, and its checkpoints may name it too)."""
        if args is None or isinstance(args, list | tuple):
            for path in saved_configs(sys.argv[1:] if args is None else args):
                try:
                    saved = yaml.safe_load(path.read_text())
                except (OSError, yaml.YAMLError):
                    continue  # jsonargparse reports it
                check_class_paths(saved, f"{path} (a config saved by a run; a copy outside the run folder is "
                                         "your own config and may name any class)")
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
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path in RUN_CHECKPOINTS:  # in the run --config names, not in the new run folder Lightning would search
            config = self.config[subcommand]
            path = config.ckpt_path = str(run_checkpoint(path, config.get("config") or [], config.checkpoint.monitor))
        if not path or path in SPECIAL_CKPT_PATHS:
            return
        checkpoint = read_checkpoint(path)  # the one read: Lightning is handed this, not the file again
        check_finite_weights(checkpoint, path)
        self._preloaded = (path, checkpoint)
        tables = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()
                  if k.endswith(("info.user.weight", "info.item.weight"))}
        self._checkpoint = {FINGERPRINT_KEY: checkpoint.get(FINGERPRINT_KEY), "tables": tables,
                            "data": checkpoint.get("datamodule_hyper_parameters"),
                            "mid_epoch": stopped_mid_epoch(checkpoint)}
        model = self.config[subcommand].model
        given, saved = plain(model), saved_model_config(checkpoint)
        fitting = subcommand == "fit"
        if fitting:
            check_resumable(checkpoint, path)
        ignore = DATA_LINKED + EVALUATION_KNOBS + (() if fitting else ("optimizer", "scheduler"))
        differences = config_differences(saved, given, ignore) if saved else []
        if differences and fitting:
            if not self.config.fit.allow_config_changes:
                raise CheckpointError(
                    f"{path}: resuming with a model config that contradicts the checkpoint's:\n  "
                    + "\n  ".join(differences) + "\nResume with the run's config.yaml, or pass "
                    "--allow_config_changes true to train on with the new values on purpose.")
            self._optimizer_plan = resume_plan(setting_changes(saved, given, ignore), given, path)
            log.warning("%s: resuming with changed settings (--allow_config_changes), applied: %s", path,
                        "; ".join(differences))
            return
        if differences:
            log.warning("%s: the checkpoint's model settings replace the config's: %s", path, "; ".join(differences))
        self._model_config_from(checkpoint)
        init_args = self.config[subcommand].model.get("init_args")
        for key in EVALUATION_KNOBS:
            if init_args is not None and key in given.get("init_args", {}):
                init_args[key] = given["init_args"][key]

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
                named = self._named_load_error(err)
                if named is err:
                    raise
                raise named from err
            finally:  # also when fit fails: the folder is free for the next run
                if self._lock is not None:
                    self._lock.release()

    def _named_load_error(self, err: RuntimeError) -> Exception:
        """torch's ``Error(s) in loading state_dict`` (or the slim-checkpoint check's) for the ``--ckpt_path``
        checkpoint, as an error naming the file; any other error as it is."""
        path = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        message = str(err)
        if not path or not ("Error(s) in loading state_dict" in message or "the checkpoint does not fit" in message):
            return err
        details = " ".join(line.strip() for line in message.splitlines()[1:] if line.strip())[:1000]
        return CheckpointError(f"{path}: its weights do not fit the model as configured ({details or message}). "
                               "Use the config it was trained with (its run folder's config.yaml).")

    def _model_config_from(self, checkpoint: dict[str, Any]) -> None:
        """What LightningCLI does with a checkpoint's hyperparameters (they replace the config's model
        settings), from the checkpoint already read and checked rather than a second read of the file."""
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:  # registered: read_checkpoint checked every class path
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, handed the ``--ckpt_path`` checkpoint as read and checked (see :class:`ReadOnce`)."""
        trainer = super().instantiate_trainer(**kwargs)
        if self._preloaded is not None:
            strategy = trainer.strategy
            strategy.checkpoint_io = ReadOnce(strategy.checkpoint_io, *self._preloaded)
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        configure_console(config.get("verbosity") or "info")
        logger = config.trainer.get("logger")
        logger_args = logger.get("init_args") if hasattr(logger, "get") else None
        if logger_args is None or "save_dir" not in logger_args:
            return
        if "default_hp_metric" in logger_args:  # RunHparams declares the real metrics instead of hp_metric = -1
            logger_args.default_hp_metric = False
        root = config.trainer.get("default_root_dir")
        if root and logger_args.save_dir == DEFAULT_LOG_DIR:
            logger_args.save_dir = root
        if logger_args.get("version") is not None:
            return
        ckpt_path = config.get("ckpt_path")
        run = None
        if self.subcommand == "fit" and ckpt_path and ckpt_path not in SPECIAL_CKPT_PATHS \
                and Path(ckpt_path).parent.name == "checkpoints":
            # resume in the checkpoint's own run folder, so that best-k bookkeeping carries on
            run = Path(ckpt_path).parent.parent
        elif self.subcommand != "fit":
            # test / validate / predict with a run's saved config: events and predictions go beside that run
            given = [Path(str(c)).resolve().parent for c in config.get("config") or []]
            run = next((folder for folder in given if is_run_folder(folder)), None)
        if run is not None:
            logger_args.save_dir, logger_args.name = str(run.parent.parent), run.parent.name
            logger_args.version = run.name

    def _check_data(self, interactions: bool = True) -> dict[str, Any] | None:
        """Refuses a ``--ckpt_path`` checkpoint (and a warm start) trained on other data; returns the data's
        fingerprint (None for a data module that is not a RecDataModule)."""
        if self.datamodule is None or not hasattr(self.datamodule, "interactions"):
            return None
        current = dataset_fingerprint(self.datamodule)
        path = self.config[self.subcommand].get("ckpt_path")
        if self._checkpoint is not None:
            check_fingerprint(self._checkpoint[FINGERPRINT_KEY], current, path, interactions,
                              (self._checkpoint["data"], dict(self.datamodule.hparams)))
            check_sizes(self._checkpoint["tables"], current["num_users"], current["num_items"], path)
        warm = getattr(self.model, "hparams", {}).get("warm_start_checkpoint")
        if warm:  # as the model read it (once) when it loaded the warm start
            check_fingerprint(self.model.warm_start_fingerprint, current, warm, interactions=False)
        return current

    def _add_tensorboard_callbacks(self) -> None:
        """The whole config and final metrics in the HPARAMS tab (``run_hparams``), training curves per
        model and learning rates (``training_log``), figures by activity and popularity after each test."""
        self.trainer.callbacks.append(RunHparams(self.config[self.subcommand].as_dict()))
        self._keep_data_hparams_apart()
        if self.subcommand == "fit":
            self.trainer.callbacks.append(TrainingCurves())
        if self.subcommand in ("fit", "test"):
            self.trainer.callbacks.append(TestFigures())

    def _keep_data_hparams_apart(self) -> None:
        """A setting both the model and the data have with different values (``cache_dir`` of an LM run and
        of its data) makes Lightning refuse to merge their hyperparameters for the logger; the data's then stay
        out of that merge (``config.yaml`` and the HPARAMS tab hold them all the same)."""
        model, data = self.model, self.datamodule
        if data is None or not hasattr(data, "hparams_initial") or not hasattr(model, "hparams_initial"):
            return
        clash = sorted(k for k in model.hparams_initial.keys() & data.hparams_initial.keys()
                       if k != "_class_path" and model.hparams_initial[k] != data.hparams_initial[k])
        if clash:
            data.save_hyperparameters(dict(data.hparams), logger=False)
            log.debug("the model's and the data's %s differ: the data's settings are left out of hparams.yaml",
                      ", ".join(clash))

    def before_validate(self) -> None:
        self._check_data()
        self._add_tensorboard_callbacks()

    def before_test(self) -> None:
        self._check_data()
        self._add_tensorboard_callbacks()

    def before_predict(self) -> None:
        self._check_data(interactions=False)  # predicting for updated histories is what predict is for
        if hasattr(self.model, "predicting_model"):  # before any file is opened
            check_k(self.model.predicting_model()[1], "model.predict_top_k")
        request = self.config_init[self.subcommand].get("predict_for")
        if isinstance(self.datamodule, RecDataModule):
            self.datamodule.request_predictions(request)

    def after_validate(self) -> None:
        self._print_summary("val")

    def after_test(self) -> None:
        self._print_summary("test")

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
        fingerprint = self._check_data()
        if fingerprint is not None:
            self.trainer.callbacks.append(RunRecord(self.config.fit.model, fingerprint))
        if self._checkpoint is not None and isinstance(self.datamodule, RecDataModule):
            check_data_changes(data_changes(self._checkpoint["data"], dict(self.datamodule.hparams)),
                               self.config.fit.allow_config_changes, self._checkpoint["mid_epoch"],
                               self.config.fit.ckpt_path)
        if self._optimizer_plan:
            self.trainer.callbacks.append(ApplyOptimizerSettings(self._optimizer_plan))
        self.trainer.callbacks.append(StopOnNonFiniteLoss())
        self._add_tensorboard_callbacks()
        primary = self.trainer.checkpoint_callback
        if isinstance(self.model, BridgeModule) and monitored_side(primary) and self.model.hparams.evaluate_lm:
            other = "lm" if monitored_side(primary) == "domain" else "domain"
            self.trainer.callbacks.append(RunCheckpoint(
                dirpath=primary.dirpath, monitor=f"{other}/val/ndcg@10", mode="max", save_top_k=1,
                filename=f"best-{other}-{{epoch}}-{{step}}", auto_insert_metric_name=True))

    def after_fit(self) -> None:
        if isinstance(self.model, BridgeModule) and self.model.warm_started_from:
            self.warm_start_checkpoint, self.warm_start_score = self.model.warm_started_from
        # read before testing: loading a checkpoint restores the callbacks' states as they were saved in it
        kept = [c for c in self.trainer.checkpoint_callbacks if monitored_side(c) and c.best_model_path]
        best = self.best_checkpoints = {monitored_side(c): c.best_model_path for c in kept}
        self.best_scores = {monitored_side(c): float(c.best_model_score) for c in kept}
        last = self.trainer.checkpoint_callback.last_model_path if self.trainer.checkpoint_callback else ""
        if self.config.fit.test_after_fit:
            self._test_after_fit(best)
        if self.config.fit.export_after_fit:
            folder = Path(self.trainer.log_dir or ".").resolve() / "export"  # log_dir is a collective under DDP
            if self.trainer.is_global_zero:
                self._export(best, last, folder)

    def _export(self, best: dict[str, str], last: str, folder: Path) -> None:
        """Writes ``folder`` from each model's best checkpoint (the last one where none was kept)."""
        sides = export_sides(self.model, best, last)
        if not sides:
            log.warning("export_after_fit: no checkpoint was written, so there is nothing to export")
            return
        if any(Path(p).is_dir() for p in sides.values()):
            log.warning("export_after_fit: the checkpoints are sharded folders; consolidate one into a file and "
                        "run `python -m lightning_bridge.serving.export artefacts <checkpoint>`")
            return
        self.exported = export_checkpoints(self.datamodule, sides, folder,
                                           metrics=getattr(self, "test_metrics", None))
        log.info("exported the run's artefacts to %s", self.exported)

    def _test_after_fit(self, best: dict[str, str]) -> None:
        primary, trainer = self.trainer.checkpoint_callback, self.trainer
        if primary is not None and not primary.best_model_path:
            last = primary.last_model_path or "last.ckpt"
            raise ValueError(
                f"test_after_fit: fit saved no best checkpoint by {primary.monitor} to test, because no validation "
                f"ran (trainer.max_epochs={trainer.max_epochs}, trainer.check_val_every_n_epoch="
                f"{trainer.check_val_every_n_epoch}). Validate more often, or test the final weights with "
                f"`main.py test --config <run folder>/config.yaml --ckpt_path {last}`.")
        tested = monitored_side(self.trainer.checkpoint_callback)
        others = {side: path for side, path in best.items() if side != tested}
        # With a second test, each model is evaluated (and logged) once: at its own best checkpoint, or else at
        # the primary one.
        try:
            if others:
                self.model.evaluate_only(set(self.model.evaluated_models()) - set(others))
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best", verbose=False)
            self.test_metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
            for side, path in others.items():
                self.model.evaluate_only({side})
                self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=path, verbose=False)
                self.test_metrics.update({k: float(v) for k, v in self.trainer.callback_metrics.items()})
        finally:
            self.model.evaluate_only(None)
        if self.trainer.is_global_zero:
            print(summary_table(self.test_metrics, best))


def export_sides(model: L.LightningModule, best: dict[str, str], last: str) -> dict[str, str]:
    """The checkpoint each model of ``model`` is exported from: its own best (``best``: side -> path), else the
    other model's best, else ``last``."""
    fallback = best.get("domain") or best.get("lm") or last
    if isinstance(model, BridgeModule):
        sides = {"domain": best.get("domain") or fallback, "lm": best.get("lm") or fallback}
    else:
        sides = {"lm" if isinstance(model, LMModule) else "domain": fallback}
    return {side: path for side, path in sides.items() if path}


def monitored_side(checkpoint: ModelCheckpoint | None) -> str | None:
    """The model a checkpoint callback monitors ("domain" for ``domain/val/ndcg@10``), if any."""
    return checkpoint.monitor.split("/")[0] if checkpoint is not None and checkpoint.monitor else None


def main(args: list[str] | None = None) -> BridgeCLI:
    """Runs the CLI; ``args`` lets tests drive it exactly as the shell does."""
    return BridgeCLI(
        L.LightningModule, RecDataModule, subclass_mode_model=True, subclass_mode_data=True,
        seed_everything_default=42, save_config_callback=RunConfigSaver, save_config_kwargs={"overwrite": True},
        args=args,
        trainer_defaults={"logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                     "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": "run"}}},
    )
