"""Hyperparameter recording that also works for LightningModules built inside another one."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters


def save_init_hyperparameters(module: L.LightningModule, ignore: Sequence[str]) -> None:
    """``module.save_hyperparameters`` from the caller's ``__init__`` arguments.

    Under LightningCLI, Lightning hands the top-level model's config to *every* ``save_hyperparameters``
    call made while that model is built, so the DomainModule and LMModule inside a BridgeModule would record
    the bridge's config. A module that is not the one the config describes records its own arguments.
    """
    frame = inspect.currentframe().f_back
    given = _given_hyperparameters.get()
    own_path = f"{type(module).__module__}.{type(module).__qualname__}"
    if given is None or given.get("_class_path") == own_path:
        module.save_hyperparameters(ignore=list(ignore), frame=frame)
        return
    token = _given_hyperparameters.set(None)
    try:
        module.save_hyperparameters(ignore=list(ignore), frame=frame)
    finally:
        _given_hyperparameters.reset(token)
