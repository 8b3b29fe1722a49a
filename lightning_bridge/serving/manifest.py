"""The export folder's ``manifest.json``: every file's sha256 and size, and each safetensors file's tensor
shapes, written last by ``artefacts.py`` and checked by ``load_recommender`` before anything is used. A file
that changed after export (a flipped byte, a truncated copy, an edited ``recommender.json``) is an error
naming it, instead of other rankings or a deep torch error."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors import safe_open

from lightning_bridge.run.downloads import sha256_file
from lightning_bridge.run.lock import LOCK_NAME

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "lightning_bridge.serving.manifest/1"


class ExportIntegrityError(ValueError):
    """An export file is missing, changed since export, or contradicts the others; the message names it."""


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Name -> shape of every tensor in a safetensors file (read from its header only)."""
    with safe_open(str(path), framework="pt") as f:
        return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (not a dict)


def write_manifest(folder: Path) -> Path:
    """Records every file below ``folder`` (but the manifest itself)."""
    files: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, LOCK_NAME)):
        entry: dict[str, Any] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        if path.suffix == ".safetensors":
            entry["tensors"] = tensor_shapes(path)
        files[path.relative_to(folder).as_posix()] = entry
    manifest = folder / MANIFEST
    manifest.write_text(json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n")
    return manifest


def check_manifest(folder: Path) -> dict[str, Any] | None:
    """Verifies every file the manifest lists (present, same size and sha256); returns the manifest's
    entries (None, with a warning, for an export written before manifests existed)."""
    path = folder / MANIFEST
    if not path.is_file():
        log.warning("%s: no %s (written by an older version): its files' integrity cannot be checked", folder,
                    MANIFEST)
        return None
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise ExportIntegrityError(f"{path}: not a manifest written by the export ({err})") from err
    if manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise ExportIntegrityError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for name, entry in files.items():
        file = folder / name
        if not file.is_file():
            raise ExportIntegrityError(f"{file}: listed in {MANIFEST} but missing")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise ExportIntegrityError(f"{file}: {size} bytes, but {MANIFEST} records {entry['bytes']} (the file "
                                       "changed after export: truncated or replaced)")
        digest = sha256_file(file)
        if digest != entry["sha256"]:
            raise ExportIntegrityError(f"{file}: sha256 {digest[:16]}... does not match {MANIFEST}'s "
                                       f"{entry['sha256'][:16]}... (the file changed after export)")
    return files
