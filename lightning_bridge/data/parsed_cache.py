"""The parsed-data cache: a dataset's ``RawData`` stored as ``.npz`` (numbers) plus ``.json`` (ids, text and
features).

Neither format can run code when read (``allow_pickle=False``), and the key is a hash of the source files'
contents, so an edited source is never served stale. The ``.json`` also records a sha256 of everything the two
files hold: a cache edited or damaged after it was written (two ids swapped, indices out of range) does not
match it and is parsed again and rewritten, with a warning, instead of serving wrong data. Warnings the reader
logged (e.g. items without metadata) are stored and logged again on every hit, so a cached run says what the
first one said. Data larger than ``max_bytes`` is not cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lightning_bridge.data.sources import Features, RawData

log = logging.getLogger(__name__)

# v4 added the item and user features; the key hashes the format, so a v3 cache is parsed again, never served
FORMAT = "lightning_bridge parsed-data cache v4"
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def content_key(reader: str, files: Sequence[Path]) -> str:
    """sha256 of the cache format, the reader's identity and every source file's name and contents."""
    h = hashlib.sha256(f"{FORMAT}\n{reader}\n".encode())
    for path in files:
        h.update(f"{path.name}\n".encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class _WarningRecorder(logging.Handler):
    """Keeps the messages of the warnings logged while a dataset is parsed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def cached_read(read: Callable[[], RawData], files: Sequence[Path], folder: Path, reader: str,
                max_bytes: int | None = None) -> RawData:
    """``read()``, or its stored result when the same reader has parsed files of identical contents
    (``max_bytes``: the cap, ``DEFAULT_MAX_BYTES`` when None)."""
    key = content_key(reader, files)[:32]
    arrays_path, text_path = folder / f"{key}.npz", folder / f"{key}.json"
    if arrays_path.is_file() and text_path.is_file():
        try:
            return _load(arrays_path, text_path)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as err:  # parse again and rewrite
            log.warning("ignoring unreadable parsed-data cache %s (%s); parsing the source again", arrays_path, err)
    recorder = _WarningRecorder()
    source_log = logging.getLogger("lightning_bridge.data")
    source_log.addHandler(recorder)
    try:
        raw = read()
    finally:
        source_log.removeHandler(recorder)
    _store(raw, recorder.messages, arrays_path, text_path, DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
    return raw


ARRAYS = ("users", "items", "ratings", "timestamps")


def _digest(numbers: dict[str, np.ndarray], text: dict) -> str:
    """sha256 of the cached arrays and of the ``.json``'s entries (but the digest itself)."""
    h = hashlib.sha256()
    for name in ARRAYS:
        array = np.ascontiguousarray(numbers[name])
        h.update(f"{name} {array.dtype} {array.shape}\n".encode())
        h.update(array.tobytes())
    h.update(json.dumps({k: v for k, v in text.items() if k != "sha256"}, sort_keys=True,
                        ensure_ascii=False).encode())
    return h.hexdigest()


def _load(arrays_path: Path, text_path: Path) -> RawData:
    with np.load(arrays_path, allow_pickle=False) as arrays:
        numbers = {k: arrays[k] for k in ARRAYS}
    text = json.loads(text_path.read_text(encoding="utf-8"))
    if text.get("format") != FORMAT:
        raise ValueError(f"format {text.get('format')!r}, expected {FORMAT!r}")
    if text.get("sha256") != _digest(numbers, text):
        raise ValueError("its contents do not match the sha256 recorded when it was written: changed or damaged")
    for message in text["warnings"]:
        log.warning("%s (from the parsed-data cache)", message)
    user_ids, item_ids = np.array(text["user_ids"], dtype=object), np.array(text["item_ids"], dtype=object)
    return RawData(users=user_ids[numbers["users"]].astype(str), items=item_ids[numbers["items"]].astype(str),
                   ratings=numbers["ratings"], timestamps=numbers["timestamps"], item_text=text["item_text"],
                   item_titles=text["item_titles"], user_text=text["user_text"], source=text["source"],
                   item_features=Features(**text["item_features"]), user_features=Features(**text["user_features"]))


def _store(raw: RawData, warnings: list[str], arrays_path: Path, text_path: Path, max_bytes: int) -> None:
    user_ids, users = np.unique(raw.users, return_inverse=True)
    item_ids, items = np.unique(raw.items, return_inverse=True)
    numbers = {"users": users.astype(np.int64), "items": items.astype(np.int64), "ratings": raw.ratings,
               "timestamps": raw.timestamps}
    entries = {"format": FORMAT, "source": raw.source, "warnings": warnings, "user_ids": user_ids.tolist(),
               "item_ids": item_ids.tolist(), "item_text": raw.item_text, "item_titles": raw.item_titles,
               "user_text": raw.user_text, "item_features": vars(raw.item_features),
               "user_features": vars(raw.user_features)}
    text = json.dumps({**entries, "sha256": _digest(numbers, entries)}, ensure_ascii=False)
    size = len(text.encode("utf-8")) + 8 * (len(users) + len(items)) + raw.ratings.nbytes + raw.timestamps.nbytes
    if size > max_bytes:
        log.info("parsed data not cached: about %d MB, above the %d MB cap", size >> 20, max_bytes >> 20)
        return
    arrays_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{os.getpid()}"
    tmp_arrays, tmp_text = Path(f"{arrays_path}{suffix}"), Path(f"{text_path}{suffix}")
    with tmp_arrays.open("wb") as f:
        np.savez(f, **numbers)
    tmp_text.write_text(text, encoding="utf-8")
    tmp_text.replace(text_path)
    tmp_arrays.replace(arrays_path)  # last: a hit needs both files
