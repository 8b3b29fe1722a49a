"""ID tokens: the LM reads InfoSharing rows as the input vectors of placeholder tokens, and scores items.

One placeholder token stands for every user and item; its input vector is replaced by a learned projection of
the InfoSharing row it names. No per-ID vocabulary, no embedding resize, so LoRA adapters reload cleanly.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lightning_bridge.modules.info_sharing import InfoSharing

Pooling = Literal["last", "first", "mean"]
Scoring = Literal["dot", "cosine"]
USER, ITEM = 0, 1


class IDTokenInjector(nn.Module):
    """Projects InfoSharing rows into the LM's input space and writes them at the placeholder positions."""

    def __init__(self, info_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.user_proj = nn.Linear(info_dim, hidden_size)
        self.item_proj = nn.Linear(info_dim, hidden_size)

    def forward(self, token_embeds: Tensor, id_positions: Tensor, id_kind: Tensor, id_index: Tensor,
                info: InfoSharing) -> Tensor:
        """`token_embeds` (B, L, H) with the (B, L) bool `id_positions` set to projected InfoSharing rows.

        `id_kind` (B, L): 0 = user, 1 = item; `id_index` (B, L): the row in that table. Both are read only
        at placeholder positions; a placeholder with another kind keeps its token embedding.
        """
        out = token_embeds
        for kind, rows, proj in ((USER, info.user_rows, self.user_proj), (ITEM, info.item_rows, self.item_proj)):
            where = id_positions & (id_kind == kind)
            out = out.index_put((where,), proj(rows(id_index[where])).to(out.dtype))
        return out


class IDTokenLM(nn.Module):
    """A backbone that reads a prompt with ID tokens and scores every item of InfoSharing's item table."""

    def __init__(self, backbone: nn.Module, info_dim: int, id_token_id: int, *, is_decoder: bool,
                 pooling: Pooling | None = None, scoring: Scoring = "dot", temperature: float = 1.0) -> None:
        """`pooling` defaults to "last" for decoders (only the last token has seen the whole prompt) and to
        "mean" for encoders (how sentence-transformers models such as MiniLM were trained).

        `scoring` "dot" is the domain model's own score; "cosine" normalises both sides first, which bounds
        the logits, so `temperature` (which divides the scores) then sets how peaked the softmax can get.
        """
        super().__init__()
        pooling = pooling or ("last" if is_decoder else "mean")
        if pooling not in ("last", "first", "mean"):
            raise ValueError(f"pooling must be 'last', 'first' or 'mean', got {pooling!r}")
        if scoring not in ("dot", "cosine"):
            raise ValueError(f"scoring must be 'dot' or 'cosine', got {scoring!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        hidden_size = backbone.get_input_embeddings().embedding_dim
        self.backbone, self.id_token_id, self.pooling = backbone, id_token_id, pooling
        self.scoring, self.temperature = scoring, temperature
        self.injector = IDTokenInjector(info_dim, hidden_size)
        self.out_proj = nn.Linear(hidden_size, info_dim)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, id_kind: Tensor, id_index: Tensor,
                info: InfoSharing, project: bool = True) -> Tensor:
        """The pooled prompt representation in InfoSharing's space, (B, info_dim); with ``project`` False the
        pooled final hidden state itself (``pooled``). Every use goes through here, so that a sharded
        network (FSDP2, whose hooks wrap ``forward`` only) gathers its weights first."""
        pooled = self.pooled(input_ids, attention_mask, id_kind, id_index, info)
        return self.out_proj(pooled) if project else pooled

    def pooled(self, input_ids: Tensor, attention_mask: Tensor, id_kind: Tensor, id_index: Tensor,
               info: InfoSharing) -> Tensor:
        """The pooled final hidden state, (B, hidden), in the output projection's dtype."""
        id_positions = input_ids == self.id_token_id
        # The placeholder id may lie outside the (unresized) vocabulary; its vector is overwritten anyway.
        safe_ids = input_ids.masked_fill(id_positions, 0)
        embeds = self.backbone.get_input_embeddings()(safe_ids)
        embeds = self.injector(embeds, id_positions, id_kind, id_index, info)
        hidden = self.backbone(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        return _pool(hidden, attention_mask, self.pooling).to(self.out_proj.weight.dtype)

    def scores(self, input_ids: Tensor, attention_mask: Tensor, id_kind: Tensor, id_index: Tensor,
               info: InfoSharing, against: int = ITEM) -> Tensor:
        """Scores against every row of InfoSharing's item table, (B, num_items): full-catalogue ranking, as the
        domain model does (or against the user table, ``against=USER``, for the user-text task)."""
        query = self(input_ids, attention_mask, id_kind, id_index, info)
        return self.score_queries(query, info.item_vectors() if against == ITEM else info.user.weight)

    def score_queries(self, query: Tensor, table: Tensor) -> Tensor:
        """(B, rows) scores of pooled, projected prompts against a table, by this model's scoring rule."""
        if self.scoring == "cosine":
            query, table = nn.functional.normalize(query, dim=-1), nn.functional.normalize(table, dim=-1)
        return query @ table.T / self.temperature


def _pool(hidden: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    mask = attention_mask.bool()
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
    if pooling == "first":  # first non-padding token, so left padding works too
        return hidden[rows, mask.int().argmax(1)]
    # last non-padding token: argmax finds the first 1 of the flipped mask, for left or right padding
    return hidden[rows, mask.shape[1] - 1 - mask.flip(1).int().argmax(1)]
