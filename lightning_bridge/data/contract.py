"""The contract between data and models, both ways: what a model reads from the data when it attaches, and
what a model tells the data module to build for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from lightning_bridge.data.interactions import Interactions

# One recommender of a co-training pair, and the kind of training batch it learns from.
Side = Literal["domain", "lm"]


class RecommenderData(Protocol):
    """Everything a side model reads from the data (``DomainRecommender.attach``, ``LMRecommender.attach``)."""

    @property
    def num_users(self) -> int: ...

    @property
    def num_items(self) -> int: ...

    @property
    def interactions(self) -> Interactions: ...

    @property
    def item_text(self) -> list[str | None]: ...

    @property
    def user_text(self) -> list[str | None]: ...

    def train_graph(self) -> tuple[np.ndarray, np.ndarray]: ...

    def item_popularity(self) -> np.ndarray: ...

    def recent_training_items(self, length: int) -> np.ndarray: ...


@dataclass(frozen=True)
class DataNeeds:
    """What a model tells the data module it serves to build (``RecDataModule.connect``, from the model's
    ``setup``): its training batch kinds, in this order (one kind: plain batches; several: a dict of one batch
    of each per step), and how many recent items its domain model reads (None: it reads no sequences)."""

    train_batch_kinds: tuple[Side, ...] = ("domain",)
    sequence_len: int | None = None


def connect_data(data: Any, needs: DataNeeds) -> None:
    """Tells ``data`` (the trainer's data module, if any) what the model needs; a data module of another kind
    (a user's own) is left as it is."""
    if hasattr(data, "connect"):
        data.connect(needs)


def check_sizes(data: RecommenderData | None, num_users: int, num_items: int, model: str) -> None:
    """A model built for one catalogue must not attach to data of another size."""
    if data is None:
        raise RuntimeError(f"{model} needs a lightning_bridge DataModule (it reads the data at setup)")
    if (data.num_users, data.num_items) != (num_users, num_items):
        raise ValueError(f"the data has {data.num_users} users and {data.num_items} items but "
                         f"the model was built for {num_users} and {num_items}")
