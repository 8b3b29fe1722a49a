"""RecBole atomic files (``.inter``, ``.item``, ``.user``) read into ``RawData``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_bridge.data.sources import (
    _GENRE_FIELDS,
    _TITLE_FIELDS,
    _UNTEXTED_USER_FIELDS,
    _USER_FIELDS,
    _YEAR_FIELDS,
    Features,
    RawData,
    _item_text,
    _log_coverage,
    _user_text,
)
from lightning_bridge.data.tables import (
    DataFormatError,
    _interactions,
    _no_interactions,
    _read_lines,
    _split,
    _Table,
    _unique_ids,
)

log = logging.getLogger(__name__)

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass
class _Atomic:
    """An atomic file: its header's field names and types, and the rows below it."""

    fields: list[str]
    types: list[str]
    table: _Table

    def records(self, id_field: str, what: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """Per row: its unique id and the (field, type, value) of its other non-empty fields."""
        id_index = self.fields.index(id_field)
        ids = _unique_ids(self.table, id_index, what)
        columns = enumerate(zip(self.fields, self.types, strict=True))
        others = [(i, f, t) for i, (f, t) in columns if i != id_index]
        rows = zip(ids, self.table.rows(), strict=True)
        return [(id_, [(f, t, row[i]) for i, f, t in others if row[i]]) for id_, row in rows]

    def features(self, id_field: str) -> Features:
        """Every column but the id, with its type, as read (the RecBole export writes them back)."""
        id_index = self.fields.index(id_field)
        others = [i for i in range(len(self.fields)) if i != id_index]
        return Features({self.fields[i]: self.types[i] for i in others},
                        {row[id_index]: [row[i] for i in others] for row in self.table.rows()})


def read_atomic(folder: str | Path, name: str | None = None, item_text_fields: Sequence[str] | None = None
                ) -> RawData:
    """Reads RecBole atomic files ``<name>.inter`` and optional ``<name>.item`` / ``<name>.user``;
    ``item_text_fields``: the ``.item`` fields the item text keeps after the title and year (None: all)."""
    folder = Path(folder)
    name = name or folder.absolute().name
    inter = _atomic_path(folder, name)
    atomic = _read_atomic(inter, "user_id", "item_id")
    if not len(atomic.table):
        raise _no_interactions(inter, "user_id<TAB>item_id[<TAB>rating][<TAB>timestamp]")
    known = ("user_id", "item_id", "rating", "timestamp")
    ignored = [f for f in atomic.fields if f not in known]
    if ignored:
        log.info("%s: ignoring fields %s", inter, ", ".join(ignored))
    fields = atomic.fields
    column = {f: fields.index(f) for f in known if f in fields}
    users, items, ratings, timestamps = _interactions(
        atomic.table, column["user_id"], column["item_id"], column.get("rating"), column.get("timestamp"))
    item_path, user_path = folder / f"{name}.item", folder / f"{name}.user"
    item_text, item_titles, item_features = (_atomic_items(item_path, item_text_fields) if item_path.is_file()
                                             else ({}, {}, Features()))
    user_text, user_features = _atomic_users(user_path) if user_path.is_file() else ({}, Features())
    _log_coverage(folder, items, item_text)
    return RawData(users, items, ratings, timestamps, item_text, item_titles, user_text, str(folder),
                   item_features, user_features)


def _atomic_path(folder: Path, name: str) -> Path:
    path = folder / f"{name}.inter"
    if path.is_file():
        return path
    found = sorted(p.name for p in folder.glob("*.inter")) if folder.is_dir() else []
    hint = f"; found {', '.join(found)}: pass its stem as the dataset name" if found else ""
    raise DataFormatError.at(
        path, f"file not found; an atomic folder must contain {name}.inter "
              f"(and optionally {name}.item and {name}.user){hint}")


def _read_atomic(path: Path, *required: str) -> _Atomic:
    lines, numbers = _read_lines(path, "utf-8")
    if not lines:
        raise DataFormatError.at(path, f"empty file; expected a header line of 'field:type' columns "
                                       f"including {', '.join(required)}", 1)
    fields, types = _atomic_header(path, lines[0], numbers[0], required)
    table = _split(path, lines[1:], numbers[1:], "\t", len(fields), ", ".join(fields))
    return _Atomic(fields, types, table)


def _atomic_header(path: Path, header: str, line: int, required: Sequence[str]
                   ) -> tuple[list[str], list[str]]:
    fields, types = [], []
    for column in header.split("\t"):
        field, _, type_ = column.partition(":")
        if not field or type_ not in ATOMIC_TYPES:
            raise DataFormatError.at(
                path, f"expected header columns 'field:type' with type one of {', '.join(ATOMIC_TYPES)}, "
                      f"found {column!r}", line)
        if field in fields:
            raise DataFormatError.at(path, f"field {field!r} appears twice in the header", line)
        fields.append(field)
        types.append(type_)
    missing = [f for f in required if f not in fields]
    if missing:
        raise DataFormatError.at(
            path, f"header lacks required field(s) {', '.join(missing)} (RecBole's default names); "
                  f"found {', '.join(fields)}", line)
    return fields, types


def _atomic_items(path: Path, fields: Sequence[str] | None = None
                  ) -> tuple[dict[str, str], dict[str, str], Features]:
    atomic = _read_atomic(path, "item_id")
    missing = [f for f in fields or () if f not in atomic.fields]
    if missing:
        raise DataFormatError.at(path, f"item_text_fields names {', '.join(map(repr, missing))}, which the header "
                                       f"lacks; found {', '.join(atomic.fields)}")
    kept = None if fields is None else {*fields, *_TITLE_FIELDS, *_YEAR_FIELDS}
    text, titles = {}, {}
    for id_, values in atomic.records("item_id", "item id"):
        values = values if kept is None else [v for v in values if v[0] in kept]
        if values:  # an item whose fields are all empty has no text rather than ""
            text[id_], titles[id_] = _atomic_item_text(values)
    return text, titles, atomic.features("item_id")


def _atomic_item_text(values: list[tuple[str, str, str]]) -> tuple[str, str]:
    """(text, display title): title / year / genre fields in the ml-100k shape, others as 'field: value'."""
    by_field = {f: v for f, _, v in values}
    types = {f: t for f, t, _ in values}
    title, genres, used = "", [], set()
    title_field = next((f for f in _TITLE_FIELDS if f in by_field), None)
    if title_field:
        title = by_field[title_field]
        used.add(title_field)
        year_field = next((f for f in _YEAR_FIELDS if f in by_field), None)
        if year_field:
            title = f"{title} ({by_field[year_field]})"
            used.add(year_field)
    genre_field = next((f for f in _GENRE_FIELDS if f in by_field), None)
    if genre_field:
        value = by_field[genre_field]
        genres = value.split(" ") if types[genre_field] == "token_seq" else [value]
        used.add(genre_field)
    extra = [f"{f}: {v}" for f, v in by_field.items() if f not in used]
    return _item_text(title, genres, extra), title or values[0][2]


def _atomic_users(path: Path) -> tuple[dict[str, str], Features]:
    atomic = _read_atomic(path, "user_id")
    text = {}
    for id_, values in atomic.records("user_id", "user id"):
        by_field = {f: v for f, _, v in values}
        known = _user_text(*(by_field.get(f, "") for f in _USER_FIELDS))
        extra = [f"{f}: {v}" for f, v in by_field.items() if f not in _USER_FIELDS + _UNTEXTED_USER_FIELDS]
        if known or extra:
            text[id_] = "; ".join([known, *extra] if known else extra)
    return text, atomic.features("user_id")
