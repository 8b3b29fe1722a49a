"""Whole-batch datasets: each item is one ready batch, built with vectorised numpy, never per sample. Here:
the sampler, users' histories and the evaluation batches; the training batches are in ``training_batches.py``.

A :class:`ShardedBatches` sampler hands out ``(epoch, batch_number)`` keys; the datasets turn a key into a
batch. Because the epoch travels inside the key, a batch is a pure function of (seed, epoch, batch number):
reproducible, identical under any number of worker processes, and the same whichever rank draws it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class ShardedBatches(DistributedSampler):
    """Yields this process's ``(epoch, batch_number)`` keys.

    It subclasses ``DistributedSampler`` so that Lightning calls ``set_epoch`` on it and does not wrap it in
    a sampler of its own (which would pad evaluation with duplicated users and skew the metrics).
    ``even=True`` gives every rank the same number of batches (needed in training so DDP never waits).
    """

    def __init__(self, num_batches: int, even: bool) -> None:
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        super().__init__(range(num_batches), num_replicas=world, rank=rank, shuffle=False)
        self.num_batches, self.even = num_batches, even
        self.skip = 0
        """Batches the next iteration leaves out: those a run resumed mid-epoch has already trained on."""

    def _mine(self) -> range:
        stop = (self.num_batches // self.num_replicas) * self.num_replicas if self.even else self.num_batches
        if self.even and stop == 0:
            stop = self.num_replicas  # fewer batches than ranks: batch keys wrap around below
        return range(self.rank, stop, self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # A generator: the epoch and the skip are read when the first batch is drawn, after Lightning has
        # set them. A loader cycled in a longer one's epoch restarts at 0, so the skip wraps around.
        mine = self._mine()
        skip, self.skip = (self.skip % len(mine) if len(mine) else 0), 0
        for b in mine[skip:]:
            yield self.epoch, b % self.num_batches

    def __len__(self) -> int:
        return len(self._mine())


def batches_done_this_epoch(trainer) -> int:
    """Training batches of the current epoch that a run resumed from a mid-epoch checkpoint has already
    trained on (0 otherwise), so that its loaders continue with the next batch rather than the first."""
    if trainer is None:
        return 0
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return 0 if progress.is_last_batch else progress.current.processed


def batch_bounds(b: int, batch_size: int, total: int) -> slice:
    return slice(b * batch_size, min((b + 1) * batch_size, total))


class UserHistories:
    """Each user's items in time order, as CSR arrays, with the methods that cut padded histories."""

    def __init__(self, users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, num_users: int) -> None:
        order = np.lexsort((np.arange(len(users)), timestamps, users))
        self.items = items[order].astype(np.int64)
        self.timestamps = timestamps[order]
        counts = np.bincount(users, minlength=num_users)
        self.indptr = np.concatenate([[0], np.cumsum(counts)])

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def recent(self, users: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
        """(B, length) item ids of each user's interactions before position ``ends`` (exclusive, relative to
        the user's start), the most recent last, left-padded with -1."""
        starts = self.indptr[users]
        offsets = np.arange(-length, 0)
        pos = (starts + ends)[:, None] + offsets[None, :]
        valid = pos >= starts[:, None]
        return np.where(valid, self.items[np.maximum(pos, 0)], -1)


class EvalUsers(Dataset):
    """Batches of users to rank the whole catalogue for.

    A batch holds ``users``; ``targets`` (B, T) padded with -1; ``history`` (B, history_len), the items the
    model may read as context, most recent last; the (row, item) pairs to mask (``exclude_rows``,
    ``exclude_cols``): everything in the history; ``group_<name>`` (B,) for each evaluation group (e.g.
    ``group_sparse``: the user is among the sparsest fifth by training interactions), from ``groups``, masks
    over all users; under the item cold-start protocol, ``new_items`` (num_items,), the items never seen in
    training; and with ``sequence_len`` set (a sequential domain model), ``sequence`` (B, sequence_len): the
    same known items, as the domain model reads them.

    ``reported_users`` (default: ``users``) are the ids written into ``users``, where ``known`` is indexed by
    something else: a prediction request's rows (``data/requests.py``), whose new users have negative ids.
    """

    def __init__(self, users: np.ndarray, targets: list[np.ndarray], known: UserHistories, history_len: int,
                 groups: dict[str, np.ndarray], batch_size: int, new_items: np.ndarray | None = None,
                 sequence_len: int | None = None, reported_users: np.ndarray | None = None) -> None:
        self.users, self.targets, self.known = users, targets, known
        self.reported_users = users if reported_users is None else reported_users
        self.history_len, self.groups, self.batch_size = history_len, groups, batch_size
        self.new_items = None if new_items is None else torch.from_numpy(new_items)
        self.sequence_len = sequence_len
        self._batches: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The batch of batch number ``key[1]`` (the same in every epoch), built on first use and kept: an
        evaluation then costs only the model's work."""
        b = key[1]
        if b not in self._batches:
            self._batches[b] = self._build(b)
        return self._batches[b]

    def _build(self, b: int) -> dict[str, torch.Tensor]:
        s = batch_bounds(b, self.batch_size, len(self.users))
        users = self.users[s]
        counts = self.known.counts()[users]
        targets = self.targets[s]
        width = max(1, max((len(t) for t in targets), default=1))
        padded = np.full((len(users), width), -1, dtype=np.int64)
        for row, t in enumerate(targets):
            padded[row, : len(t)] = t
        rows = np.repeat(np.arange(len(users)), counts)
        # every known item of every user in the batch, without a Python loop over users
        starts = np.repeat(self.known.indptr[users] - (np.cumsum(counts) - counts), counts)
        cols = self.known.items[starts + np.arange(len(rows))]
        batch = {
            "users": torch.from_numpy(self.reported_users[s]),
            "targets": torch.from_numpy(padded),
            "history": torch.from_numpy(self.known.recent(users, counts, self.history_len)),
            "exclude_rows": torch.from_numpy(rows),
            "exclude_cols": torch.from_numpy(cols),
            **{f"group_{name}": torch.from_numpy(mask[users]) for name, mask in self.groups.items()},
            **({} if self.new_items is None else {"new_items": self.new_items}),
        }
        if self.sequence_len is not None:
            batch["sequence"] = torch.from_numpy(self.known.recent(users, counts, self.sequence_len))
        return batch
