"""DomainRecommender: a domain encoder over InfoSharing's tables, its training loss and its full-ranking scores."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_bridge.data.contract import RecommenderData, check_sizes
from lightning_bridge.modules.domain.encoders import MF, LightGCN
from lightning_bridge.modules.domain.ncf import NeuMF
from lightning_bridge.modules.domain.sasrec import SASRec, check_histories, warn_about_order
from lightning_bridge.modules.info_sharing import InfoSharing
from lightning_bridge.modules.rows import gather_rows

Encoder = Literal["lightgcn", "mf", "ncf", "sasrec"]
Loss = Literal["bpr", "log", "ce", "bce"]
# the losses each encoder trains with, its default first
LOSSES: dict[str, tuple[str, ...]] = {"lightgcn": ("bpr",), "mf": ("bpr",), "ncf": ("log", "bpr"),
                                      "sasrec": ("ce", "bce")}


def build_encoder(name: Encoder, dim: int, num_layers: int, mlp_layers: tuple[int, ...] | None, max_len: int,
                  num_blocks: int, num_heads: int, dropout: float, isolated_nodes: str = "layer_mean",
                  dropped_items: str = "propagated") -> nn.Module:
    """The domain encoder a config names (DomainModule's arguments say what each setting does)."""
    if name == "lightgcn":
        return LightGCN(num_layers, isolated_nodes, dropped_items)
    if name == "mf":
        return MF()
    if name == "ncf":
        return NeuMF(dim, mlp_layers, dropout)
    return SASRec(dim, max_len, num_blocks, num_heads, dropout)


class DomainRecommender(nn.Module):
    """The domain model's maths: ``loss(batch)`` for training, ``scores(batch)`` (float32, B x num_items) for
    ranking, and the propagated vectors kept for a whole evaluation (``freeze_vectors``)."""

    def __init__(self, info: InfoSharing, encoder: nn.Module, loss_kind: str, reg_weight: float) -> None:
        super().__init__()
        self.info, self.encoder = info, encoder
        self.loss_kind, self.reg_weight = loss_kind, reg_weight
        # SASRec's input when a batch has no sequence of its own: each user's most recent training items, set
        # by attach
        self._train_sequences: torch.Tensor | None = None
        self._frozen_vectors: tuple[torch.Tensor, torch.Tensor] | None = None

    def attach(self, data: RecommenderData | None) -> None:
        """Reads the training graph (or SASRec's sequences); checks that the data fits the tables."""
        check_sizes(data, self.info.num_users, self.info.num_items, "DomainModule")
        if isinstance(self.encoder, SASRec):
            warn_about_order(data.interactions.users, data.interactions.timestamps)
            sequences = data.recent_training_items(self.encoder.max_len)
            check_histories(sequences, data.interactions.user_ids)
            self._train_sequences = torch.from_numpy(sequences)
        elif not isinstance(self.encoder, NeuMF):
            self.encoder.set_graph(*data.train_graph(), self.info.num_users, self.info.num_items)

    @property
    def sequence_len(self) -> int | None:
        """Most recent items the encoder reads per user (the data module then serves sequences), or None."""
        return self.encoder.max_len if isinstance(self.encoder, SASRec) else None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ranking loss plus L2 on the batch's ego embeddings; the graph is propagated once per batch."""
        if isinstance(self.encoder, SASRec):
            return self._next_item_loss(batch)
        users, pos, neg = batch["users"], batch["pos"], batch["neg"]
        if self.info.sparse:  # MF, NeuMF: the vectors are the ego rows, looked up with sparse gradients
            user_rows, pos_rows = self.info.user_rows(users), self.info.item_rows(pos)
            neg_rows = self.info.item_rows(neg)
            ego = user_rows.square().sum() + pos_rows.square().sum() + neg_rows.square().sum()
        else:
            user_vec, item_vec = self.encoder(self.info)
            items = torch.cat([pos, neg])
            # one gather of both item sets: its backward scatters into one dense (items x dim) gradient, not two
            user_rows, (pos_rows, neg_rows) = gather_rows(user_vec, users), gather_rows(item_vec, items).split(len(pos))
            ego = _squared_rows(self.info.user.weight, users) + _squared_rows(self.info.item.weight, items)
        if isinstance(self.encoder, NeuMF):
            ranking = self.encoder.loss(user_rows, pos_rows, neg_rows, self.loss_kind)
        else:  # softplus(-(s_pos - s_neg)) with one product instead of two
            ranking = F.softplus((user_rows * (neg_rows - pos_rows)).sum(-1)).mean()
        return ranking + self.reg_weight * ego / (2 * len(users))

    def _next_item_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SASRec's loss at every target of the batch's windows, plus L2 on the target items' rows."""
        items, targets = self.info.item_vectors(), batch["targets"]
        ranking = self.encoder.loss(items, batch["inputs"], targets, batch["neg"], self.loss_kind)
        present = targets[targets >= 0]
        return ranking + self.reg_weight * _squared_rows(items, present) / (2 * len(present))

    def freeze_vectors(self) -> None:
        """Propagates once and keeps the result, so evaluation does not repeat it for every user batch."""
        with torch.no_grad():
            self._frozen_vectors = self.encoder(self.info)

    def release_vectors(self) -> None:
        self._frozen_vectors = None

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, num_items) float32 scores of every item for the batch's ``users`` (new users folded in from
        their ``history``: ``_user_rows``). SASRec reads the batch's ``sequence`` (B x max_len), or when it
        has none the users' most recent training items."""
        users, sequence = batch["users"], batch.get("sequence")
        user_vec, item_vec = self._frozen_vectors or self.encoder(self.info)
        if isinstance(self.encoder, SASRec):
            if sequence is None:
                if self._train_sequences is None:
                    raise RuntimeError("DomainRecommender.attach must run before SASRec can score users")
                sequence = self._train_sequences[users.cpu()]
            return self.encoder.scores(item_vec, sequence.to(item_vec.device)).float()
        rows = _user_rows(user_vec, item_vec, users, batch.get("history"))
        if isinstance(self.encoder, NeuMF):
            return self.encoder.scores(rows, item_vec).float()
        return (rows @ item_vec.T).float()


