"""Readers that turn the on-disk MovieLens / RecBole formats into one in-memory shape, ``RawData``.

Every reader validates as it goes and raises ``DataFormatError`` naming the file, the 1-based line and
what was expected, so a broken or mislabelled download fails at load time instead of as a silent
accuracy drop.  Parsing splits whole files at once and converts columns with numpy, which keeps
ML-1M's million lines within a few seconds.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Column order of u.item's genre flags, used when a folder lacks u.genre (the file that defines it).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# ML-1M stores age and occupation as codes; these are the meanings listed in its README.
ML1M_AGES = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55",
             "56": "56+"}
ML1M_OCCUPATIONS = {
    "0": "other", "1": "academic/educator", "2": "artist", "3": "clerical/admin", "4": "college/grad student",
    "5": "customer service", "6": "doctor/health care", "7": "executive/managerial", "8": "farmer",
    "9": "homemaker", "10": "K-12 student", "11": "lawyer", "12": "programmer", "13": "retired",
    "14": "sales/marketing", "15": "scientist", "16": "self-employed", "17": "technician/engineer",
    "18": "tradesman/craftsman", "19": "unemployed", "20": "writer",
}
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
# Atomic fields with a known meaning; names follow RecBole's dataset_example files.
_TITLE_FIELDS = ("movie_title", "title", "name")
_YEAR_FIELDS = ("release_year", "year")
_GENRE_FIELDS = ("class", "genre", "genres")
_USER_FIELDS = ("age", "gender", "occupation")
_UNTEXTED_USER_FIELDS = ("zip_code",)  # a postcode tells a language model next to nothing


class DataFormatError(ValueError):
    """A dataset file is missing or malformed; the message says where and what was expected."""

    @classmethod
    def at(cls, path: Path, message: str, line: int | None = None) -> DataFormatError:
        where = f"{path}, line {line}" if line is not None else str(path)
        return cls(f"{where}: {message}")


@dataclass
class RawData:
    """Interactions and side text exactly as a source states them, before any id mapping or filtering."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    item_text: dict[str, str]
    item_titles: dict[str, str]
    user_text: dict[str, str]
    source: str


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
    joined = "\n".join(table.columns[index])
    if any(space in joined for space in _SPACES):  # the cheap test first: ML-1M has two million ids
        for k, id_ in enumerate(table.columns[index]):
            _check_unpadded(table, k, id_, index, what)
    return ids


_SPACES = (" ", "\t", "\r", "\x0b", "\x0c", "\xa0", "\u3000")


def _check_unpadded(table: _Table, row: int, id_: str, index: int, what: str) -> None:
    """An id with spaces around it ('42 ' beside '42') would silently be another user or item."""
    if id_ != id_.strip():
        raise table.error(row, f"{what} {id_!r} has whitespace around it in field {index + 1}; expected the id "
                               f"alone (remove the spaces, or they make {id_.strip()!r} a different id)")


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
        _check_unpadded(table, k, id_, index, what)
        if id_ in first:
            raise table.error(k, f"duplicate {what} {id_!r}, first given on line {table.lines[first[id_]]}")
        first[id_] = k
    return ids


def _item_text(title: str, genres: Iterable[str], extra: Iterable[str] = ()) -> str:
    """The one-line item description every reader produces, e.g. 'Toy Story (1995); genres: Comedy'."""
    genres = [g for g in genres if g]
    parts = [title] if title else []
    if genres:
        parts.append("genres: " + ", ".join(genres))
    return "; ".join([*parts, *extra])


def _user_text(age: str, gender: str, occupation: str) -> str:
    pairs = (("age", age), ("gender", gender), ("occupation", occupation))
    return ", ".join(f"{key} {value}" for key, value in pairs if value)


def _log_coverage(source: Path, items: np.ndarray, item_text: dict[str, str]) -> None:
    """Items with text but no interactions are harmless; interacted items without text are worth a warning."""
    interacted = set(np.unique(items).tolist())
    unused = len(item_text.keys() - interacted)
    missing = len(interacted - item_text.keys())
    if unused:
        log.info("%s: %d items have metadata but no interactions", source, unused)
    if missing and item_text:
        log.warning("%s: %d interacted items have no metadata text", source, missing)


# ---------------------------------------------------------------------------------------------------------
# GroupLens ml-100k


ML100K_FILES = "u.data, u.item and u.user (u.genre optional)"


def read_ml100k(folder: str | Path) -> RawData:
    """Reads the GroupLens ml-100k folder (u.data, u.item, u.user, optional u.genre)."""
    folder = Path(folder)
    users, items, ratings, timestamps = _grouplens_ratings(
        _require(folder / "u.data", ML100K_FILES), "\t", "user, item, rating, timestamp",
        "user<TAB>item<TAB>rating<TAB>timestamp")
    genre_path = folder / "u.genre"
    genres = _ml100k_genres(genre_path) if genre_path.is_file() else ML100K_GENRES
    item_text, item_titles = _ml100k_items(_require(folder / "u.item", ML100K_FILES), genres)
    user_text = _ml100k_users(_require(folder / "u.user", ML100K_FILES))
    _log_coverage(folder, items, item_text)
    return RawData(users, items, ratings, timestamps, item_text, item_titles, user_text, str(folder))


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    """Genre names in flag order; u.genre lists 'name|index' and the index must match the position."""
    table = _read_table(path, "|", 2, "genre name, index")
    for k, (name, index) in enumerate(table.rows()):
        if index != str(k) or not name:
            raise table.error(k, f"expected 'name|{k}' (genres listed in flag order), found {name}|{index}")
    return tuple(table.columns[0])


