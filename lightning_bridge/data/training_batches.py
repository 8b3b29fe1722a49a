"""The training batches, each a whole batch built with vectorised numpy from a ``(epoch, batch number)`` key
(``batches.py`` says why): BPR triples for the domain model, next-item LM examples with the ids the LM's text
tasks read, and windows of item sequences for a domain model that reads histories."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_bridge.data.batches import UserHistories, batch_bounds

DENSE_SEEN_MAX_CELLS = 1 << 25


class BPRTriples(Dataset):
    """(user, positive item, negative item) batches for BPR.

    Every epoch visits each training interaction once in a seeded shuffled order; each negative is drawn
    uniformly from the items that the user has not interacted with in training (rejection: only the draws
    that hit a training item are drawn again), among ``candidates`` when given (else the whole catalogue).
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, num_items: int, batch_size: int,
                 seed: int, candidates: np.ndarray | None = None) -> None:
        self.users, self.items = users.astype(np.int64), items.astype(np.int64)
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.candidates = None if candidates is None else np.asarray(candidates, dtype=np.int64)
        # "Seen in training?" is answered by a dense (user, item) bitmap, O(1) per draw, or, for catalogues too
        # large for one (above 2^25 cells, 32 MB), by binary search in the sorted (user, item) keys.
        self._seen: np.ndarray | None = None
        self._positive_keys: np.ndarray | None = None
        num_users = int(self.users.max()) + 1 if len(self.users) else 0
        if num_users * num_items <= DENSE_SEEN_MAX_CELLS:
            self._seen = np.zeros((num_users, num_items), dtype=bool)
            self._seen[self.users, self.items] = True
        else:
            self._positive_keys = np.unique(self.users * num_items + self.items)
        counts = np.bincount(self.users)
        if (counts >= (num_items if self.candidates is None else len(self.candidates))).any():
            raise ValueError(f"user {int(np.argmax(counts))} interacted with every item in training; "
                             "no negative item can be sampled")
        self._epoch, self._cache = -1, None

    def num_batches(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches()

    def epoch_triples(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.users))
            users, pos = self.users[order], self.items[order]
            self._cache, self._epoch = (users, pos, self.sample_negatives(users, rng)), epoch
        return self._cache

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        neg = self._draw(rng, len(users))
        todo = np.arange(len(users))
        while len(todo):
            todo = todo[self._seen_in_training(users[todo], neg[todo])]
            neg[todo] = self._draw(rng, len(todo))
        return neg

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.candidates is None:
            return rng.integers(0, self.num_items, size=n)
        return self.candidates[rng.integers(0, len(self.candidates), size=n)]

    def _seen_in_training(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self._seen is not None:
            return self._seen[users, items]
        keys = users * self.num_items + items
        # searched in sorted order, the binary searches walk the positives front to back instead of jumping
        # around memory: drawing an epoch's 8 * 10^6 negatives at 10^7 interactions takes 4 s instead of 9.5
        order = np.argsort(keys)
        where = np.empty_like(order)
        where[order] = np.searchsorted(self._positive_keys, keys[order])
        where = where.clip(max=len(self._positive_keys) - 1)
        return self._positive_keys[where] == keys

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, b = key
        users, pos, neg = self.epoch_triples(epoch)
        s = batch_bounds(b, self.batch_size, len(users))
        return {"users": torch.from_numpy(users[s]), "pos": torch.from_numpy(pos[s]),
                "neg": torch.from_numpy(neg[s])}


class TextIdSampler:
    """Draws the items (or users) whose text an LM batch's text tasks read, without repeats within a batch.

    ``weights`` are unnormalised draw probabilities (0: never drawn, e.g. no text); a draw is a pure function
    of (seed, epoch, batch number), like every other batch.
    """

    def __init__(self, weights: np.ndarray, batch_size: int, seed: int, stream: int) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        self.candidates = np.flatnonzero(weights > 0)
        self.p = weights[self.candidates] / weights[self.candidates].sum()
        self.size = min(batch_size, len(self.candidates))
        self.seed, self.stream = seed, stream

    def draw(self, epoch: int, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, self.stream, b])
        return np.sort(rng.choice(self.candidates, size=self.size, replace=False, p=self.p))


def text_samplers(item_text: list[str | None], user_text: list[str | None], item_popularity: np.ndarray,
                  batch_size: int, sampling_power: float, seed: int) -> dict[str, TextIdSampler]:
    """``text_items`` and ``text_users`` of LM batches: the ids whose text the LM's text tasks read. Items
    favour the rare by ``sampling_power`` (drawn in proportion to ``(interactions + 1) ** -power``); users
    are uniform; ids without text are never drawn. None of either with ``batch_size`` 0."""
    samplers: dict[str, TextIdSampler] = {}
    if batch_size == 0:
        return samplers
    has_text = np.array([bool(t) for t in item_text])
    if has_text.any():
        weights = has_text * (item_popularity + 1.0) ** -sampling_power
        samplers["text_items"] = TextIdSampler(weights, batch_size, seed, stream=2)
    user_has_text = np.array([bool(t) for t in user_text])
    if user_has_text.any():
        samplers["text_users"] = TextIdSampler(user_has_text, batch_size, seed, stream=3)
    return samplers


