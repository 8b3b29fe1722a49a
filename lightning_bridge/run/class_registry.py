"""The classes a file may name. A checkpoint, an export folder or a run's saved config names its model, data
module, optimizer and scheduler by class path; such a path is only ever resolved through this table, so a file
never chooses which Python module is imported (jsonargparse would import whatever module a path names, and
``python -m`` puts the working folder first on ``sys.path``).

The table holds the project's own models, data modules, callbacks and strategies, torch's optimizers and
schedulers, the public classes of Lightning's loggers, callbacks, strategies, accelerators, plugins and
profilers, the classes the user's own config names (imported by it already, :func:`register_configured`),
and whatever a user registers with :func:`register_class` (their own model or data module, before loading
its checkpoints in Python). Building it imports nothing a file names.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch import accelerators as lightning_accelerators
from lightning.pytorch import callbacks as lightning_callbacks
from lightning.pytorch import cli as lightning_cli
from lightning.pytorch import loggers as lightning_loggers
from lightning.pytorch import plugins as lightning_plugins
from lightning.pytorch import profilers as lightning_profilers
from lightning.pytorch import strategies as lightning_strategies

CLASS_PATH_KEYS = ("class_path", "_class_path")
# settings typed as callables (the optimizer, the scheduler, co-training's two models): jsonargparse imports a
# dotted name given there as a string
CALLABLE_KEYS = ("optimizer", "scheduler", "domain", "lm")
PROJECT_MODULES = ("lightning_bridge.co_training.bridge", "lightning_bridge.co_training.warm_start",
                   "lightning_bridge.co_training.fsdp", "lightning_bridge.data.datasets",
                   "lightning_bridge.models.content", "lightning_bridge.models.lazy_adam",
                   "lightning_bridge.run.callbacks", "lightning_bridge.run.non_finite")
# Lightning's own modules whose public classes a config may name (trainer.strategy, trainer.plugins...)
LIGHTNING_MODULES = (lightning_loggers, lightning_callbacks, lightning_strategies, lightning_accelerators,
                     lightning_plugins, lightning_profilers)
_REGISTERED: dict[str, type] = {}


class UnregisteredClassError(ValueError):
    """A file names a class that is not one of the registered ones; the message names the file and the path."""


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_class(cls: type) -> type:
    """Lets checkpoints and saved configs name ``cls`` (a user's own model or data module); returns ``cls``,
    so that it serves as a class decorator."""
    _REGISTERED[class_path(cls)] = cls
    return cls


def _project_subclasses(base: type) -> Iterator[type]:
    for sub in base.__subclasses__():
        if sub.__module__.startswith("lightning_bridge."):
            yield sub
        yield from _project_subclasses(sub)


def _members(module: Any, base: type) -> Iterator[type]:
    for _, value in inspect.getmembers(module, inspect.isclass):
        if issubclass(value, base):
            yield value


def registered_classes() -> dict[str, type]:
    """Class path -> class, for every class a file may name."""
    for module in PROJECT_MODULES:  # the project's classes are found as subclasses once their modules are in
        importlib.import_module(module)
    classes = [*_project_subclasses(L.LightningModule), *_project_subclasses(L.LightningDataModule),
               *_project_subclasses(torch.optim.Optimizer), *_project_subclasses(lightning_callbacks.Callback),
               *_project_subclasses(lightning_strategies.Strategy),
               *_members(torch.optim, torch.optim.Optimizer),
               *_members(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
               torch.optim.lr_scheduler.ReduceLROnPlateau, lightning_cli.ReduceLROnPlateau,
               *(c for module in LIGHTNING_MODULES for c in _members(module, object))]
    table = {class_path(c): c for c in classes}
    # the public names as configs spell them: torch.optim.Adam, lightning.pytorch.loggers.TensorBoardLogger
    for module in (torch.optim, torch.optim.lr_scheduler, *LIGHTNING_MODULES):
        table.update({f"{module.__name__}.{c.__name__}": c for c in classes if getattr(module, c.__name__, None) is c})
    return {**table, **_REGISTERED}


def resolve(path: str, where: str) -> type:
    """The registered class ``path`` names (a full path, or a class name that is unique among them)."""
    table = registered_classes()
    if path in table:
        return table[path]
    by_name = {c for p, c in table.items() if p.rsplit(".", 1)[-1] == path}
    if len(by_name) == 1:
        return by_name.pop()
    raise UnregisteredClassError(
        f"{where}: names the class {path!r}, which is not one of the classes a checkpoint, export folder or "
        "saved config may name (lightning_bridge's models, data modules, callbacks and strategies, torch's "
        "optimizers and schedulers, Lightning's loggers, callbacks, strategies and plugins); nothing was "
        "imported. A class of your own must be registered first: "
        "lightning_bridge.run.class_registry.register_class(YourClass)")


def register_configured(config: Any) -> None:
    """Registers the classes that ``config`` (the caller's own, already parsed, so already imported) names:
    a model of the user's own, named by their config, may then be named by its checkpoints. Imports nothing:
    a class path whose module is not loaded yet is left alone."""
    for path in _class_paths(config):
        module, _, name = path.rpartition(".")
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            _REGISTERED[path] = cls


def _class_paths(config: Any) -> list[str]:
    if isinstance(config, dict):
        found = [v for k, v in config.items() if k in CLASS_PATH_KEYS and isinstance(v, str)]
        return found + [p for k, v in config.items() if k not in CLASS_PATH_KEYS for p in _class_paths(v)]
    if isinstance(config, list | tuple):
        return [p for v in config for p in _class_paths(v)]
    return []


def check_class_paths(config: Any, where: str) -> None:
    """Raises :class:`UnregisteredClassError` naming ``where`` for the first class path anywhere in
    ``config`` (nested dicts and lists: keys ``class_path`` and ``_class_path``, and a name given as the
    string value of a setting in ``CALLABLE_KEYS``) that is not registered."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key in CLASS_PATH_KEYS:
                if not isinstance(value, str):
                    raise UnregisteredClassError(f"{where}: {key} must be a class path, found {value!r}")
                resolve(value, where)
            elif key in CALLABLE_KEYS and isinstance(value, str):
                resolve(value, where)
            else:
                check_class_paths(value, where)
    elif isinstance(config, list | tuple):
        for value in config:
            check_class_paths(value, where)
