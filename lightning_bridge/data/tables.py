"""Delimited text files read column by column, with every error naming the file, the 1-based line and what
was expected (``DataFormatError``). Shared by the GroupLens readers (``sources``) and the atomic-file reader
(``atomic``)."""

from __future__ import annotations

import codecs
import contextlib
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from lightning_bridge.data.ids import first_bad_id, id_problem

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A dataset file is missing or malformed; the message says where and what was expected."""

    @classmethod
    def at(cls, path: Path, message: str, line: int | None = None) -> DataFormatError:
        where = f"{path}, line {line}" if line is not None else str(path)
        return cls(f"{where}: {message}")



@dataclass
class _Table:
    """A file's fields column by column, remembering each row's 1-based line number for errors."""

    path: Path
    columns: list[list[str]]
    lines: Sequence[int]

    def __len__(self) -> int:
        return len(self.lines)

    def rows(self) -> list[tuple[str, ...]]:
        return list(zip(*self.columns, strict=True))

    def error(self, row: int, message: str) -> DataFormatError:
        return DataFormatError.at(self.path, message, self.lines[row])


# ---------------------------------------------------------------------------------------------------------
# Low-level parsing


def _require(path: Path, must_contain: str) -> Path:
    if not path.is_file():
        raise DataFormatError.at(path, f"file not found; the folder must contain {must_contain}")
    return path


def _read_lines(path: Path, encoding: str) -> tuple[list[str], Sequence[int]]:
    """Non-empty lines with their 1-based numbers; trailing blanks go silently, inner empty lines logged.
    A UTF-8 byte-order mark (what some editors put first) is dropped."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        message = f"expected {encoding} text, found byte {data[err.start]:#04x}"
        raise DataFormatError.at(path, message, line) from err
    lines = text.replace("\r\n", "\n").split("\n")  # not splitlines(): latin-1 titles may hold \x85
    while lines and not lines[-1].strip():
        lines.pop()
    if all(lines):
        return lines, range(1, len(lines) + 1)
    numbers = [i for i, line in enumerate(lines, 1) if line]
    log.warning("%s: skipped %d empty lines", path, len(lines) - len(numbers))
    return [lines[i - 1] for i in numbers], numbers


def _split(path: Path, lines: list[str], numbers: Sequence[int], sep: str, ncols: int, expected: str
           ) -> _Table:
    """Splits lines into exactly ``ncols`` fields using whole-text string operations (fast on 1M lines)."""
    counts = np.fromiter(map(str.count, lines, itertools.repeat(sep)), np.int64, len(lines))
    bad = np.flatnonzero(counts != ncols - 1)
    if bad.size:
        k = int(bad[0])
        message = f"expected {ncols} {sep!r}-separated fields ({expected}), found {counts[k] + 1}"
        raise DataFormatError.at(path, message, numbers[k])
    flat = "\n".join(lines).replace(sep, "\n").split("\n") if lines else []
    return _Table(path, [flat[i::ncols] for i in range(ncols)], numbers)


def _read_table(path: Path, sep: str, ncols: int, expected: str, encoding: str = "latin-1") -> _Table:
    lines, numbers = _read_lines(path, encoding)
    return _split(path, lines, numbers, sep, ncols, expected)


def _ids(table: _Table, index: int, what: str) -> np.ndarray:
    ids = np.array(table.columns[index], dtype=str)
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise table.error(int(empty[0]), f"empty {what}; expected a non-empty id in field {index + 1}")
    bad = first_bad_id(table.columns[index])  # one pass over the joined column: ML-1M has two million ids
    if bad is not None:
        _check_id(table, bad, table.columns[index][bad], index, what)
    return ids


def _check_id(table: _Table, row: int, id_: str, index: int, what: str) -> None:
    """The id rule (``data/ids.py``): '42 ', '42\u2003' or '42\x00' beside '42' would silently be another user or
    item."""
    problem = id_problem(id_)
    if problem is not None:
        raise table.error(row, f"{what} {id_!r} {problem.replace('; ', f' in field {index + 1}; ', 1)}")


def _numbers(table: _Table, index: int, what: str) -> np.ndarray:
    """A float64 column: one fast numpy conversion, and a row-by-row pass only to name a bad value."""
    values = table.columns[index]
    with contextlib.suppress(ValueError):
        parsed = np.array(values, dtype=np.float64)
        if np.isfinite(parsed).all():
            return parsed
    return np.array([_finite(table, k, value, index, what) for k, value in enumerate(values)])


def _finite(table: _Table, row: int, value: str, index: int, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise table.error(row, f"expected a finite number as {what} in field {index + 1}, found {value!r}")
    return number


def _interactions(table: _Table, user: int, item: int, rating: int | None, timestamp: int | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users, items, float32 ratings (1.0 when absent) and exact timestamps (file order when absent)."""
    n = len(table)
    users = _ids(table, user, "user id")
    items = _ids(table, item, "item id")
    ratings = np.ones(n, np.float32) if rating is None else _numbers(table, rating, "rating")
    timestamps = np.arange(n) if timestamp is None else _timestamps(table, timestamp)
    return users, items, ratings.astype(np.float32), timestamps


FLOAT64_EXACT_DIGITS = 15


def _timestamps(table: _Table, index: int) -> np.ndarray:
    """Timestamps that keep their order exactly: int64 when every value is an integer that fits, float64
    otherwise; a value float64 cannot hold exactly (more than 15 significant digits that do not survive
    the conversion, so that two distinct times could compare equal) is an error naming its line."""
    values = table.columns[index]
    with contextlib.suppress(ValueError, OverflowError):
        return np.array(values, dtype=np.int64)
    parsed = _numbers(table, index, "timestamp")
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    for k in np.flatnonzero(lengths > FLOAT64_EXACT_DIGITS):
        try:
            exact = Decimal(values[k].strip()) == Decimal(float(parsed[k]))
        except InvalidOperation:
            exact = False
        if not exact:
            raise table.error(int(k), f"timestamp {values[k]!r} in field {index + 1} cannot be held exactly "
                                      f"(a float64 keeps about {FLOAT64_EXACT_DIGITS} significant digits), so "
                                      f"the order of interactions could change; expected an integer up to "
                                      f"{np.iinfo(np.int64).max} or a number with fewer digits")
    return parsed


def _no_interactions(path: Path, expected: str) -> DataFormatError:
    return DataFormatError.at(path, f"no interactions; expected at least one line '{expected}'")


def _grouplens_ratings(path: Path, sep: str, columns: str, example: str
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A GroupLens ratings file (u.data, ratings.dat): user, item, rating and timestamp on every line."""
    table = _read_table(path, sep, 4, columns)
    if not len(table):
        raise _no_interactions(path, example)
    return _interactions(table, 0, 1, 2, 3)


def _unique_ids(table: _Table, index: int, what: str) -> list[str]:
    """The id column of a metadata file, which must be non-empty and name each id once."""
    ids = table.columns[index]
    first: dict[str, int] = {}
    for k, id_ in enumerate(ids):
        if not id_:
            raise table.error(k, f"empty {what}; expected a non-empty id in field {index + 1}")
        _check_id(table, k, id_, index, what)
        if id_ in first:
            raise table.error(k, f"duplicate {what} {id_!r}, first given on line {table.lines[first[id_]]}")
        first[id_] = k
    return ids