class LMExamples(Dataset):
    """Next-item examples for the language model: a user, the history before one of their training
    interactions (most recent last, left-padded with -1), and that interaction's item as the target.

    Each epoch draws at most ``per_user`` target positions per user (seeded by the epoch) so that an epoch's
    cost stays bounded on long histories; positions with no history before them are never drawn.
    """

    def __init__(self, train: UserHistories, history_len: int, per_user: int, batch_size: int,
                 seed: int, text_ids: dict[str, TextIdSampler] | None = None) -> None:
        self.train, self.history_len, self.per_user = train, history_len, per_user
        self.batch_size, self.seed = batch_size, seed
        self.text_ids = text_ids or {}
        counts = train.counts()
        self.users_with_history = np.flatnonzero(counts >= 2)
        self.draws = np.minimum(counts[self.users_with_history] - 1, per_user)
        self._epoch, self._cache = -1, None

    def __len__(self) -> int:
        return math.ceil(int(self.draws.sum()) / self.batch_size)

    def epoch_examples(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch, 1])
            users = np.repeat(self.users_with_history, self.draws)
            counts = self.train.counts()[users]
            # a random position in 1..count-1 per draw; repeats within a user are allowed and rare
            ends = 1 + (rng.random(len(users)) * (counts - 1)).astype(np.int64)
            order = rng.permutation(len(users))
            self._cache, self._epoch = (users[order], ends[order]), epoch
        return self._cache

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        users, ends = self.epoch_examples(key[0])
        s = batch_bounds(key[1], self.batch_size, len(users))
        users, ends = users[s], ends[s]
        targets = self.train.items[self.train.indptr[users] + ends]
        batch = {"users": torch.from_numpy(users),
                 "history": torch.from_numpy(self.train.recent(users, ends, self.history_len)),
                 "targets": torch.from_numpy(targets[:, None])}
        for name, sampler in self.text_ids.items():
            batch[name] = torch.from_numpy(sampler.draw(*key))
        return batch


class SequenceWindows(Dataset):
    """Next-item training windows for a sequential domain model (SASRec).

    Each user's training items, in time order, are cut from the most recent backwards into windows of up to
    ``max_len`` targets; a window's input is the item before each target. So every training item except a
    user's first is a target exactly once per epoch, read after the items before it in its window (up to
    ``max_len``, fewer at a window's start), and nothing outside the training items is ever an input.
    A batch: ``users`` (B,), ``inputs`` and ``targets`` (B, max_len) left-padded with -1, and ``neg``
    (B, max_len), one item per position that the user has not interacted with in training (for BCE).
    Windows are shuffled and negatives drawn per epoch, seeded by (seed, epoch).
    """

    def __init__(self, train: UserHistories, max_len: int, num_items: int, batch_size: int, seed: int) -> None:
        self.batch_size, self.seed = batch_size, seed
        counts = train.counts()
        targets_per_user = np.maximum(counts - 1, 0)
        windows_per_user = -(-targets_per_user // max_len)
        users = np.repeat(np.arange(len(counts)), windows_per_user)
        # window w of a user (w = 0 the most recent) ends at target position count - 1 - w * max_len
        first_window = np.cumsum(windows_per_user) - windows_per_user
        w = np.arange(len(users)) - np.repeat(first_window, windows_per_user)
        last = counts[users] - 1 - w * max_len
        position = last[:, None] + np.arange(1 - max_len, 1)[None, :]
        real = position >= 1
        flat = train.indptr[users][:, None] + np.maximum(position, 1)
        self.users = users
        self.inputs = np.where(real, train.items[flat - 1], -1)
        self.targets = np.where(real, train.items[flat], -1)
        train_users = np.repeat(np.arange(len(counts)), counts)
        self._negatives = BPRTriples(train_users, train.items, num_items, batch_size, seed)  # its sampler only
        self._epoch, self._cache = -1, None

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def epoch_windows(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's window order and its negatives."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch, 2])
            order = rng.permutation(len(self.users))
            users = np.repeat(self.users[order], self.inputs.shape[1])
            neg = self._negatives.sample_negatives(users, rng).reshape(self.inputs.shape)
            self._cache, self._epoch = (order, neg), epoch
        return self._cache

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        order, neg = self.epoch_windows(key[0])
        s = batch_bounds(key[1], self.batch_size, len(order))
        rows = order[s]
        return {"users": torch.from_numpy(self.users[rows]), "inputs": torch.from_numpy(self.inputs[rows]),
                "targets": torch.from_numpy(self.targets[rows]), "neg": torch.from_numpy(neg[s])}
