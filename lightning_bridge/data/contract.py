"""The contract between data and models, both ways: what a model reads from the data when it attaches, and
what the data module reads from the model it serves."""

from __future__ import annotations

from typing import Literal, Protocol

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


class TrainingNeeds(Protocol):
    """What the data module reads from the model it serves: the training batch kinds, in this order (one
    kind: plain batches; several: a dict of one batch of each per step), and ``sequence_len`` on the domain
    model that reads histories (None: it reads none)."""

    train_batch_kinds: tuple[Side, ...]


def check_sizes(data: RecommenderData | None, num_users: int, num_items: int, model: str) -> None:
    """A model built for one catalogue must not attach to data of another size."""
    if data is None:
        raise RuntimeError(f"{model} needs a lightning_bridge DataModule (it reads the data at setup)")
    if (data.num_users, data.num_items) != (num_users, num_items):
        raise ValueError(f"the data has {data.num_users} users and {data.num_items} items but "
                         f"the model was built for {num_users} and {num_items}")
