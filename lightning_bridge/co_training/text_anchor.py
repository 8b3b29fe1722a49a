"""What ties the two side models together beyond the shared tables: the text anchor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_bridge.modules.lm.id_tokens import ITEM
from lightning_bridge.modules.lm.recommender import LMRecommender


@dataclass
class TextAnchor:
    """The LM's text representation of every item (zeros where an item has no text), encoded in full at
    ``epoch`` and refreshed item by item as the LM's item-text task reads them."""

    epoch: int
    queries: torch.Tensor

    def update(self, items: torch.Tensor, queries: torch.Tensor) -> None:
        self.queries[items.to(self.queries.device)] = queries.to(self.queries)

    @classmethod
    def from_lm(cls, lm: LMRecommender, epoch: int,
                pooled: tuple[torch.Tensor, torch.Tensor] | None = None) -> TextAnchor:
        """Encodes every item's text with the LM (in eval mode, without gradients), or projects ``pooled``:
        the items with text and the LM's pooled states of them, already encoded now."""
        queries = torch.zeros(lm.info.num_items, lm.info.dim, device=lm.device)
        if pooled is not None:
            ids, states = pooled
            with torch.no_grad():
                queries[ids] = lm.project(states).float()
            return cls(epoch, queries)
        ids = lm.items_with_text()
        if len(ids):
            queries[ids] = lm.encode_texts(ITEM, ids).float()
        return cls(epoch, queries)

    def loss(self, items: torch.Tensor, lm: LMRecommender) -> torch.Tensor:
        """The LM's item-text cross-entropy over the catalogue with these queries held fixed: only
        InfoSharing's item rows receive gradients."""
        queries = self.queries.to(items.device)[items]
        return F.cross_entropy(lm.network.score_queries(queries, lm.info.item_vectors()).float(), items)
