"""Prediction requests: recommendations for chosen users, and for new users given by a short history of items.

A request becomes the rows of one evaluation dataset: a chosen user's row holds everything the user is known
to have interacted with (as ``predict`` for all users does), a new user's row holds the items of their
history, oldest first. A new user has no row in InfoSharing, so the batch names them by a negative id, ``-1``
for the first history, ``-2`` for the second...; the models recommend for them from the history alone
(``DomainRecommender.scores`` folds them in, ``PromptBuilder`` leaves their ID token out).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_bridge.data.batches import EvalUsers, UserHistories
from lightning_bridge.data.ids import id_problem

MAX_NAMED = 10  # unknown ids named in an error message


@dataclass
class NewUser:
    """A user the model has never seen: a label for the output and their items (raw ids), oldest first."""

    label: str
    items: list[str]


@dataclass
class PredictionRequest:
    """Whom ``predict`` recommends for: the CLI's ``--predict_for.users`` and ``--predict_for.histories``
    (Lightning's own ``predict`` group holds the trainer's arguments).

    Args:
        users: raw user ids, inline (``[196, 186]``) or the path of a file with one id per line (lines
            starting with ``#`` and blank lines skipped; anything else on a line is the id); None and no
            ``histories``: every user. An empty list or file, a repeated id, or an id holding whitespace or a
            control character is an error naming it (its file and line).
        histories: a file of new users, one per line: ``label<TAB>item ids`` (raw item ids separated by spaces
            or commas, oldest first). Lines starting with ``#``, blank lines and a first line labelled
            ``history`` (a header) are skipped. A label given twice is an error naming both lines.
    """

    users: list[str | int] | str | None = None
    histories: str | None = None
    new_users: list[NewUser] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.users, str):
            self.users = read_user_ids(self.users)
        elif self.users is not None:
            self.users = id_list(self.users, "predict_for.users")
        if self.histories is not None:
            self.new_users = read_histories(self.histories)

    @property
    def is_empty(self) -> bool:
        return self.users is None and not self.new_users


def id_list(value: Any, what: str, repeats: bool = False) -> list[str]:
    """A list of raw ids given by a caller (``[196, "186"]``): a string (which would be read as its characters),
    an empty list, an entry that is neither a string nor a whole number, an id breaking the id rule
    (``data/ids.py``) and (unless ``repeats``) an id given twice are errors naming ``what`` and the entry."""
    if isinstance(value, str | bytes):
        raise TypeError(f"{what} must be a list of ids, got the string {value!r} (which would be read as its "
                        f"characters); write [{value!r}] for one id")
    if not isinstance(value, Iterable) or isinstance(value, dict):
        raise TypeError(f"{what} must be a list of ids, got {type(value).__name__}")
    ids, first = [], {}
    for position, entry in enumerate(value):
        if isinstance(entry, bool) or not isinstance(entry, str | numbers.Integral):
            raise TypeError(f"{what}[{position}]: expected an id (a string or a whole number), got {entry!r}")
        id_ = str(entry)
        problem = id_problem(id_)
        if problem is not None:
            raise ValueError(f"{what}[{position}]: id {id_!r} {problem}")
        if not repeats and id_ in first:
            raise ValueError(f"{what}[{position}]: id {id_!r} is given twice (first as {what}[{first[id_]}])")
        first.setdefault(id_, position)
        ids.append(id_)
    if not ids:
        raise ValueError(f"{what} is empty; expected at least one id")
    return ids


def check_k(k: Any, what: str = "k") -> int:
    """``k`` as the number of items to recommend: a whole number of at least 1."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{what} must be a whole number of items, got {k!r}")
    if k < 1:
        raise ValueError(f"{what} must be at least 1, got {k}")
    return int(k)


def _id_at(id_: str, what: str, path: str, number: int) -> str:
    problem = id_problem(id_)
    if problem is not None:
        raise ValueError(f"{path}:{number}: {what} {id_!r} {problem}")
    return id_


