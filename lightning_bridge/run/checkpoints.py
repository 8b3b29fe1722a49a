"""Reading checkpoints safely, and what a checkpoint records about its run beyond Lightning's own state.

Checkpoints are only ever loaded with ``weights_only=True`` (no code can run while reading one), from bytes read
once and checked against the zip archive's CRCs (a flipped byte is an error, not other weights), and every
class path they name must be a registered class (:mod:`lightning_bridge.run.class_registry`): a checkpoint never
chooses which module is imported. A file that is missing, damaged or not a checkpoint is an error naming its
path. Every checkpoint the CLI writes
also records the model section of the run's config and the fingerprint of its data (see
:mod:`lightning_bridge.run.fingerprint`), so that a resume with contradicting settings, or a test on other data,
is refused instead of silently going on.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Callback

from lightning_bridge.run.class_registry import check_class_paths
from lightning_bridge.run.fingerprint import KEY as FINGERPRINT_KEY

MODEL_CONFIG_KEY = "model_config"
# Knobs that only change what evaluation reports or writes: the config given at test / predict time wins.
EVALUATION_KNOBS = ("predict_top_k", "predict_with", "ks")
# Filled in from the data, never written in a config; the data fingerprint checks them.
DATA_LINKED = ("num_users", "num_items")
# what Lightning stores as tensors and numbers only: skipped when looking for class paths
TENSOR_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops")
# entries read as dicts, and what a data fingerprint must hold
DICT_ENTRIES = ("hyper_parameters", "datamodule_hyper_parameters", "model_config", FINGERPRINT_KEY, "loops")
FINGERPRINT_FIELDS = ("name", "num_users", "num_items", "num_interactions", "user_ids_sha256", "item_ids_sha256",
                      "interactions_sha256")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or contradicts the run it is used in; the message names the file."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` onto the CPU from one read of the file,
    after its zip CRCs are verified; a class path in it that is not registered is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" + (" (it is a folder)" if path.is_dir() else ""))
    data = path.read_bytes()
    _check_archive(data, path)
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file: RuntimeError, EOFError, KeyError, ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it holds Python objects other than tensors and plain values, which are never unpickled"
        else:
            reason = "truncated, corrupt or not a torch checkpoint"
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: {reason} "
                              f"({type(err).__name__}: {first_line[:200]})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (expected a dict with a 'state_dict', "
                              f"found {type(checkpoint).__name__})")
    _check_structure(checkpoint, path)
    check_class_paths({k: v for k, v in checkpoint.items() if k not in TENSOR_KEYS}, str(path))
    return checkpoint


def _check_structure(checkpoint: dict[str, Any], path: Path) -> None:
    """The entries this project reads have the types it reads them as, each mismatch named."""
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{path}: its 'state_dict' must map weight names to tensors")
    for key in DICT_ENTRIES:
        if key in checkpoint and checkpoint[key] is not None and not isinstance(checkpoint[key], dict):
            raise CheckpointError(f"{path}: its {key!r} must be a dict, found {type(checkpoint[key]).__name__}")
    fingerprint = checkpoint.get(FINGERPRINT_KEY)
    if fingerprint:
        missing = [k for k in FINGERPRINT_FIELDS if k not in fingerprint]
        if missing:
            raise CheckpointError(f"{path}: its {FINGERPRINT_KEY!r} lacks {', '.join(missing)}: edited or damaged, so "
                                  "the data it was trained on cannot be checked")


def _check_archive(data: bytes, path: Path) -> None:
    """A zip checkpoint (torch's format since 1.6) whose members fail their CRC is an error naming the member:
    ``torch.load`` itself does not check them, so flipped weight bytes would load as other weights."""
    if not data.startswith(b"PK"):
        return  # torch's legacy format, or not a checkpoint at all: torch.load says which
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: truncated, corrupt or not a torch "
                              f"checkpoint (the zip archive is damaged: {err})") from err
    if damaged is not None:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: corrupt (its member {damaged!r} fails "
                              "its CRC check: the file changed after it was written)")


def check_finite_weights(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuses a checkpoint whose weights hold NaN or infinity (from a run that diverged before the
    non-finite-loss stop existed, or edited): testing it would print zeros, predicting would rank garbage."""
    bad = [f"{name} ({int((~torch.isfinite(value)).sum())} of {value.numel()} values)"
           for name, value in checkpoint["state_dict"].items()
           if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise CheckpointError(f"{path}: holds non-finite weights: {', '.join(bad[:5])}"
                              f"{' ...' if len(bad) > 5 else ''}. Use a checkpoint from before the run diverged.")


def plain(value: Any) -> Any:
    """``value`` as nested dicts, lists, strings and numbers (what ``weights_only`` loading accepts)."""
    if hasattr(value, "as_dict"):  # a jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"init_args.optimizer.class_path": ..., ...}``."""
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    flat = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def setting_changes(saved: dict[str, Any], given: dict[str, Any], ignore: tuple[str, ...] = ()
                    ) -> list[tuple[str, Any, Any]]:
    """``("init_args.embedding_dim", 16, 32)`` (key, value in the checkpoint, value now) for each setting
    that differs.

    A changed ``class_path`` is one difference: the arguments below it are not compared. Keys named in
    ``ignore`` (their last component, or a prefix such as ``init_args.optimizer``) are skipped.
    """
    old, new = flatten(plain(saved)), flatten(plain(given))
    changed_classes = [k.removesuffix("class_path") for k in old
                       if k.endswith("class_path") and k in new and old[k] != new[k]]
    missing = object()
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if key.rsplit(".", 1)[-1] in ignore or any(key.startswith(p + ".") for p in ignore):
            continue
        if any(key.startswith(c) and not key.endswith("class_path") for c in changed_classes):
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a is missing or b is missing or a == b:  # a setting one side's version did not have
            continue
        changes.append((key, a, b))
    return changes


def described(change: tuple[str, Any, Any]) -> str:
    """``"init_args.embedding_dim: 16 in the checkpoint, 32 now"``."""
    key, old, new = change
    return f"{key}: {old!r} in the checkpoint, {new!r} now"


def config_differences(saved: dict[str, Any], given: dict[str, Any], ignore: tuple[str, ...] = ()
                       ) -> list[str]:
    """Each of :func:`setting_changes`, described."""
    return [described(c) for c in setting_changes(saved, given, ignore)]


def saved_model_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The model config a checkpoint was trained with: recorded by :class:`RunRecord`, or (older
    checkpoints) rebuilt from the hyperparameters Lightning saved."""
    if MODEL_CONFIG_KEY in checkpoint:
        return checkpoint[MODEL_CONFIG_KEY]
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if "_class_path" not in hparams:
        return None
    hparams.pop("_instantiator", None)
    return {"class_path": hparams.pop("_class_path"), "init_args": hparams}


class RunRecord(Callback):
    """Writes the run's model config and data fingerprint into every checkpoint it saves."""

    def __init__(self, model_config: dict[str, Any], fingerprint: dict[str, Any]) -> None:
        self.model_config, self.fingerprint = plain(model_config), fingerprint

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[MODEL_CONFIG_KEY] = self.model_config
        checkpoint[FINGERPRINT_KEY] = self.fingerprint


class ReadOnce(CheckpointIO):
    """Hands Lightning the checkpoint that was already read and checked at ``path`` instead of reading the
    file a second time (it could have been replaced in between); every other load, and every save, goes to
    ``inner``."""

    def __init__(self, inner: CheckpointIO, path: str | Path, checkpoint: dict[str, Any]) -> None:
        self.inner, self._path, self._checkpoint = inner, os.path.realpath(path), checkpoint

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        if self._checkpoint is not None and os.path.realpath(path) == self._path:
            checkpoint, self._checkpoint = self._checkpoint, None
            return checkpoint
        return self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()
