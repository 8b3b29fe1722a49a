"""Which dataset a checkpoint was trained on, so that it is never silently used with another one.

A model's embedding rows mean raw ids through the dense id mapping of its data: the same number of users on
other data (another seed, a renamed user) gives plausible but meaningless metrics. And the same data cut
another way (a ratio split, another seed, ``max_train_per_user``, ``new_item_fraction``) puts training
interactions into the test part. Every checkpoint the CLI writes carries a fingerprint of its data: the raw
ids, the interactions, the settings of the evaluation protocol and hashes of the training, validation and test
parts as the model saw them; ``test``, ``validate``, ``predict``, resume and warm start compare it with the
data they are given and name every setting that differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

KEY = "dataset_fingerprint"
# the data module's settings that decide what is train, validation and test (beside the data itself)
PROTOCOL = ("split", "ratios", "ratio_order", "rating_threshold", "max_train_per_user", "new_item_fraction", "seed")
PARTS = ("train", "valid", "test")
# the data module's settings that shape training batches, not the data or its split (a resume applies them)
DATA_TRAINING = ("batch_size", "lm_batch_size", "sequence_batch_size", "history_len", "lm_examples_per_user",
                 "text_batch_size", "text_sampling_power", "negatives", "seed")
# data module settings that change neither the data nor its split (the seed may: PROTOCOL names it where)
NOT_DATA = ("_instantiator", "num_workers", "eval_batch_size", "cache_dir", "export_split_to",
            *(k for k in DATA_TRAINING if k != "seed"))
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
    fingerprint["protocol"] = protocol_settings(dict(data.hparams))
    split = data.split
    for part in PARTS:
        rows = getattr(split, part)
        fingerprint[f"{part}_rows"] = len(rows)
        fingerprint[f"{part}_sha256"] = _hash_arrays(inter.users[rows], inter.items[rows], inter.timestamps[rows])
    return fingerprint


def protocol_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """The settings of :data:`PROTOCOL` that change the split as configured (the ratios only for a ratio split,
    the seed only where something is drawn at random), as plain values."""
    ratio = hparams.get("split") == "ratio"
    drawn = (ratio and hparams.get("ratio_order") == "random") or hparams.get("new_item_fraction") is not None
    used = {"ratios": ratio, "ratio_order": ratio, "seed": drawn}
    return {k: list(v) if isinstance(v, tuple | list) else v for k in PROTOCOL if used.get(k, True)
            for v in [hparams.get(k)]}


def _protocol_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"data.split: 'leave_one_out' in the checkpoint, 'ratio' now"`` for each protocol setting that differs."""
    def shown(settings: dict[str, Any], key: str) -> str:
        return repr(settings[key]) if key in settings else "not used"

    return [f"data.{k}: {shown(saved, k)} in the checkpoint, {shown(current, k)} now"
            for k in PROTOCOL if (k in saved or k in current) and shown(saved, k) != shown(current, k)]


def _split_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the saved and the current train / validation / test parts, by protocol setting
    first (when only the parts differ: their sizes)."""
    if "protocol" not in saved:  # written before the split was fingerprinted
        return []
    changed = [p for p in PARTS if saved[f"{p}_sha256"] != current[f"{p}_sha256"]]
    settings = _protocol_differences(saved["protocol"], current["protocol"])
    if not changed and not settings:
        return []
    parts = ", ".join(f"{p} {saved[f'{p}_rows']} -> {current[f'{p}_rows']} interactions" for p in changed)
    what = f"the split differs ({parts or 'the same parts'})"
    return [f"{what}: " + "; ".join(settings) if settings else f"{what}, with the same settings"]


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
                      interactions: bool = True,
                      settings: tuple[dict[str, Any] | None, dict[str, Any]] | None = None) -> None:
    """Raises ``DataMismatchError`` naming ``where`` (the checkpoint) and every difference: the raw user
    and item ids, (``interactions=True``) the interactions themselves, and the split: on the same
    interactions its train, validation and test parts, else (updated histories at predict time) the protocol
    settings, each named. ``settings``: the data module's settings in the checkpoint and now, whose
    differences the error also names (``data.data_seed: 0 in the checkpoint, 7 now``). A checkpoint without a
    fingerprint (written by an older version) passes; its sizes are still checked by :func:`check_sizes`."""
    if not saved:
        return
    problems = [_id_differences(kind, saved, current) for kind in ("user", "item")
                if saved[f"{kind}_ids_sha256"] != current[f"{kind}_ids_sha256"]]
    same_interactions = saved["interactions_sha256"] == current["interactions_sha256"]
    if interactions and not problems and not same_interactions:
        problems.append(f"the interactions differ ({saved['num_interactions']} in the checkpoint, "
                        f"{current['num_interactions']} in the data; same ids): another seed, filter or file")
    named = bool(problems)
    if not problems and same_interactions:
        problems += _split_differences(saved, current)
    elif not problems and "protocol" in saved:  # updated histories (predict): the protocol must still be the same
        problems += _protocol_differences(saved["protocol"], current["protocol"])
    if problems and settings is not None and settings[0]:
        skipped = NOT_DATA + (() if named or not same_interactions else PROTOCOL)
        changed = [f"data.{k}: {settings[0][k]!r} in the checkpoint, {settings[1][k]!r} now"
                   for k in sorted(settings[0].keys() & settings[1].keys())
                   if k not in skipped and settings[0][k] != settings[1][k]]
        if changed:
            problems.append("the data settings that differ: " + "; ".join(changed))
    if problems:
        raise DataMismatchError(
            f"{where} was trained on other data than {current['name']!r} as configured: " + "; ".join(problems)
            + ". Use the data configuration it was trained with (its run folder's config.yaml); "
              "--allow_config_changes lets model settings through, never the data or its split.")


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
