"""What a resumed fit (``fit --ckpt_path``) does with settings that differ from the checkpoint's: each is
applied, or the resume is refused naming it. Nothing is recorded in ``config.yaml`` without taking effect.

Without ``--allow_config_changes`` every difference is refused. With it:

- model settings the rebuilt model reads at every step (``APPLIED_BY_THE_MODEL``: regularisation, dropout,
  the schedule, loss weights, clipping...) take effect as they are;
- optimizer settings (``optimizer.init_args.*``, ``info_lr``, ``head_lr``...) would be overwritten by the
  optimizer state Lightning restores, so :class:`ApplyOptimizerSettings` writes the config's values back
  over the restored ones; a learning rate under a scheduler is refused (the scheduler's restored state sets it);
- everything else (the architecture, the initialisation, any class) is fixed by the checkpoint's weights and
  is refused;
- data settings that shape training batches (``DATA_TRAINING``) take effect from the resumed epoch on, except
  in a checkpoint written inside an epoch, whose position is counted in the old batches. The split is never
  changed (the data fingerprint refuses it).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightning_bridge.run.checkpoints import CheckpointError, described, flatten, plain
from lightning_bridge.run.fingerprint import DATA_TRAINING

log = logging.getLogger(__name__)

APPLIED_BY_THE_MODEL = (
    "reg_weight", "dropout", "loss", "lora_dropout", "backbone_dropout", "gradient_checkpointing", "task_weights",
    "temperature", "template", "item_separator", "max_length", "max_item_tokens", "schedule.domain_steps",
    "schedule.lm_steps", "schedule.domain_clip", "schedule.lm_clip", "knowledge.text_anchor_weight",
    "knowledge.text_anchor_refresh_epochs", "evaluate_lm", "cold_start.item_id_dropout", "cache_dir",
    "local_files_only")
# model settings that end up in the optimizer's parameter groups: setting -> the group key it sets
GROUP_KEYS = {"info_lr": "lr", "head_lr": "lr", "info_weight_decay": "weight_decay"}
LEARNING_RATES = ("lr", "info_lr", "head_lr")
SIDES = ("domain", "lm")  # a co-training run's optimizers, in order


def _section(key: str) -> str:
    """``"init_args.domain.init_args."`` for a key of the domain model's section, ``"init_args."`` alone."""
    parts = key.split(".")
    for side in SIDES:
        if side in parts[:2]:
            return ".".join(parts[: parts.index(side) + 2]) + "."
    return "init_args."


def _optimizer_key(key: str) -> str | None:
    """The parameter-group key a setting sets (``lr`` for ``init_args.optimizer.init_args.lr``), else None."""
    parts = key.split(".")
    if "optimizer" in parts and parts[-1] != "class_path":
        return parts[-1]
    return GROUP_KEYS.get(parts[-1])


def resume_plan(changes: list[tuple[str, Any, Any]], given: dict[str, Any], where: str
                ) -> dict[int | None, set[str]]:
    """Refuses (naming each) the model ``changes`` a resumed run cannot apply; returns which optimizer (its
    index, None: every one) must have which parameter-group keys written back from the config."""
    scheduled = {key.split("scheduler")[0] for key, value in flatten(plain(given)).items()
                 if value is not None and (key.endswith(".scheduler") or ".scheduler." in key)}
    refused, plan = [], {}
    for change in changes:
        key = change[0]
        name, group_key = key.rsplit(".", 1)[-1], _optimizer_key(key)
        if group_key is not None and name in LEARNING_RATES and _section(key) in scheduled:
            refused.append(f"{described(change)} (a scheduler sets the learning rate from its restored state)")
        elif group_key is not None:
            side = next((s for s in SIDES if f".{s}." in f".{key}"), None)
            plan.setdefault(SIDES.index(side) if side else None, set()).add(group_key)
        elif not any(f".{key}".endswith(f".{applied}") for applied in APPLIED_BY_THE_MODEL):
            refused.append(f"{described(change)} (fixed by the checkpoint's weights)")
    if refused:
        raise CheckpointError(
            f"{where}: --allow_config_changes cannot apply these to a resumed run:\n  " + "\n  ".join(refused)
            + "\nResume with the checkpoint's values (the run's config.yaml), or start a new run from its weights "
            "(model.warm_start.checkpoint for co-training).")
    return plan


def data_changes(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``("data.batch_size", 64, 32)`` for each training-batch setting that differs from the checkpoint's."""
    if not saved:
        return []
    return [(f"data.{k}", saved[k], current[k]) for k in DATA_TRAINING
            if k in saved and k in current and saved[k] != current[k]]


def check_data_changes(changes: list[tuple[str, Any, Any]], allowed: bool, mid_epoch: bool, where: str) -> None:
    """Refuses changed data settings without ``--allow_config_changes``, and in a mid-epoch checkpoint."""
    if not changes:
        return
    listed = "\n  ".join(described(c) for c in changes)
    if not allowed:
        raise CheckpointError(f"{where}: resuming with data settings that differ from the checkpoint's:\n  {listed}"
                              "\nResume with the run's config.yaml, or pass --allow_config_changes true to train on "
                              "with the new values on purpose.")
    if mid_epoch:
        raise CheckpointError(f"{where}: was written inside an epoch, whose position is counted in batches of the "
                              f"old settings, so these cannot change on resume:\n  {listed}\nResume from a checkpoint "
                              "written at an epoch's end, or with the checkpoint's values.")
    log.warning("%s: resuming with changed data settings (--allow_config_changes), applied from the resumed epoch "
                "on: %s", where, "; ".join(described(c) for c in changes))


def check_resumable(checkpoint: dict[str, Any], where: str) -> None:
    """A resumed fit continues the checkpoint's training state: a file without one (weights only, e.g. the
    domain half written by ``export domain``, or edited) would silently restart the optimizer or the loops."""
    missing = [key for key in ("optimizer_states", "loops") if not checkpoint.get(key)]
    if missing:
        raise CheckpointError(f"{where}: holds no training state to resume ({' and '.join(missing)} missing or "
                              "empty): test it, or start a new run from its weights (model.warm_start.checkpoint "
                              "for co-training)")


def stopped_mid_epoch(checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint was written inside an epoch (a resumed run finishes that epoch first)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    return bool(progress) and not progress.get("is_last_batch", True) and progress["current"]["processed"] > 0


class ApplyOptimizerSettings(Callback):
    """Writes the config's optimizer settings over those Lightning restores from the checkpoint.

    Args:
        plan: optimizer index (None: every optimizer) -> the parameter-group keys to take from the config.
    """

    def __init__(self, plan: dict[int | None, set[str]]) -> None:
        self.plan = plan
        self._configured: list[list[dict[str, Any]]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the optimizers as configure_optimizers built them: the restore comes after this hook
        self._configured = [[{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]
                            for o in trainer.optimizers]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for index, (optimizer, configured) in enumerate(zip(trainer.optimizers, self._configured, strict=True)):
            keys = self.plan.get(None, set()) | self.plan.get(index, set())
            for group, values in zip(optimizer.param_groups, configured, strict=True):
                group.update({k: values[k] for k in keys if k in values})
            if keys:
                log.info("resumed optimizer %d with the config's %s", index, ", ".join(sorted(keys)))
