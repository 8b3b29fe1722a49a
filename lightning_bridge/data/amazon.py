"""Amazon Reviews, as McAuley's group publishes it: a reviews file and a metadata file, one JSON object a line,
gzipped or not, in any of its three releases.

- 2014 (``reviews_Beauty_5.json.gz``, ``meta_Beauty.json.gz``): reviews keyed ``reviewerID``, ``asin``,
  ``overall``, ``unixReviewTime``; metadata lines are Python dict literals (``{'asin': ...}``) with ``title``,
  ``categories`` (a list of category paths), ``description``, ``brand``. The release TIGER, P5 and S3-Rec report on.
- 2018 (``Beauty_5.json.gz``, ``meta_All_Beauty.json.gz``): the same review keys; metadata in JSON with
  ``title``, ``category``, ``description`` (a list), ``brand``, ``feature``.
- 2023 (``All_Beauty.jsonl.gz``, ``meta_All_Beauty.jsonl.gz``): reviews keyed ``user_id``, ``parent_asin``
  (the product, which the metadata describes; ``asin`` is the variant bought), ``rating``, ``timestamp``
  (milliseconds); metadata with ``title``, ``categories``, ``description``, ``features``, ``store``.

Every line is checked; a broken one is an error naming the file, the line and what was expected.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_bridge.data.sources import Features, RawData, _item_text, _log_coverage
from lightning_bridge.data.tables import DataFormatError

# key of each value in the 2014 / 2018 reviews, and in the 2023 ones
REVIEW_KEYS = {"user": ("reviewerID", "user_id"), "item": ("asin", "parent_asin"),
               "rating": ("overall", "rating"), "time": ("unixReviewTime", "timestamp")}
# a metadata field named in item_text_fields reads the first of these keys the file has
FIELD_KEYS = {"categories": ("categories", "category"), "features": ("features", "feature"),
              "brand": ("brand", "store"), "store": ("store", "brand")}
MAX_FIELD_CHARS = 300  # a description can be pages long; the LM reads max_item_tokens of it anyway
_ITEM_ID = re.compile(r"""["'](?:parent_asin|asin)["']\s*:\s*["']([^"']+)["']""")


def read_amazon(reviews: str | Path, metadata: str | Path | None = None,
                item_text_fields: Sequence[str] = ("categories",)) -> RawData:
    """Reads a reviews file and (optionally) its metadata file; every review is an interaction. The item text is
    each item's title followed by ``item_text_fields`` (metadata keys; ``categories``, ``features`` and
    ``brand`` find their 2018 names too)."""
    reviews = Path(reviews)
    users, items, ratings, times = [], [], [], []
    release_2023 = None
    for line, record in _records(reviews, strict_json=True):
        if release_2023 is None:
            release_2023 = "user_id" in record
        values = []
        for what, (old, new) in REVIEW_KEYS.items():
            key = new if release_2023 else old
            value = record.get(key)
            if value is None or value == "":
                raise DataFormatError.at(reviews, f"expected the review's {what} as {key!r} (Amazon Reviews "
                                                  f"{'2023' if release_2023 else '2014/2018'} keys: "
                                                  f"{', '.join(k[release_2023] for k in REVIEW_KEYS.values())}); "
                                                  f"found keys {', '.join(record)}", line)
            values.append(value)
        user, item, rating, time = values
        if not isinstance(rating, int | float) or not isinstance(time, int | float):
            raise DataFormatError.at(reviews, f"expected numbers as rating and time, found {rating!r} and "
                                              f"{time!r}", line)
        users.append(str(user))
        items.append(str(item))
        ratings.append(rating)
        times.append(time)
    if not users:
        raise DataFormatError.at(reviews, "no reviews; expected one JSON object a line")
    item_text, item_titles, item_features = {}, {}, Features()
    if metadata is not None:
        item_text, item_titles, item_features = _read_metadata(Path(metadata), set(items), item_text_fields)
        _log_coverage(Path(metadata), np.array(items), item_text)
    return RawData(np.array(users), np.array(items), np.array(ratings, np.float32), np.array(times, np.int64),
                   item_text, item_titles, {}, str(reviews), item_features)


def _read_metadata(path: Path, wanted: set[str], fields: Sequence[str]
                   ) -> tuple[dict[str, str], dict[str, str], Features]:
    """(text, title, features) of the items in ``wanted``; lines of other items are skipped before they are
    parsed. The features are the fields read (title and ``fields``), as ``token_seq``."""
    text, titles = {}, {}
    features = Features(dict.fromkeys(("title", *fields), "token_seq"))

    def described(raw: str) -> bool:
        return not wanted.isdisjoint(_ITEM_ID.findall(raw))

    for line, record in _records(path, strict_json=False, keep=described):
        item = record.get("parent_asin") or record.get("asin")
        if not item:
            raise DataFormatError.at(path, f"expected the item id as 'parent_asin' (2023) or 'asin' (2014/2018); "
                                           f"found keys {', '.join(record)}", line)
        if item not in wanted or item in text:
            continue
        title = _plain(record.get("title"))
        values, extra = {"title": title}, []
        for field in fields:
            key = next((k for k in FIELD_KEYS.get(field, (field,)) if record.get(k)), None)
            value = _plain(record.get(key)) if key else ""
            values.setdefault(field, value)
            if value:
                extra.append(f"{field}: {value}")
        if title or extra:
            text[item] = _item_text(title, (), extra)
            titles[item] = title or item
            features.values[item] = [values[field] for field in features.types]
    return text, titles, features


def _plain(value: Any) -> str:
    """A metadata value as one line of text: lists (and 2014's lists of category paths) joined without
    repeats, dicts as ``key: value``, long text cut at a word."""
    if value is None:
        return ""
    if isinstance(value, dict):
        words = [f"{k}: {_plain(v)}" for k, v in value.items()]
    elif isinstance(value, list):
        words = list(dict.fromkeys(w for w in _flatten(value) if w))
    else:
        return " ".join(str(value).split())[:MAX_FIELD_CHARS]
    return ", ".join(words)[:MAX_FIELD_CHARS]


def _flatten(values: list) -> Iterator[str]:
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield _plain(value)


def _records(path: Path, strict_json: bool, keep: Callable[[str], bool] | None = None
             ) -> Iterator[tuple[int, dict]]:
    """(1-based line, object) for every non-empty line; gzip is recognised by its magic bytes, not by name."""
    if not path.is_file():
        raise DataFormatError.at(path, "file not found")
    with path.open("rb") as probe:
        zipped = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if zipped else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, raw in enumerate(lines, 1):
                if not raw.strip() or (keep is not None and not keep(raw)):
                    continue
                yield number, _parse(path, number, raw, strict_json)
    except (OSError, EOFError, UnicodeDecodeError) as err:  # a truncated download, a foreign file
        raise DataFormatError.at(path, f"cannot be read as {'gzipped ' if zipped else ''}UTF-8 text: {err}") \
            from err


def _parse(path: Path, number: int, raw: str, strict_json: bool) -> dict:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as err:
        record = None
        if not strict_json:  # the 2014 metadata is written as Python literals; literal_eval runs no code
            with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
                record = ast.literal_eval(raw.strip())
        if record is None:
            expected = "a JSON object" if strict_json else "a JSON object or a Python dict literal (2014 metadata)"
            raise DataFormatError.at(path, f"expected {expected} on every line; {err.msg} at column {err.colno}",
                                     number) from None
    if not isinstance(record, dict):
        raise DataFormatError.at(path, f"expected an object ({{...}}) on every line, found {type(record).__name__}",
                                 number)
    return record
