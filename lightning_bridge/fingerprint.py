"""Which dataset a checkpoint was trained on, so that it is never silently used with another one.

A model's embedding rows mean raw ids through the dense id mapping of its data: the same number of users on
other data (another seed, a renamed user) gives plausible but meaningless metrics. Every checkpoint the CLI
writes carries a fingerprint of its data; ``test``, ``predict``, resume and warm start compare it with the
data they are given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

KEY = "dataset_fingerprint"
MAX_STORED_ID_CHARS = 4_000_000  # the raw ids themselves are kept (to name differences) up to this size
SHOWN = 5


class DataMismatchError(ValueError):
    """A checkpoint was trained on other data than it is used with; the message says what differs."""


def _hash_ids(ids: Sequence[str]) -> str:
    h = hashlib.sha256(str(len(ids)).encode())
    for id_ in ids:
        h.update(b"\x00" + id_.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _hash_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def dataset_fingerprint(data: Any) -> dict[str, Any]:
    """Counts and hashes of a RecDataModule's raw user and item ids and of its interactions (plain types,
    so that checkpoints load with ``weights_only=True``)."""
    inter = data.interactions
    user_ids, item_ids = [str(u) for u in inter.user_ids], [str(i) for i in inter.item_ids]
    fingerprint = {
        "name": data.name(), "num_users": len(user_ids), "num_items": len(item_ids),
        "num_interactions": len(inter.users), "user_ids_sha256": _hash_ids(user_ids),
        "item_ids_sha256": _hash_ids(item_ids),
        "interactions_sha256": _hash_arrays(inter.users, inter.items, inter.timestamps),
    }
    if sum(map(len, user_ids)) + sum(map(len, item_ids)) <= MAX_STORED_ID_CHARS:
        fingerprint["user_ids"], fingerprint["item_ids"] = user_ids, item_ids
    return fingerprint


def _id_differences(kind: str, saved: dict[str, Any], current: dict[str, Any]) -> str:
    """'user ids differ: in the checkpoint only ['u3'], in the data only ['x3']' (or counts and hashes)."""
    before, now = saved.get(f"{kind}_ids"), current.get(f"{kind}_ids")
    counts = f"{saved[f'num_{kind}s']} {kind}s in the checkpoint, {current[f'num_{kind}s']} in the data"
    if before is None or now is None:
        return f"raw {kind} ids differ ({counts}; sha256 {saved[f'{kind}_ids_sha256'][:12]} against " \
               f"{current[f'{kind}_ids_sha256'][:12]})"
    old_only = sorted(set(before) - set(now))
    new_only = sorted(set(now) - set(before))
    parts = [counts]
    if old_only:
        parts.append(f"only in the checkpoint: {_show(old_only)}")
    if new_only:
        parts.append(f"only in the data: {_show(new_only)}")
    if not old_only and not new_only:
        parts.append("the same ids in another order")
    return f"raw {kind} ids differ ({'; '.join(parts)})"


def _show(ids: list[str]) -> str:
    shown = ", ".join(repr(i if len(i) <= 40 else i[:37] + "...") for i in ids[:SHOWN])
    return f"[{shown}{', ...' if len(ids) > SHOWN else ''}] ({len(ids)} in all)"


def check_fingerprint(saved: dict[str, Any] | None, current: dict[str, Any], where: str,
                      interactions: bool = True) -> None:
    """Raises ``DataMismatchError`` naming ``where`` (the checkpoint) and every difference: the raw user
    and item ids, and (``interactions=True``) the interactions themselves. A checkpoint without a
    fingerprint (written by an older version) passes; its sizes are still checked by :func:`check_sizes`."""
    if not saved:
        return
    problems = [_id_differences(kind, saved, current) for kind in ("user", "item")
                if saved[f"{kind}_ids_sha256"] != current[f"{kind}_ids_sha256"]]
    if interactions and not problems and saved["interactions_sha256"] != current["interactions_sha256"]:
        problems.append(f"the interactions differ ({saved['num_interactions']} in the checkpoint, "
                        f"{current['num_interactions']} in the data; same ids): another seed, filter or file")
    if problems:
        raise DataMismatchError(
            f"{where} was trained on other data than {current['name']!r} as configured: " + "; ".join(problems)
            + ". Use the data configuration it was trained with (its run folder's config.yaml).")


def check_sizes(shapes: dict[str, tuple[int, ...]], num_users: int, num_items: int, where: str) -> None:
    """The same clear error as :func:`check_fingerprint` when a checkpoint's embedding tables (``shapes``:
    state-dict key -> shape) have another number of rows than the data has users or items, instead of
    torch's ``size mismatch for info.user.weight``."""
    for kind, count in (("user", num_users), ("item", num_items)):
        rows = {shape[0] for k, shape in shapes.items() if k.endswith(f"info.{kind}.weight")}
        if rows and rows != {count}:
            raise DataMismatchError(
                f"{where} was trained on other data: its {kind} table has {sorted(rows)[0]} rows but the data has "
                f"{count} {kind}s. Use the data configuration it was trained with (its run folder's config.yaml).")
