"""Prediction requests: recommendations for chosen users, and for new users given by a short history of items.

A request becomes the rows of one evaluation dataset: a chosen user's row holds everything the user is known
to have interacted with (as ``predict`` for all users does), a new user's row holds the items of their
history, oldest first. A new user has no row in InfoSharing, so the batch names them by a negative id, ``-1``
for the first history, ``-2`` for the second...; the models recommend for them from the history alone
(``DomainRecommender.scores`` folds them in, ``PromptBuilder`` leaves their ID token out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_bridge.data.batches import EvalUsers, UserHistories

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
        users: raw user ids, inline (``[196, 186]``) or the path of a file with one id per line; None and
            no ``histories``: every user.
        histories: a file of new users, one per line: ``label<TAB>item ids`` (raw item ids separated by spaces
            or commas, oldest first). Lines starting with ``#``, blank lines and a first line labelled
            ``history`` (a header) are skipped.
    """

    users: list[str | int] | str | None = None
    histories: str | None = None
    new_users: list[NewUser] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.users, str):
            self.users = read_user_ids(self.users)
        elif self.users is not None:
            self.users = [str(u) for u in self.users]
        if self.histories is not None:
            self.new_users = read_histories(self.histories)

    @property
    def is_empty(self) -> bool:
        return self.users is None and not self.new_users


def read_user_ids(path: str) -> list[str]:
    """The ids in a file, one per line (blank lines and ``#`` comments skipped)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"predict_for.users: {path!r} is neither a list of ids (e.g. [196, 186]) nor a file "
                                "of ids, one per line")
    lines = (line.split("#", 1)[0].strip() for line in file.read_text().splitlines())
    return [line for line in lines if line]


def read_histories(path: str) -> list[NewUser]:
    """The new users of a ``label<TAB>item ids`` file; a malformed line is an error naming file and line."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"predict_for.histories: no such file {path!r}; expected lines 'label<TAB>item ids'")
    users = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        label, tab, ids = line.partition("\t")
        if number == 1 and label.strip() == "history":
            continue
        items = ids.replace(",", " ").split()
        if not tab or not label.strip() or not items:
            raise ValueError(f"{path}:{number}: expected 'label<TAB>item ids' (item ids separated by spaces or "
                             f"commas), got {line!r}")
        users.append(NewUser(label.strip(), items))
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
                    sequence_len: int | None) -> EvalUsers:
    """The batches of a request: its chosen users (with everything ``known`` of them), then its new users."""
    chosen = dense_ids(request.users or [], user_index, "user", "predict_for.users")
    histories = [dense_ids(u.items, item_index, "item", f"predict_for.histories ({u.label})")
                 for u in request.new_users]
    counts = np.concatenate([known.counts()[chosen], [len(h) for h in histories]]).astype(np.int64)
    parts = [known.items[s: s + n] for s, n in zip(known.indptr[chosen], counts[:len(chosen)], strict=True)]
    parts += histories
    rows = np.repeat(np.arange(len(counts)), counts)
    items = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    rows_known = UserHistories(rows, items, np.arange(len(rows)), len(counts))
    reported = np.concatenate([chosen, -1 - np.arange(len(histories))]).astype(np.int64)
    return EvalUsers(np.arange(len(counts)), [np.zeros(0, np.int64)] * len(counts), rows_known, history_len, {},
                     batch_size, sequence_len=sequence_len, reported_users=reported)
