"""What an export folder must satisfy before ``load_recommender`` uses it: each file readable, and the files
consistent with each other (``recommender.json``'s counts and width with ``id_maps.json`` and the tensors,
unique and well-formed ids, histories and graph edges inside the tables). Each failure is an
:class:`ExportIntegrityError` naming the file and what was expected, never torch's ``size mismatch`` or an
``IndexError`` later. ``manifest.py`` checks first that no file changed since export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from lightning_bridge.data.ids import id_problem
from lightning_bridge.modules.domain.recommender import LOSSES
from lightning_bridge.serving.manifest import ExportIntegrityError


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise ExportIntegrityError(f"{path}: missing from the export folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ExportIntegrityError(f"{path}: not valid JSON ({err})") from err


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ExportIntegrityError(f"{path}: missing from the export folder")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ExportIntegrityError(f"{path}: not a readable safetensors file (truncated or damaged: {err})") from err


def check_id_list(ids: Any, kind: str, path: Path) -> list[str]:
    """``ids`` as a list of unique, well-formed id strings."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ExportIntegrityError(f"{path}: {kind!r} must be a list of id strings")
    first: dict[str, int] = {}
    for position, id_ in enumerate(ids):
        problem = id_problem(id_)
        if problem is not None:
            raise ExportIntegrityError(f"{path}: {kind}[{position}]: id {id_!r} {problem}")
        if id_ in first:
            raise ExportIntegrityError(f"{path}: {kind}[{position}]: id {id_!r} repeats {kind}[{first[id_]}]; "
                                       "each row of a table has one id")
        first[id_] = position
    return ids


def _positive_int(spec: dict[str, Any], key: str, path: Path, where: str = "") -> int:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExportIntegrityError(f"{path}: {where}{key} must be a positive integer, found {value!r}")
    return value


def check_spec(spec: dict[str, Any], path: Path, num_users: int, num_items: int, ids_file: Path) -> None:
    """``recommender.json`` against ``id_maps.json``'s counts, and its domain settings against what exists."""
    for key, count, kind in (("num_users", num_users, "users"), ("num_items", num_items, "items")):
        if _positive_int(spec, key, path) != count:
            raise ExportIntegrityError(f"{path}: {key} is {spec[key]}, but {ids_file} lists {count} {kind}")
    _positive_int(spec, "embedding_dim", path)
    _positive_int(spec, "history_len", path)
    if not any(side in spec for side in ("domain", "lm")):
        raise ExportIntegrityError(f"{path}: holds neither a 'domain' nor an 'lm' model")
    domain = spec.get("domain")
    if domain is not None:
        encoder = domain.get("encoder")
        if encoder not in LOSSES:  # named, never looked up as code
            raise ExportIntegrityError(f"{path}: domain.encoder: {encoder!r}, expected one of {sorted(LOSSES)}")
        if domain.get("loss") not in LOSSES[encoder]:
            raise ExportIntegrityError(f"{path}: domain.loss: {domain.get('loss')!r}, expected one of "
                                       f"{list(LOSSES[encoder])} for {encoder}")
        for key in ("num_layers", "max_len", "num_blocks", "num_heads"):
            if key in domain:  # an export holds its own encoder's settings only
                _positive_int(domain, key, path, "domain.")


def check_tables(tables: dict[str, torch.Tensor], spec: dict[str, Any], path: Path) -> None:
    """Each exported model's user and item table: ``(num_users | num_items, embedding_dim)``, finite."""
    for side in ("domain", "lm"):
        if side not in spec:
            continue
        for kind in ("user", "item"):
            name, rows = f"{side}.{kind}", spec[f"num_{kind}s"]
            if name not in tables:
                raise ExportIntegrityError(f"{path}: has no tensor {name!r}")
            shape = list(tables[name].shape)
            if shape != [rows, spec["embedding_dim"]]:
                raise ExportIntegrityError(f"{path}: {name} has shape {shape}, but recommender.json says "
                                           f"num_{kind}s={rows}, embedding_dim={spec['embedding_dim']}")
            if not bool(torch.isfinite(tables[name]).all()):
                raise ExportIntegrityError(f"{path}: {name} holds NaN or infinite values")


def check_histories(csr: dict[str, torch.Tensor], num_users: int, num_items: int, path: Path) -> None:
    """The known items' CSR: one row per user, offsets rising from 0 to the item count, items in range."""
    if set(csr) != {"indptr", "items"}:
        raise ExportIntegrityError(f"{path}: expected the tensors 'indptr' and 'items', found {sorted(csr)}")
    indptr, items = csr["indptr"], csr["items"]
    if list(indptr.shape) != [num_users + 1] or items.dim() != 1:
        raise ExportIntegrityError(f"{path}: indptr has shape {list(indptr.shape)}, expected [{num_users + 1}] "
                                   "(one row per user of id_maps.json, plus one)")
    if int(indptr[0]) != 0 or int(indptr[-1]) != len(items) or bool((indptr.diff() < 0).any()):
        raise ExportIntegrityError(f"{path}: indptr must rise from 0 to the number of items ({len(items)})")
    _check_range(items, num_items, "items", "item", path)


def check_graph(weights: dict[str, torch.Tensor], num_users: int, num_items: int, path: Path) -> None:
    """The domain model's training graph: as many users as items, each inside its table."""
    users, items = weights.get("graph.users"), weights.get("graph.items")
    if users is None or items is None or users.shape != items.shape:
        raise ExportIntegrityError(f"{path}: graph.users and graph.items must be edges of equal length")
    _check_range(users, num_users, "graph.users", "user", path)
    _check_range(items, num_items, "graph.items", "item", path)


def _check_range(values: torch.Tensor, count: int, name: str, kind: str, path: Path) -> None:
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= count):
        raise ExportIntegrityError(f"{path}: {name} holds {kind} rows outside 0..{count - 1} "
                                   f"(min {int(values.min())}, max {int(values.max())})")
