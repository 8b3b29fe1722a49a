"""``RawData``, the one in-memory shape every reader produces, and the GroupLens (MovieLens) readers; RecBole
atomic files are read by ``atomic``, and the file parsing both share lives in ``tables``.

Every reader validates as it goes and raises ``DataFormatError`` naming the file, the 1-based line and
what was expected, so a broken or mislabelled download fails at load time instead of as a silent
accuracy drop.  Parsing splits whole files at once and converts columns with numpy, which keeps
ML-1M's million lines within a few seconds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_bridge.data.tables import _grouplens_ratings, _read_table, _require, _unique_ids

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
# Atomic fields with a known meaning; names follow RecBole's dataset_example files.
_TITLE_FIELDS = ("movie_title", "title", "name")
_YEAR_FIELDS = ("release_year", "year")
_GENRE_FIELDS = ("class", "genre", "genres")
_USER_FIELDS = ("age", "gender", "occupation")
_UNTEXTED_USER_FIELDS = ("zip_code",)  # a postcode tells a language model next to nothing
# RecBole's own ml-100k / ml-1m atomic files: the columns the GroupLens readers keep as features
ML100K_ITEM_FEATURES = {"movie_title": "token_seq", "release_year": "token", "class": "token_seq"}
ML1M_ITEM_FEATURES = {"movie_title": "token_seq", "release_year": "token", "genre": "token_seq"}
USER_FEATURES = {"age": "token", "gender": "token", "occupation": "token", "zip_code": "token"}
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


@dataclass
class Features:
    """A metadata file's own columns, kept so that the RecBole export can write them back beside the text:
    each field's RecBole type (``token``, ``token_seq``, ``float``, ``float_seq``) in column order, and per raw
    id its values in that order (``""`` where empty)."""

    types: dict[str, str] = field(default_factory=dict)
    values: dict[str, list[str]] = field(default_factory=dict)

    def subset(self, ids: Iterable[str]) -> Features:
        """The same fields for ``ids`` only (those without a row stay without)."""
        return Features(dict(self.types), {i: self.values[i] for i in ids if i in self.values})


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
    item_features: Features = field(default_factory=Features)
    user_features: Features = field(default_factory=Features)


def _title_and_year(title: str) -> tuple[str, str]:
    """'Toy Story (1995)' -> ('Toy Story', '1995'); a title without a trailing year keeps it all."""
    match = _TITLE_YEAR.match(title)
    return (match[1], match[2]) if match else (title, "")


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
    item_text, item_titles, item_features = _ml100k_items(_require(folder / "u.item", ML100K_FILES), genres)
    user_text, user_features = _ml100k_users(_require(folder / "u.user", ML100K_FILES))
    _log_coverage(folder, items, item_text)
    return RawData(users, items, ratings, timestamps, item_text, item_titles, user_text, str(folder),
                   item_features, user_features)


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    """Genre names in flag order; u.genre lists 'name|index' and the index must match the position."""
    table = _read_table(path, "|", 2, "genre name, index")
    for k, (name, index) in enumerate(table.rows()):
        if index != str(k) or not name:
            raise table.error(k, f"expected 'name|{k}' (genres listed in flag order), found {name}|{index}")
    return tuple(table.columns[0])


def _ml100k_items(path: Path, genres: Sequence[str]) -> tuple[dict[str, str], dict[str, str], Features]:
    """(text, title, features) per item; the features are RecBole's ml-100k columns: the title without its
    year, the year of the release date (of the title when the date is empty) and the genres."""
    ncols = 5 + len(genres)
    expected = f"id, title, release date, video date, url, {len(genres)} genre flags"
    table = _read_table(path, "|", ncols, expected)
    _unique_ids(table, 0, "item id")
    text, titles, features = {}, {}, Features(dict(ML100K_ITEM_FEATURES))
    for k, row in enumerate(table.rows()):
        flags = row[5:]
        if not set(flags) <= {"0", "1"}:
            raise table.error(k, f"expected genre flags 0 or 1 in fields 6-{ncols}, found {'|'.join(flags)}")
        titles[row[0]] = row[1]
        flagged = [g for g, flag in zip(genres, flags, strict=True) if flag == "1"]
        text[row[0]] = _item_text(row[1], flagged)
        movie_title, title_year = _title_and_year(row[1])
        features.values[row[0]] = [movie_title, row[2][-4:] if row[2] else title_year, " ".join(flagged)]
    return text, titles, features


def _ml100k_users(path: Path) -> tuple[dict[str, str], Features]:
    table = _read_table(path, "|", 5, "id, age, gender, occupation, zip code")
    _unique_ids(table, 0, "user id")
    features = Features(dict(USER_FEATURES), {row[0]: list(row[1:]) for row in table.rows()})
    return {row[0]: _user_text(row[1], row[2], row[3]) for row in table.rows()}, features


# ---------------------------------------------------------------------------------------------------------
# GroupLens ml-1m


ML1M_FILES = "ratings.dat, movies.dat and users.dat"


def read_ml1m(folder: str | Path) -> RawData:
    """Reads the GroupLens ml-1m folder ('::'-separated ratings.dat, movies.dat, users.dat)."""
    folder = Path(folder)
    users, items, ratings, timestamps = _grouplens_ratings(
        _require(folder / "ratings.dat", ML1M_FILES), "::", "UserID, MovieID, Rating, Timestamp",
        "UserID::MovieID::Rating::Timestamp")
    item_text, item_titles, item_features = _ml1m_movies(_require(folder / "movies.dat", ML1M_FILES))
    user_text, user_features = _ml1m_users(_require(folder / "users.dat", ML1M_FILES))
    _log_coverage(folder, items, item_text)
    return RawData(users, items, ratings, timestamps, item_text, item_titles, user_text, str(folder),
                   item_features, user_features)


def _ml1m_movies(path: Path) -> tuple[dict[str, str], dict[str, str], Features]:
    """(text, title, features) per movie; the features are RecBole's ml-1m columns."""
    table = _read_table(path, "::", 3, "MovieID, Title (Year), Genre|Genre|...")
    _unique_ids(table, 0, "movie id")
    titles = {id_: title for id_, title, _ in table.rows()}
    text = {id_: _item_text(title, genres.split("|")) for id_, title, genres in table.rows()}
    features = Features(dict(ML1M_ITEM_FEATURES), {
        id_: [*_title_and_year(title), " ".join(g for g in genres.split("|") if g)]
        for id_, title, genres in table.rows()})
    return text, titles, features


def _ml1m_users(path: Path) -> tuple[dict[str, str], Features]:
    """(text, features) per user; the features keep the file's age and occupation codes, as RecBole's ml-1m."""
    table = _read_table(path, "::", 5, "UserID, Gender, Age, Occupation, Zip-code")
    _unique_ids(table, 0, "user id")
    text, features = {}, Features(dict(USER_FEATURES))
    for k, (id_, gender, age, occupation, zip_code) in enumerate(table.rows()):
        if age not in ML1M_AGES:
            raise table.error(k, f"expected an age code in {sorted(ML1M_AGES, key=int)}, found {age!r}")
        if occupation not in ML1M_OCCUPATIONS:
            raise table.error(k, f"expected an occupation code 0-20, found {occupation!r}")
        text[id_] = _user_text(ML1M_AGES[age], gender, ML1M_OCCUPATIONS[occupation])
        features.values[id_] = [age, gender, occupation, zip_code]
    return text, features


