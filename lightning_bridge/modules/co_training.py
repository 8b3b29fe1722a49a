"""What ties the two side models together beyond the shared tables: the text anchor and mutual learning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from lightning_bridge.modules.domain_recommender import DomainRecommender
from lightning_bridge.modules.id_tokens import ITEM
from lightning_bridge.modules.lm_recommender import LMRecommender


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
                queries[ids] = lm.network.out_proj(states).float()
            return cls(epoch, queries)
        has_text = [i for i, text in enumerate(lm.prompts.item_texts) if text] if lm.prompts else []
        if has_text:
            ids = torch.tensor(has_text, device=lm.device)
            queries[ids] = lm.encode_texts(ITEM, ids).float()
        return cls(epoch, queries)

    def loss(self, items: torch.Tensor, lm: LMRecommender) -> torch.Tensor:
        """The LM's item-text cross-entropy over the catalogue with these queries held fixed: only
        InfoSharing's item rows receive gradients."""
        queries = self.queries.to(items.device)[items]
        return F.cross_entropy(lm.network.score_queries(queries, lm.info.item_vectors()).float(), items)


class MutualLearning:
    """KL between the two models' score distributions over the same items.

    On an LM step both models score the LM batch's users: the LM learns from the domain model's (detached)
    distribution, and that LM distribution is kept as the teacher for the following domain steps, which pull
    the domain model's scores for the same users towards it. ``direction`` keeps one of the two halves.
    """

    def __init__(self, temperature: float, direction: Literal["both", "domain_to_lm", "lm_to_domain"],
                 scope: Literal["catalogue", "batch"]) -> None:
        self.temperature, self.direction, self.scope = temperature, direction, scope
        self._teacher: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None

    def lm_step(self, part: dict[str, torch.Tensor], lm: LMRecommender,
                domain: DomainRecommender) -> torch.Tensor | None:
        """The LM's KL towards the domain model on its batch (None: this direction is off)."""
        users = part["users"]
        columns = part["targets"][:, 0].unique() if self.scope == "batch" else None
        lm_scores = lm.scores(part)
        with torch.no_grad():
            domain_scores = domain.scores({"users": users.to(lm_scores.device)})
        if columns is not None:
            lm_scores, domain_scores = lm_scores[:, columns], domain_scores[:, columns]
        self._teacher = (users, columns, lm_scores.detach())
        if self.direction == "lm_to_domain":
            return None
        return _kl(domain_scores, lm_scores, self.temperature)

    def domain_step(self, domain: DomainRecommender, device: torch.device) -> torch.Tensor | None:
        """The domain model's KL towards the latest LM teacher (None: no teacher yet, or this direction is off)."""
        if self._teacher is None or self.direction == "domain_to_lm":
            return None
        users, columns, teacher = self._teacher
        student = domain.scores({"users": users.to(device)})
        return _kl(teacher, student if columns is None else student[:, columns], self.temperature)


def _kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened score distributions, averaged over rows."""
    return F.kl_div(F.log_softmax(student_logits.float() / temperature, -1),
                    F.log_softmax(teacher_logits.float() / temperature, -1), log_target=True,
                    reduction="batchmean")
