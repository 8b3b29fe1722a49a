"""A run's folder (``<save_dir>/<name>/version_N``) as the CLI finds it again: the saved ``config.yaml`` that
names it, and ``--ckpt_path last`` / ``best`` looked up inside it."""

from __future__ import annotations

import itertools
from pathlib import Path

from lightning_bridge.run.checkpoints import CheckpointError

RUN_CHECKPOINTS = ("best", "last")  # looked up in the run folder of the given config.yaml


def saved_configs(args: list[str] | tuple[str, ...]) -> list[Path]:
    """The ``--config`` files among ``args`` that a run saved into its own folder."""
    given = [b for a, b in itertools.pairwise(args) if a in ("--config", "-c")]
    given += [a.split("=", 1)[1] for a in args if a.startswith(("--config=", "-c="))]
    return [Path(g) for g in given if Path(g).is_file() and is_run_folder(Path(g).resolve().parent)]


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