def _user_rows(user_vec: torch.Tensor, item_vec: torch.Tensor, users: torch.Tensor,
               history: torch.Tensor | None) -> torch.Tensor:
    """The users' vectors. A new user (negative id: a prediction request's history, ``data/requests.py``) is
    folded in as the mean of their history items' vectors, the encoder's own item vectors (LightGCN's
    propagated ones; NeuMF's shared rows, which both towers then read as the user's): a user who likes what
    those items are like."""
    new = users < 0
    if not bool(new.any()):
        return gather_rows(user_vec, users)
    if history is None:
        raise ValueError("a new user (negative id) needs a history in the batch to be folded in from")
    rows = gather_rows(user_vec, users.clamp(min=0))
    items = history[new].to(item_vec.device)
    present = (items >= 0).to(item_vec.dtype).unsqueeze(-1)
    folded = (gather_rows(item_vec, items.clamp(min=0)) * present).sum(1) / present.sum(1).clamp_min(1)
    rows[new] = folded.to(rows.dtype)
    return rows


def _squared_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table[rows].square().sum()``. When the table is not much larger than the batch, weighting each row's
    squared norm by its count in ``rows`` is the same sum without gathering (and scattering back in backward)
    a (len(rows), dim) copy: about 40% of a LightGCN step's non-propagation time on MovieLens-100K."""
    if table.shape[0] > 2 * rows.numel():
        return gather_rows(table, rows).square().sum()
    counts = torch.bincount(rows, minlength=table.shape[0]).to(table.dtype)
    return counts @ table.square().sum(1)
