"""A run's folder (``<save_dir>/<name>/version_N``) as the CLI finds it again: the saved ``config.yaml`` that
names it, and ``--ckpt_path last`` / ``best`` looked up inside it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from lightning_bridge.run.checkpoints import CheckpointError
from lightning_bridge.run.class_registry import check_class_paths

RUN_CHECKPOINTS = ("best", "last")  # looked up in the run folder of the given config.yaml
# ckpt_path values that name no file: Lightning resolves them itself
SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")
DEFAULT_LOG_DIR = "logs"


def saved_configs(args: list[str] | tuple[str, ...]) -> list[Path]:
    """The ``--config`` files among ``args`` that a run saved into its own folder."""
    given = [b for a, b in itertools.pairwise(args) if a in ("--config", "-c")]
    given += [a.split("=", 1)[1] for a in args if a.startswith(("--config=", "-c="))]
    return [Path(g) for g in given if Path(g).is_file() and is_run_folder(Path(g).resolve().parent)]


def check_saved_configs(args: list[str] | tuple[str, ...]) -> None:
    """Refuses a run folder's saved ``config.yaml`` among ``args`` that names an unregistered class, before
    jsonargparse imports it (a config you write yourself may name any class)."""
    for path in saved_configs(args):
        try:
            saved = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue  # jsonargparse reports it
        check_class_paths(saved, f"{path} (a config saved by a run; a copy outside the run folder is your own "
                                 "config and may name any class)")


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is a run's log folder (``<save_dir>/<name>/version_N``) that a fit wrote."""
    fitted = (folder / "checkpoints").is_dir() or (folder / "hparams.yaml").is_file()
    return fitted and (folder / "config.yaml").is_file()


def run_checkpoint(name: str, configs: list, monitor: str | None) -> Path:
    """``--ckpt_path last`` or ``best``: the run's ``checkpoints/last.ckpt``, or its best checkpoint by
    ``monitor``, in the run folder that one of ``configs`` (the ``--config`` files) was saved in; an error
    naming what was looked for otherwise."""
    runs = [Path(str(c)).resolve().parent for c in configs]
    run = next((folder for folder in runs if is_run_folder(folder)), None)
    if run is None:
        given = ", ".join(str(c) for c in configs) or "no --config"
        raise CheckpointError(
            f"--ckpt_path {name} looks in the run folder of the --config given, but {given} is not a run's "
            f"config.yaml (a folder with config.yaml and checkpoints/). Pass --config <run>/config.yaml, or the "
            f"checkpoint's path as --ckpt_path")
    folder = run / "checkpoints"
    if name == "last":
        candidates = [folder / "last.ckpt"] if (folder / "last.ckpt").is_file() else []
        looked_for = "last.ckpt"
    else:  # the other model's best in co-training is best-<model>-...
        others = ("best-domain-", "best-lm-")
        candidates = [p for p in sorted(folder.glob("best-*.ckpt")) if not p.name.startswith(others)]
        looked_for = f"one best-*.ckpt (the best by {monitor})"
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(sorted(p.name for p in folder.glob("*.ckpt"))) or "no checkpoint"
    raise CheckpointError(f"--ckpt_path {name}: expected {looked_for} in {folder}, found {found}; pass the "
                          "checkpoint's path as --ckpt_path")


def route_logger(config: Any, subcommand: str | None) -> None:
    """Points the TensorBoard logger's folder (in ``config``, before the logger is built) at the run a command
    continues: a resumed fit writes on in its checkpoint's own run folder (so best-k bookkeeping carries on),
    and test / validate / predict with a run's saved ``config.yaml`` write events and predictions beside it.
    ``trainer.default_root_dir`` replaces the default ``logs`` folder."""
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
    if subcommand == "fit" and ckpt_path and ckpt_path not in SPECIAL_CKPT_PATHS \
            and Path(ckpt_path).parent.name == "checkpoints":
        run = Path(ckpt_path).parent.parent
    elif subcommand != "fit":
        given = [Path(str(c)).resolve().parent for c in config.get("config") or []]
        run = next((folder for folder in given if is_run_folder(folder)), None)
    if run is not None:
        logger_args.save_dir, logger_args.name = str(run.parent.parent), run.parent.name
        logger_args.version = run.name
