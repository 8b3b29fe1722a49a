"""Interactions with dense ids, and the train / validation / test splits of the evaluation protocol."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lightning_bridge.data.ids import check_ids
from lightning_bridge.data.sources import Features, RawData
from lightning_bridge.data.tables import DataFormatError

log = logging.getLogger(__name__)


@dataclass
class Interactions:
    """Implicit-feedback interactions over dense ids ``0..num_users-1`` and ``0..num_items-1``.

    ``user_ids[u]`` and ``item_ids[i]`` map dense ids back to the raw ids of the source files. Timestamps
    keep the source's exact values (int64, or float64 where the source has fractions). ``item_features`` and
    ``user_features`` are the metadata files' own columns, by raw id, for the RecBole export.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_text: list[str | None]
    item_titles: list[str | None]
    user_text: list[str | None]
    item_features: Features = field(default_factory=Features)
    user_features: Features = field(default_factory=Features)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_raw(cls, raw: RawData, rating_threshold: float | None = None, min_user_interactions: int = 0,
                 min_item_interactions: int = 0) -> Interactions:
        """Keeps interactions rated at least ``rating_threshold`` (all when None), drops repeated
        (user, item) pairs keeping the earliest, keeps the k-core (every user with at least
        ``min_user_interactions`` and every item with at least ``min_item_interactions`` of the kept
        interactions, see :func:`k_core`), and assigns dense ids in the sorted order of the raw ids."""
        keep = np.ones(len(raw.users), dtype=bool)
        if rating_threshold is not None:
            keep = raw.ratings >= rating_threshold
            log.info("%s: rating_threshold=%s kept %d of %d interactions", raw.source, rating_threshold,
                     keep.sum(), len(keep))
        if not keep.any():
            raise DataFormatError(f"{raw.source}: no interactions left after filtering "
                                  f"(rating_threshold={rating_threshold}); expected at least one")
        users_raw, items_raw = raw.users[keep], raw.items[keep]
        user_ids, users = np.unique(users_raw, return_inverse=True)
        item_ids, items = np.unique(items_raw, return_inverse=True)
        # the id rule, whatever the reader (file readers name the line already; this names the source)
        check_ids([str(u) for u in user_ids], "user id", raw.source)
        check_ids([str(i) for i in item_ids], "item id", raw.source)
        ratings, timestamps = raw.ratings[keep], raw.timestamps[keep]

        order = np.lexsort((np.arange(len(users)), timestamps, users))
        pair = users[order].astype(np.int64) * len(item_ids) + items[order]
        _, first = np.unique(pair, return_index=True)
        if len(first) < len(pair):
            log.info("%s: dropped %d repeated (user, item) interactions, kept the earliest", raw.source,
                     len(pair) - len(first))
        rows = np.sort(order[first])
        if min_user_interactions > 1 or min_item_interactions > 1:
            rows = rows[k_core(users[rows], items[rows], min_user_interactions, min_item_interactions, raw.source)]
            kept_users, kept_items = np.unique(users[rows]), np.unique(items[rows])
            users, user_ids = np.searchsorted(kept_users, users), user_ids[kept_users]  # dense again
            items, item_ids = np.searchsorted(kept_items, items), item_ids[kept_items]
        return cls(
            users=users[rows].astype(np.int64), items=items[rows].astype(np.int64),
            ratings=ratings[rows].astype(np.float32), timestamps=timestamps[rows],
            user_ids=user_ids.astype(str), item_ids=item_ids.astype(str),
            item_text=[raw.item_text.get(i) for i in item_ids],
            item_titles=[raw.item_titles.get(i) for i in item_ids],
            user_text=[raw.user_text.get(u) for u in user_ids],
            item_features=raw.item_features.subset(item_ids.astype(str)),
            user_features=raw.user_features.subset(user_ids.astype(str)),
        )

    def chronological_order(self) -> np.ndarray:
        """Row indices sorted by user, then time, then file order (a stable tie-break)."""
        return np.lexsort((np.arange(len(self.users)), self.timestamps, self.users))


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int, source: str = "the data"
           ) -> np.ndarray:
    """Mask of the interactions in the k-core: users with fewer than ``min_user`` interactions and items with
    fewer than ``min_item`` are dropped, again and again until none is left (dropping an item can take a user
    below the threshold and the other way round), as RecBole's ``user_inter_num_interval`` /
    ``item_inter_num_interval`` and the 5-core Amazon datasets of the literature."""
    keep = np.ones(len(users), dtype=bool)
    rounds = 0
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        short = keep & ((user_counts[users] < min_user) | (item_counts[items] < min_item))
        if not short.any():
            break
        keep &= ~short
        rounds += 1
    log.info("%s: the %d-core of users and %d-core of items kept %d of %d interactions (%d rounds)", source,
             min_user, min_item, keep.sum(), len(keep), rounds)
    if not keep.any():
        raise DataFormatError(f"{source}: no interactions left after k-core filtering (min_user_interactions="
                              f"{min_user}, min_item_interactions={min_item}); lower them")
    return keep


