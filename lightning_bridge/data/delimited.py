"""Your own data: an interactions file in any delimited text format with a header line (CSV, TSV, ``::``...)
whose columns are named by the user, and optionally an item file whose chosen columns become the item text.

Header names may carry RecBole's ``:type`` suffix (``user_id:token`` is ``user_id``). Quoted fields
(``"Toy Story, The"``) follow the CSV rules for a one-character separator. Every error names the file, the
line and what was expected.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightning_bridge.data.sources import Features, RawData, _item_text, _log_coverage
from lightning_bridge.data.tables import (
    DataFormatError,
    _interactions,
    _no_interactions,
    _read_lines,
    _Table,
    _timestamps,
    _unique_ids,
)

ENCODING = "utf-8"


def read_delimited(path: str | Path, separator: str = ",", user_field: str = "user_id",
                   item_field: str = "item_id", time_field: str | None = None, rating_field: str | None = None,
                   items_path: str | Path | None = None, items_separator: str | None = None,
                   item_id_field: str | None = None, title_field: str | None = "title",
                   item_text_fields: Sequence[str] | None = None) -> RawData:
    """Reads interactions from ``path`` and item text from ``items_path`` (see ``CSVDataModule``)."""
    path = Path(path)
    wanted = [user_field, item_field, *(f for f in (rating_field, time_field) if f)]
    table = _columns(path, separator, wanted)
    if not len(table):
        raise _no_interactions(path, separator.join(wanted))
    rating = wanted.index(rating_field) if rating_field else None
    users, items, ratings, _ = _interactions(table, 0, 1, rating, None)
    timestamps = _times(table, wanted.index(time_field)) if time_field else np.arange(len(table))
    item_text, item_titles, item_features = {}, {}, Features()
    if items_path is not None:
        item_text, item_titles, item_features = _read_items(
            Path(items_path), items_separator or separator, item_id_field or item_field, title_field,
            item_text_fields)
        _log_coverage(Path(items_path), items, item_text)
    return RawData(users, items, ratings, timestamps, item_text, item_titles, {}, str(path), item_features)


def _columns(path: Path, separator: str, wanted: Sequence[str]) -> _Table:
    """The ``wanted`` columns of a delimited file with a header line, column by column."""
    return _select(*_parse(path, separator, wanted), wanted, separator)


def _parse(path: Path, separator: str, wanted: Sequence[str]) -> tuple[Path, list[str], list[list[str]],
                                                                       Sequence[int]]:
    """(path, header field names, the rows below it, their line numbers); every row has the header's length."""
    if not separator:
        raise ValueError("data.separator must not be empty; expected e.g. ',' or '\\t'")
    if not path.is_file():
        raise DataFormatError.at(path, "file not found")
    lines, numbers = _read_lines(path, ENCODING)
    if not lines:
        raise DataFormatError.at(path, f"empty file; expected a header line naming {', '.join(wanted)}", 1)
    rows = _rows(lines, separator)
    fields = [name.split(":")[0].strip() for name in rows[0]]
    for row, line in zip(rows[1:], numbers[1:], strict=True):
        if len(row) != len(fields):
            raise DataFormatError.at(path, f"expected {len(fields)} {separator!r}-separated fields "
                                           f"({', '.join(fields)}), found {len(row)}", line)
    return path, fields, rows[1:], numbers


def _select(path: Path, fields: list[str], rows: list[list[str]], numbers: Sequence[int], wanted: Sequence[str],
            separator: str) -> _Table:
    missing = [f for f in wanted if f not in fields]
    if missing:
        raise DataFormatError.at(path, f"the header lacks the field(s) {', '.join(map(repr, missing))}; found "
                                       f"{', '.join(map(repr, fields))} (separator {separator!r}; set the "
                                       f"data's *_field options to these names)", numbers[0])
    index = [fields.index(f) for f in wanted]
    return _Table(path, [[row[i] for row in rows] for i in index], numbers[1:])


def _rows(lines: list[str], separator: str) -> list[list[str]]:
    """Each line's fields: CSV quoting rules for a one-character separator, a plain split otherwise. A quoted
    field spanning lines is not supported (every record is one line, so errors can name it)."""
    if len(separator) > 1:
        return [line.split(separator) for line in lines]
    return [next(csv.reader([line], delimiter=separator), []) for line in lines]


def _times(table: _Table, index: int) -> np.ndarray:
    """Numbers (as ``tables._timestamps``) or ISO 8601 dates and times (``2021-03-04``, ``2021-03-04
    10:20:30``), as seconds since 1970 either way."""
    values = table.columns[index]
    try:
        float(values[0])
    except ValueError:
        return _dates(table, index)
    return _timestamps(table, index)


def _dates(table: _Table, index: int) -> np.ndarray:
    values = table.columns[index]
    try:
        return np.array(values, dtype="datetime64[s]").astype(np.int64)
    except ValueError:
        for k, value in enumerate(values):
            try:
                np.datetime64(value, "s")
            except ValueError:
                raise table.error(k, f"expected a number or an ISO 8601 date (2021-03-04 or 2021-03-04T10:20:30) "
                                     f"as the time in field {index + 1}, found {value!r}") from None
        raise


def _read_items(path: Path, separator: str, id_field: str, title_field: str | None,
                text_fields: Sequence[str] | None) -> tuple[dict[str, str], dict[str, str], Features]:
    """(text, title, features) per item id: the title first, then each chosen field as ``field: value``
    (``text_fields`` None takes every column but the id); the features are every column but the id, as
    ``token_seq`` (a delimited file states no types)."""
    path, fields, rows, numbers = _parse(path, separator, [id_field])
    chosen = [f for f in fields if f not in (id_field, title_field)] if text_fields is None else list(text_fields)
    wanted = [id_field, *dict.fromkeys(f for f in (title_field, *chosen) if f)]
    table = _select(path, fields, rows, numbers, wanted, separator)
    ids = _unique_ids(table, 0, "item id")
    columns = dict(zip(wanted, table.columns, strict=True))
    text, titles = {}, {}
    for k, id_ in enumerate(ids):
        title = columns[title_field][k] if title_field else ""
        extra = [f"{f}: {columns[f][k]}" for f in chosen if f != title_field and columns[f][k]]
        if title or extra:
            text[id_] = _item_text(title, (), extra)
            titles[id_] = title or text[id_]
    return text, titles, _features(fields, rows, fields.index(id_field))


def _features(fields: list[str], rows: list[list[str]], id_index: int) -> Features:
    """Every column but the id; a name's spaces become ``_`` (one word, as RecBole's configs list fields), and a
    name that then repeats an earlier one is left out."""
    names: dict[str, int] = {}
    for i, name in enumerate(fields):
        names.setdefault("_".join(name.split()), i)
    names = {name: i for name, i in names.items() if i != id_index and name}
    return Features(dict.fromkeys(names, "token_seq"),
                    {row[id_index]: [row[i] for i in names.values()] for row in rows})
