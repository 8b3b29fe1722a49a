"""The checkpoint named by ``--ckpt_path``: read once and checked before Lightning loads it, and its model
settings compared with the config's (resuming with contradicting settings is refused by name) or, at test /
predict time, put in the config's place."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_bridge.run.checkpoints import (
    DATA_LINKED,
    EVALUATION_KNOBS,
    CheckpointError,
    check_finite_weights,
    config_differences,
    read_checkpoint,
    saved_model_config,
    setting_changes,
)
from lightning_bridge.run.fingerprint import KEY as FINGERPRINT_KEY
from lightning_bridge.run.fingerprint import check_fingerprint, check_sizes, dataset_fingerprint
from lightning_bridge.run.folders import RUN_CHECKPOINTS, SPECIAL_CKPT_PATHS, run_checkpoint
from lightning_bridge.run.resume import check_resumable, resume_plan, stopped_mid_epoch

if TYPE_CHECKING:
    from jsonargparse import Namespace
    from lightning.pytorch.cli import LightningArgumentParser

log = logging.getLogger(__name__)


@dataclass
class GivenCheckpoint:
    """``--ckpt_path`` as read (once: Lightning is handed ``checkpoint``, not the file again)."""

    path: str
    checkpoint: dict[str, Any]

    @classmethod
    def read(cls, path: str) -> GivenCheckpoint:
        """A damaged file, or one with non-finite weights, is an error naming it."""
        checkpoint = read_checkpoint(path)
        check_finite_weights(checkpoint, path)
        return cls(path, checkpoint)

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """The data the checkpoint was trained on (``lightning_bridge.run.fingerprint``)."""
        return self.checkpoint.get(FINGERPRINT_KEY)

    @property
    def tables(self) -> dict[str, tuple[int, ...]]:
        """The shapes of its shared tables, which must match the data's numbers of users and items."""
        return {k: tuple(v.shape) for k, v in self.checkpoint["state_dict"].items()
                if k.endswith(("info.user.weight", "info.item.weight"))}

    @property
    def data_settings(self) -> dict[str, Any] | None:
        return self.checkpoint.get("datamodule_hyper_parameters")

    @property
    def mid_epoch(self) -> bool:
        return stopped_mid_epoch(self.checkpoint)

    def model_differences(self, given: dict[str, Any], fitting: bool, allow_changes: bool
                          ) -> tuple[list[str], dict[int | None, set[str]] | None]:
        """The model settings of the config (``given``) that differ from the checkpoint's, described, and,
        when a fit resumes with ``--allow_config_changes``, which optimizer takes which changed key. Resuming
        with differences and without that flag is an error listing them. The data's linked sizes and the
        evaluation knobs never count; at test / predict time neither does the optimizer."""
        saved = saved_model_config(self.checkpoint)
        if fitting:
            check_resumable(self.checkpoint, self.path)
        ignore = DATA_LINKED + EVALUATION_KNOBS + (() if fitting else ("optimizer", "scheduler"))
        differences = config_differences(saved, given, ignore) if saved else []
        if not (differences and fitting):
            return differences, None
        if not allow_changes:
            raise CheckpointError(
                f"{self.path}: resuming with a model config that contradicts the checkpoint's:\n  "
                + "\n  ".join(differences) + "\nResume with the run's config.yaml, or pass "
                "--allow_config_changes true to train on with the new values on purpose.")
        log.warning("%s: resuming with changed settings (--allow_config_changes), applied: %s", self.path,
                    "; ".join(differences))
        return differences, resume_plan(setting_changes(saved, given, ignore), given, self.path)


def read_given(config: Any) -> GivenCheckpoint | None:
    """The checkpoint a subcommand's ``config`` names by ``--ckpt_path``, read and checked; None where it names
    no file. ``best`` and ``last`` are looked up in the run the ``--config`` names (the path found is written
    into ``config``), not in the new run folder Lightning would search."""
    path = config.get("ckpt_path")
    if path in RUN_CHECKPOINTS:
        path = config.ckpt_path = str(run_checkpoint(path, config.get("config") or [], config.checkpoint.monitor))
    if not path or path in SPECIAL_CKPT_PATHS:
        return None
    return GivenCheckpoint.read(path)


def model_config_from(parser: LightningArgumentParser, config: Namespace, checkpoint: dict[str, Any],
                      given: dict[str, Any]) -> Namespace:
    """``config`` with the checkpoint's hyperparameters in place of its model settings, as LightningCLI does,
    from the checkpoint already read and checked rather than a second read of the file; the evaluation knobs
    (``predict_with``, ``ks``...) stay those of the config's model section as given (``given``)."""
    subcommand = config.subcommand
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if hparams:
        if "_class_path" in hparams:  # registered: read_checkpoint checked every class path
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            config = parser.parse_object({subcommand: {"model": hparams}}, config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise
    init_args = config[subcommand].model.get("init_args")
    for key in EVALUATION_KNOBS:
        if init_args is not None and key in given.get("init_args", {}):
            init_args[key] = given["init_args"][key]
    return config


def named_load_error(path: str | None, err: RuntimeError) -> Exception:
    """torch's ``Error(s) in loading state_dict`` (or the slim-checkpoint check's) for the ``--ckpt_path``
    checkpoint, as an error naming the file; any other error as it is."""
    message = str(err)
    if not path or not ("Error(s) in loading state_dict" in message or "the checkpoint does not fit" in message):
        return err
    details = " ".join(line.strip() for line in message.splitlines()[1:] if line.strip())[:1000]
    return CheckpointError(f"{path}: its weights do not fit the model as configured ({details or message}). "
                           "Use the config it was trained with (its run folder's config.yaml).")


def check_data(datamodule: Any, model: Any, given: GivenCheckpoint | None, interactions: bool = True
               ) -> dict[str, Any] | None:
    """Refuses a ``--ckpt_path`` checkpoint (``given``) and the model's warm start when they were trained on
    other data than ``datamodule`` (``interactions=False``: updated histories are allowed, as at predict time);
    returns the data's fingerprint (None for a data module that is not a RecDataModule)."""
    if datamodule is None or not hasattr(datamodule, "interactions"):
        return None
    current = dataset_fingerprint(datamodule)
    if given is not None:
        check_fingerprint(given.fingerprint, current, given.path, interactions,
                          (given.data_settings, dict(datamodule.hparams)))
        check_sizes(given.tables, current["num_users"], current["num_items"], given.path)
    warm = getattr(getattr(model, "warm_start", None), "checkpoint", None)  # a BridgeModule's WarmStart
    if warm:  # as the model read it (once) when it loaded the warm start
        check_fingerprint(model.warm_start_fingerprint, current, warm, interactions=False)
    return current
