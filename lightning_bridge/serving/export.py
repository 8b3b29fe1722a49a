"""Export a trained run: its portable artefacts folder, or the domain half of a co-training checkpoint.

    python -m lightning_bridge.serving.export artefacts logs/run/version_0/checkpoints/best-epoch=9-step=90.ckpt
    python -m lightning_bridge.serving.export artefacts BRIDGE.ckpt --lm_checkpoint best-lm-....ckpt --out export/
    python -m lightning_bridge.serving.export domain logs/<run>/checkpoints/last.ckpt domain.ckpt

``artefacts`` writes ``<run>/export/`` (or ``--out``): see ``lightning_bridge.serving.artefacts`` for what it holds and
``lightning_bridge.load_recommender`` for reading it back. The data is rebuilt from the checkpoint's own
data settings (the same files must be readable). ``domain`` writes a DomainModule checkpoint that loads with
``DomainModule.load_from_checkpoint`` or ``main.py predict --ckpt_path domain.ckpt`` and serves
recommendations without building, or even installing the weights of, the language model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lightning_bridge.data.datamodule import RecDataModule
from lightning_bridge.models.checkpoint_contents import export_domain
from lightning_bridge.run.checkpoints import check_finite_weights, read_checkpoint
from lightning_bridge.run.class_registry import resolve
from lightning_bridge.run.fingerprint import KEY as FINGERPRINT_KEY
from lightning_bridge.run.fingerprint import check_fingerprint, dataset_fingerprint
from lightning_bridge.run.lock import RunFolderLock
from lightning_bridge.serving.artefacts import export_checkpoints

DEFAULT_FOLDER = "export"


def default_folder(checkpoint: str | Path) -> Path:
    """``<run>/export`` for a checkpoint inside ``<run>/checkpoints/``, else ``export`` beside the file."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run / DEFAULT_FOLDER


def export_artefacts(checkpoint: str, lm_checkpoint: str | None = None, out: str | None = None) -> Path:
    """The ``artefacts`` command: the models of ``checkpoint`` (the LM from ``lm_checkpoint`` if given)."""
    saved = read_checkpoint(checkpoint)  # the one read of the file: everything below uses it
    check_finite_weights(saved, checkpoint)
    data = data_from_checkpoint(saved, checkpoint)
    check_fingerprint(saved.get(FINGERPRINT_KEY), dataset_fingerprint(data), checkpoint)
    kind = saved["hyper_parameters"].get("_class_path", "")
    if kind.endswith("BridgeModule"):
        sides = {"domain": checkpoint, "lm": lm_checkpoint or checkpoint}
    else:
        if lm_checkpoint:
            raise ValueError(f"--lm_checkpoint applies to co-training runs; {checkpoint} holds a {kind}")
        sides = {"lm" if kind.endswith("LMModule") else "domain": checkpoint}
    read = {checkpoint: saved}
    if lm_checkpoint and lm_checkpoint != checkpoint:
        read[lm_checkpoint] = read_checkpoint(lm_checkpoint)
        check_finite_weights(read[lm_checkpoint], lm_checkpoint)
        check_fingerprint(read[lm_checkpoint].get(FINGERPRINT_KEY), dataset_fingerprint(data), lm_checkpoint)
    folder = Path(out) if out else default_folder(checkpoint)
    # one writer at a time: a run's own export is written under its run folder's lock (fit holds it too)
    run = folder.parent if folder.name == DEFAULT_FOLDER and (folder.parent / "checkpoints").is_dir() else folder
    lock = RunFolderLock(run)
    lock.acquire()
    try:
        return export_checkpoints(data, sides, folder, read)
    finally:
        lock.release()


def data_from_checkpoint(saved: dict[str, Any], path: str) -> RecDataModule:
    """The data module a checkpoint records (``datamodule_hyper_parameters``), built from its registered class
    (never Lightning's ``load_from_checkpoint``, which reads the file again and imports what it names)."""
    settings = dict(saved.get("datamodule_hyper_parameters") or {})
    if "_class_path" not in settings:
        raise ValueError(f"{path}: the checkpoint does not record its data module's settings (it was not "
                         "written by `main.py fit`), so the data to export cannot be rebuilt")
    settings.pop("_instantiator", None)
    cls = resolve(settings.pop("_class_path"), f"{path}: datamodule_hyper_parameters")
    if not (isinstance(cls, type) and issubclass(cls, RecDataModule)):
        raise ValueError(f"{path}: datamodule_hyper_parameters names {cls.__name__}, not a data module")
    try:
        return cls(**settings)
    except TypeError as err:
        raise ValueError(f"{path}: datamodule_hyper_parameters do not fit {cls.__name__}: {err}") from err


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    artefacts = commands.add_parser("artefacts", help="the portable export folder of a run")
    artefacts.add_argument("checkpoint", help="a checkpoint written by main.py fit")
    artefacts.add_argument("--lm_checkpoint", help="co-training: the LM's own best checkpoint (best-lm-*.ckpt)")
    artefacts.add_argument("--out", help=f"the folder to write (default: <run>/{DEFAULT_FOLDER})")
    domain = commands.add_parser("domain", help="the domain half of a co-training checkpoint, as a checkpoint")
    domain.add_argument("bridge_checkpoint")
    domain.add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "artefacts":
        print(export_artefacts(args.checkpoint, args.lm_checkpoint, args.out))
    else:
        print(export_domain(args.bridge_checkpoint, args.out))


if __name__ == "__main__":
    main()