@dataclass
class Split:
    """Row indices into an :class:`Interactions` for each part of the split."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def leave_one_out(inter: Interactions) -> Split:
    """Per user, by time: the last interaction is the test item, the one before it the validation item.

    Every user needs at least three interactions (one to train on); fewer is an error, not a silent drop,
    because it changes which users are evaluated.
    """
    order = inter.chronological_order()
    users = inter.users[order]
    counts = np.bincount(users, minlength=inter.num_users)
    short = np.flatnonzero(counts < 3)
    if len(short):
        examples = ", ".join(inter.user_ids[short[:5]])
        raise DataFormatError(
            f"leave-one-out split needs at least 3 interactions per user (train, validation, test); "
            f"{len(short)} users have fewer (raw ids: {examples}{', ...' if len(short) > 5 else ''}). "
            f"Filter them from the data or set data.split=ratio")
    ends = np.cumsum(counts)
    test = order[ends - 1]
    valid = order[ends - 2]
    train_mask = np.ones(len(order), dtype=bool)
    train_mask[ends - 1] = False
    train_mask[ends - 2] = False
    return Split(train=np.sort(order[train_mask]), valid=np.sort(valid), test=np.sort(test))


def ratio_split(inter: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                order: Literal["time", "random"] = "time", seed: int = 0) -> Split:
    """Per user, the first ``ratios[0]`` of interactions train, the next validate, the rest test
    (RecBole's ``RS`` split grouped by user; by time or in a seeded random order)."""
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"data.ratios must be three non-negative numbers summing to 1, got {ratios}")
    if order == "time":
        rows = inter.chronological_order()
    else:
        shuffled = np.random.default_rng(seed).permutation(len(inter.users))
        rows = shuffled[np.argsort(inter.users[shuffled], kind="stable")]
    counts = np.bincount(inter.users[rows], minlength=inter.num_users)
    starts = np.cumsum(counts) - counts
    position = np.arange(len(rows)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    # RecBole's rounding: split sizes are int(ratio * n) for validation and test, the rest train.
    n_valid = (ratios[1] * n).astype(np.int64)
    n_test = (ratios[2] * n).astype(np.int64)
    n_train = n - n_valid - n_test
    part = np.where(position < n_train, 0, np.where(position < n_train + n_valid, 1, 2))
    for k, name in ((1, "validation"), (2, "test")):
        if ratios[k] > 0 and not (part == k).any():
            raise DataFormatError(
                f"data.split=ratio with data.ratios={tuple(ratios)} leaves the {name} part empty: a user gets "
                f"int({ratios[k]} * n) {name} interactions, which is 0 for every user here (the most active has "
                f"{counts.max()} interactions). Use data.split=leave_one_out, or a larger {name} ratio")
    return Split(train=np.sort(rows[part == 0]), valid=np.sort(rows[part == 1]), test=np.sort(rows[part == 2]))


def keep_last_per_user(inter: Interactions, rows: np.ndarray, k: int) -> np.ndarray:
    """The last ``k`` of each user's ``rows`` by time (the sparsifier: a sparse regime made from any dataset,
    validation and test untouched)."""
    if k < 1:
        raise ValueError(f"data.max_train_per_user must be at least 1, got {k}")
    order = rows[np.lexsort((rows, inter.timestamps[rows], inter.users[rows]))]
    counts = np.bincount(inter.users[order], minlength=inter.num_users)
    from_end = np.repeat(np.cumsum(counts), counts) - np.arange(len(order))  # 1 for each user's last row
    return np.sort(order[from_end <= k])


def choose_new_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the items held out of training for the item cold-start protocol: a seeded random
    ``fraction`` of the catalogue (at least one item, never all)."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.new_item_fraction must be in (0, 1), got {fraction}")
    count = min(max(1, round(fraction * num_items)), num_items - 1)
    mask = np.zeros(num_items, dtype=bool)
    mask[np.random.default_rng([seed, 7]).permutation(num_items)[:count]] = True
    return mask