def _lines(file: Path) -> list[str]:
    """The file's lines (``\n`` or ``\r\n``), as UTF-8 with an optional byte-order mark; other bytes are an
    error naming the file and line."""
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{file}:{line}: expected UTF-8 text, found byte 0x{data[err.start]:02x}") from err
    return [line.removesuffix("\r") for line in text.split("\n")]


def read_user_ids(path: str) -> list[str]:
    """The ids in a file, one per line (blank lines and lines starting with ``#`` skipped); an id breaking the id
    rule, an id given twice and a file without ids are errors naming the file (and line)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"predict_for.users: {path!r} is neither a list of ids (e.g. [196, 186]) nor a file "
                                "of ids, one per line")
    ids: dict[str, int] = {}
    for number, line in enumerate(_lines(file), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        id_ = _id_at(line, "user id", path, number)
        if id_ in ids:
            raise ValueError(f"{path}:{number}: user id {id_!r} is given twice (first on line {ids[id_]})")
        ids[id_] = number
    if not ids:
        raise ValueError(f"{path}: no user id in the file; expected one id per line")
    return list(ids)


def read_histories(path: str) -> list[NewUser]:
    """The new users of a ``label<TAB>item ids`` file; a malformed line is an error naming file and line."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"predict_for.histories: no such file {path!r}; expected lines 'label<TAB>item ids'")
    users, labels = [], {}
    for number, line in enumerate(_lines(file), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        label, tab, ids = line.partition("\t")
        if number == 1 and label.strip() == "history":
            continue
        items = ids.replace(",", " ").split(" ")
        items = [i for i in items if i]
        if not tab or not label.strip() or not items:
            raise ValueError(f"{path}:{number}: expected 'label<TAB>item ids' (item ids separated by spaces or "
                             f"commas), got {line!r}")
        label = _id_at(label, "label", path, number)
        if label in labels:
            raise ValueError(f"{path}:{number}: label {label!r} is given twice (first on line {labels[label]}); "
                             "each new user needs a label of their own")
        labels[label] = number
        users.append(NewUser(label, [_id_at(i, "item id", path, number) for i in items]))
    if not users:
        raise ValueError(f"{path}: no history in the file; expected lines 'label<TAB>item ids'")
    return users


def dense_ids(raw: Sequence[str], index: dict[str, int], what: str, where: str) -> np.ndarray:
    """The rows of raw ids; an unknown id is an error naming it (and ``where`` it came from)."""
    unknown = [r for r in raw if r not in index]
    if unknown:
        named = ", ".join(map(repr, unknown[:MAX_NAMED])) + (" ..." if len(unknown) > MAX_NAMED else "")
        raise ValueError(f"{where}: {len(unknown)} unknown {what} id(s): {named}; the model knows only the "
                         f"{what}s of the data it was trained on")
    return np.array([index[r] for r in raw], dtype=np.int64)


def request_dataset(request: PredictionRequest, known: UserHistories, user_index: dict[str, int],
                    item_index: dict[str, int], history_len: int, batch_size: int,
                    sequence_len: int | None, names: tuple[str, str] = ("predict_for.users", "predict_for.histories")
                    ) -> EvalUsers:
    """The batches of a request: its chosen users (with everything ``known`` of them), then its new users.
    ``names``: what the caller calls the users and the histories, for the errors naming unknown ids."""
    chosen = dense_ids(request.users or [], user_index, "user", names[0])
    histories = [dense_ids(u.items, item_index, "item", f"{names[1]} ({u.label})") for u in request.new_users]
    counts = np.concatenate([known.counts()[chosen], [len(h) for h in histories]]).astype(np.int64)
    parts = [known.items[s: s + n] for s, n in zip(known.indptr[chosen], counts[:len(chosen)], strict=True)]
    parts += histories
    rows = np.repeat(np.arange(len(counts)), counts)
    items = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    rows_known = UserHistories(rows, items, np.arange(len(rows)), len(counts))
    reported = np.concatenate([chosen, -1 - np.arange(len(histories))]).astype(np.int64)
    return EvalUsers(np.arange(len(counts)), [np.zeros(0, np.int64)] * len(counts), rows_known, history_len, {},
                     batch_size, sequence_len=sequence_len, reported_users=reported)