def _ml100k_items(path: Path, genres: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    ncols = 5 + len(genres)
    expected = f"id, title, release date, video date, url, {len(genres)} genre flags"
    table = _read_table(path, "|", ncols, expected)
    _unique_ids(table, 0, "item id")
    text, titles = {}, {}
    for k, row in enumerate(table.rows()):
        flags = row[5:]
        if not set(flags) <= {"0", "1"}:
            raise table.error(k, f"expected genre flags 0 or 1 in fields 6-{ncols}, found {'|'.join(flags)}")
        titles[row[0]] = row[1]
        text[row[0]] = _item_text(row[1], (g for g, flag in zip(genres, flags, strict=True) if flag == "1"))
    return text, titles


def _ml100k_users(path: Path) -> dict[str, str]:
    table = _read_table(path, "|", 5, "id, age, gender, occupation, zip code")
    _unique_ids(table, 0, "user id")
    return {row[0]: _user_text(row[1], row[2], row[3]) for row in table.rows()}


# ---------------------------------------------------------------------------------------------------------
# GroupLens ml-1m


ML1M_FILES = "ratings.dat, movies.dat and users.dat"


def read_ml1m(folder: str | Path) -> RawData:
    """Reads the GroupLens ml-1m folder ('::'-separated ratings.dat, movies.dat, users.dat)."""
    folder = Path(folder)
    users, items, ratings, timestamps = _grouplens_ratings(
        _require(folder / "ratings.dat", ML1M_FILES), "::", "UserID, MovieID, Rating, Timestamp",
        "UserID::MovieID::Rating::Timestamp")
    item_text, item_titles = _ml1m_movies(_require(folder / "movies.dat", ML1M_FILES))
    user_text = _ml1m_users(_require(folder / "users.dat", ML1M_FILES))
    _log_coverage(folder, items, item_text)
    return RawData(users, items, ratings, timestamps, item_text, item_titles, user_text, str(folder))


def _ml1m_movies(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    table = _read_table(path, "::", 3, "MovieID, Title (Year), Genre|Genre|...")
    _unique_ids(table, 0, "movie id")
    titles = {id_: title for id_, title, _ in table.rows()}
    text = {id_: _item_text(title, genres.split("|")) for id_, title, genres in table.rows()}
    return text, titles


def _ml1m_users(path: Path) -> dict[str, str]:
    table = _read_table(path, "::", 5, "UserID, Gender, Age, Occupation, Zip-code")
    _unique_ids(table, 0, "user id")
    text = {}
    for k, (id_, gender, age, occupation, _) in enumerate(table.rows()):
        if age not in ML1M_AGES:
            raise table.error(k, f"expected an age code in {sorted(ML1M_AGES, key=int)}, found {age!r}")
        if occupation not in ML1M_OCCUPATIONS:
            raise table.error(k, f"expected an occupation code 0-20, found {occupation!r}")
        text[id_] = _user_text(ML1M_AGES[age], gender, ML1M_OCCUPATIONS[occupation])
    return text


# ---------------------------------------------------------------------------------------------------------
# RecBole atomic files


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


def read_atomic(folder: str | Path, name: str | None = None) -> RawData:
    """Reads RecBole atomic files ``<name>.inter`` and optional ``<name>.item`` / ``<name>.user``."""
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
    item_text, item_titles = _atomic_items(item_path) if item_path.is_file() else ({}, {})
    user_text = _atomic_users(user_path) if user_path.is_file() else {}
    _log_coverage(folder, items, item_text)
    return RawData(users, items, ratings, timestamps, item_text, item_titles, user_text, str(folder))


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


def _atomic_items(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    atomic = _read_atomic(path, "item_id")
    text, titles = {}, {}
    for id_, values in atomic.records("item_id", "item id"):
        if values:  # an item whose fields are all empty has no text rather than ""
            text[id_], titles[id_] = _atomic_item_text(values)
    return text, titles


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


def _atomic_users(path: Path) -> dict[str, str]:
    atomic = _read_atomic(path, "user_id")
    text = {}
    for id_, values in atomic.records("user_id", "user id"):
        by_field = {f: v for f, _, v in values}
        known = _user_text(*(by_field.get(f, "") for f in _USER_FIELDS))
        extra = [f"{f}: {v}" for f, v in by_field.items() if f not in _USER_FIELDS + _UNTEXTED_USER_FIELDS]
        if known or extra:
            text[id_] = "; ".join([known, *extra] if known else extra)
    return text
