"""One LightningDataModule per dataset; they share the split, the batch datasets and the loaders."""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np

from lightning_bridge.data.batches import EvalUsers, UserHistories
from lightning_bridge.data.contract import DataNeeds
from lightning_bridge.data.groups import lowest_fifth
from lightning_bridge.data.interactions import (
    Interactions,
    Split,
    choose_new_items,
    keep_last_per_user,
    leave_one_out,
    ratio_split,
)
from lightning_bridge.data.loaders import StageLoaders
from lightning_bridge.data.parsed_cache import cached_read
from lightning_bridge.data.recbole_export import write_recbole_benchmark
from lightning_bridge.data.requests import PredictionRequest
from lightning_bridge.data.sources import RawData
from lightning_bridge.run.downloads import DEFAULT_CACHE

log = logging.getLogger(__name__)

class RecDataModule(StageLoaders, L.LightningDataModule):
    """Loads a dataset once, splits it by the evaluation protocol and serves every batch kind.

    Training batches are what the model asks for when it connects (``connect(DataNeeds)``, from its
    ``setup``; ``data/contract.py``): BPR triples (``"domain"``), next-item LM examples (``"lm"``), or a dict
    of both for co-training, where each step uses one of the two (BridgeModule's docstring says which). A
    domain model that reads histories (``DataNeeds.sequence_len``, e.g. SASRec's ``max_len``) gets training
    windows of item sequences as its ``"domain"`` batches, and a ``sequence`` in every evaluation batch.
    Models read the data through ``RecommenderData`` (same file).

    Args:
        split: ``leave_one_out`` (per user by time: last item test, the one before validation) or ``ratio``.
        ratios: train / validation / test fractions per user for the ratio split.
        ratio_order: order in which the ratio split cuts each user's interactions.
        rating_threshold: keep interactions rated at least this (None: every rating is an interaction).
        min_user_interactions: k-core filtering: keep only users with at least this many interactions and
        min_item_interactions: items with at least this many, dropping both until none is left below (0: no
            filtering; applied after ``rating_threshold`` and the removal of repeated pairs).
        max_train_per_user: keep only each user's last k training interactions (a sparse regime made from
            any dataset; validation and test are untouched). None keeps them all.
        new_item_fraction: the item cold-start protocol: this seeded random fraction of the catalogue never
            appears in training (its training interactions are dropped); users whose validation or test item
            is new are reported as ``new_item_*`` (ranked among the new items only) and
            ``new_item_catalogue_*`` (over the whole catalogue). None: no new items.
        text_batch_size: items (and users, where the data has user text) per LM batch for the LM's text tasks.
        text_sampling_power: how strongly those items favour the rare: drawn with probability proportional to
            ``(training interactions + 1) ** -power`` (0: uniform over the catalogue).
        negatives: where BPR draws its negative items: ``all`` (the whole catalogue) or ``interacted`` (the
            items with at least one training interaction). With ``interacted``, an item nobody could have met
            in training (a new item) is never taught to the domain model as a dislike.
        batch_size: BPR triples per domain training batch.
        lm_batch_size: examples per LM training batch.
        eval_batch_size: users per validation / test / predict batch.
        history_len: most recent items an LM example or evaluated user carries as context.
        sequence_batch_size: windows (of up to ``sequence_len`` targets each) per training batch of a
            sequential domain model.
        lm_examples_per_user: cap on LM training examples per user per epoch.
        num_workers: DataLoader worker processes.
        seed: seeds the shuffling, the negatives and the LM examples (with the epoch), and a random ratio split;
            None takes the run's ``seed_everything``.
        cache_dir: where downloads and parsed data are cached.
        export_split_to: if set, writes the split as the RecBole dataset ``<name>-split`` into this folder
            (``data_path`` for RecBole; see ``recbole_export.write_recbole_benchmark``).
    """

    def __init__(self, split: Literal["leave_one_out", "ratio"] = "leave_one_out",
                 ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 ratio_order: Literal["time", "random"] = "time", rating_threshold: float | None = None,
                 max_train_per_user: int | None = None, new_item_fraction: float | None = None,
                 text_batch_size: int = 64, text_sampling_power: float = 0.0,
                 batch_size: int = 2048, lm_batch_size: int = 32, eval_batch_size: int = 256,
                 history_len: int = 20, lm_examples_per_user: int = 8, num_workers: int = 0, seed: int | None = None,
                 cache_dir: str = DEFAULT_CACHE, export_split_to: str | None = None,
                 sequence_batch_size: int = 64, negatives: Literal["all", "interacted"] = "all",
                 min_user_interactions: int = 0, min_item_interactions: int = 0) -> None:
        super().__init__()
        if negatives not in ("all", "interacted"):
            raise ValueError(f"data.negatives must be 'all' or 'interacted', got {negatives!r}")
        if split not in ("leave_one_out", "ratio"):
            raise ValueError(f"data.split must be 'leave_one_out' or 'ratio', got {split!r}")
        for name, value in (("batch_size", batch_size), ("lm_batch_size", lm_batch_size),
                            ("eval_batch_size", eval_batch_size), ("history_len", history_len),
                            ("lm_examples_per_user", lm_examples_per_user),
                            ("sequence_batch_size", sequence_batch_size)):
            if value < 1:
                raise ValueError(f"data.{name} must be at least 1, got {value}")
        if max_train_per_user is not None and max_train_per_user < 1:
            raise ValueError(f"data.max_train_per_user must be at least 1 (or null), got {max_train_per_user}")
        if new_item_fraction is not None and not 0 < new_item_fraction < 1:
            raise ValueError(f"data.new_item_fraction must be in (0, 1) (or null), got {new_item_fraction}")
        if min(min_user_interactions, min_item_interactions) < 0:
            raise ValueError("data.min_user_interactions and data.min_item_interactions must be >= 0, got "
                             f"{min_user_interactions} and {min_item_interactions}")
        if text_batch_size < 0:
            raise ValueError(f"data.text_batch_size must be >= 0, got {text_batch_size}")
        self.save_hyperparameters()
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        self.hparams["seed"] = self.seed  # a checkpoint records the seed that cut its split, whoever chose it
        self.cache_dir = Path(os.path.expanduser(cache_dir))
        # built once per stage (and sequence length): every evaluation reuses its batches
        self._eval_datasets: dict[tuple[str, int | None], EvalUsers] = {}
        self._request: PredictionRequest | None = None
        self.needs = DataNeeds()  # what the model it serves reads; the model says so through connect()

    # ---- what each dataset provides -------------------------------------------------------------------
    def name(self) -> str:
        raise NotImplementedError

    def read(self) -> RawData:
        raise NotImplementedError

    def source_files(self) -> list[Path]:
        """Files whose contents key the parsed-data cache (empty: no caching)."""
        return []

    def reader_id(self) -> str:
        """What, besides the source files' contents, decides what ``read`` returns (the reader and its options):
        the rest of the parsed-data cache's key."""
        return f"{type(self).__qualname__}:{self.name()}"

    # ---- loading, once --------------------------------------------------------------------------------
    @cached_property
    def interactions(self) -> Interactions:
        h = self.hparams
        return Interactions.from_raw(self._cached_read(), h.rating_threshold, h.min_user_interactions,
                                     h.min_item_interactions)

    def _cached_read(self) -> RawData:
        files = self.source_files()
        if not files:
            return self.read()
        return cached_read(self.read, files, self.cache_dir / "parsed", self.reader_id())

    @cached_property
    def split(self) -> Split:
        h = self.hparams
        if h.split == "leave_one_out":
            split = leave_one_out(self.interactions)
        else:
            split = ratio_split(self.interactions, tuple(h.ratios), h.ratio_order, self.seed)
        train = split.train
        if self.new_items.any():
            train = train[~self.new_items[self.interactions.items[train]]]
        if h.max_train_per_user is not None:
            train = keep_last_per_user(self.interactions, train, h.max_train_per_user)
        split = Split(train=train, valid=split.valid, test=split.test)
        log.info("%s: %d users, %d items; %d train, %d validation, %d test interactions", self.name(),
                 self.num_users, self.num_items, len(split.train), len(split.valid), len(split.test))
        if h.export_split_to:
            write_recbole_benchmark(self.interactions, split, h.export_split_to, self.name())
        return split

    @cached_property
    def new_items(self) -> np.ndarray:
        """Boolean mask of the items held out of training (all False without the cold-start protocol)."""
        fraction = self.hparams.new_item_fraction
        if fraction is None:
            return np.zeros(self.num_items, dtype=bool)
        return choose_new_items(self.num_items, fraction, self.seed)

    # ---- what models read ------------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return self.interactions.num_users

    @property
    def num_items(self) -> int:
        return self.interactions.num_items

    @property
    def item_text(self) -> list[str | None]:
        return self.interactions.item_text

    @property
    def user_text(self) -> list[str | None]:
        return self.interactions.user_text

    def train_graph(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the training interactions: the edges of the domain model's graph."""
        rows = self.split.train
        return self.interactions.users[rows], self.interactions.items[rows]

    def recent_training_items(self, length: int) -> np.ndarray:
        """(num_users, length): each user's most recent training items, most recent last, left-padded -1."""
        train = self._histories(self.split.train)
        return train.recent(np.arange(self.num_users), train.counts(), length)

    def known_histories(self) -> UserHistories:
        """Every interaction of every user (training, validation and test): what predict reads and masks."""
        s = self.split
        return self._histories(s.train, s.valid, s.test)

    def _histories(self, *parts: np.ndarray) -> UserHistories:
        rows = np.concatenate(parts)
        i = self.interactions
        return UserHistories(i.users[rows], i.items[rows], i.timestamps[rows], self.num_users)

    @cached_property
    def sparse_users(self) -> np.ndarray:
        """Boolean mask of the sparsest fifth of users by number of training interactions."""
        counts = np.bincount(self.interactions.users[self.split.train], minlength=self.num_users)
        return lowest_fifth(np.arange(self.num_users), counts, self.num_users)

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item."""
        return np.bincount(self.interactions.items[self.split.train], minlength=self.num_items)

    # ---- raw ids, to and from the dense ones ----------------------------------------------------------
    @cached_property
    def _user_index(self) -> dict[str, int]:
        return {str(raw): i for i, raw in enumerate(self.interactions.user_ids)}

    @cached_property
    def _item_index(self) -> dict[str, int]:
        return {str(raw): i for i, raw in enumerate(self.interactions.item_ids)}

    def raw_user_id(self, user: int) -> str:
        """The raw id of a user, or a new user's label (negative ids: ``data/requests.py``)."""
        if user < 0:
            return self._request.new_users[-1 - user].label
        return str(self.interactions.user_ids[user])

    def raw_item_id(self, item: int) -> str:
        return str(self.interactions.item_ids[item])

    def item_title(self, item: int) -> str | None:
        return self.interactions.item_titles[item]
