"""SASRec (Kang & McAuley, 2018): causal self-attention over a user's most recent items, with InfoSharing's
item table as both the input embeddings and the output weights."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_bridge.modules.rows import gather_rows

SASRecLoss = Literal["ce", "bce"]
# histories encoded together when scoring: sorted by length, each chunk is cut to its longest one
_SCORE_CHUNK = 128


class _Block(nn.Module):
    """Pre-norm causal self-attention and a position-wise feed-forward layer, each residual."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``last_only``: only the last position's output (every position is still a key), all ranking needs
        from the last block; about half of a block's work."""
        b, dim = x.shape[0], x.shape[2]
        h = self.attn_norm(x)
        if last_only:
            x, mask = x[:, -1:], mask[..., -1:, :]
            q = F.linear(h[:, -1:], self.qkv.weight[:dim], self.qkv.bias[:dim])
            k, v = F.linear(h, self.qkv.weight[dim:], self.qkv.bias[dim:]).chunk(2, -1)
        else:
            q, k, v = self.qkv(h).chunk(3, -1)
        q, k, v = (t.view(b, -1, self.num_heads, dim // self.num_heads).transpose(1, 2) for t in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.attn_out(attn.transpose(1, 2).reshape(b, -1, dim)))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class SASRec(nn.Module):
    """The sequence encoder: item rows plus learned positions, causal attention blocks, a final norm.

    Sequences are left-padded with -1, most recent last, so position ``max_len - 1`` always means "the most
    recent item" whatever the history's length. A position attends to itself and to earlier real items
    (padding is never a key), so no row of the attention is empty. Users enter only through their history:
    InfoSharing's user table is not read.

    Args:
        dim: width of InfoSharing's rows.
        max_len: most recent items read.
        num_blocks: attention blocks.
        num_heads: attention heads (must divide ``dim``).
        dropout: on the inputs, the attention weights and the feed-forward layers.
    """

    def __init__(self, dim: int, max_len: int = 50, num_blocks: int = 2, num_heads: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if max_len < 1:
            raise ValueError(f"model.max_len must be at least 1 (SASRec reads the most recent max_len items), "
                             f"got {max_len}")
        if num_blocks < 1:
            raise ValueError(f"model.num_blocks must be at least 1, got {num_blocks}")
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"model.num_heads must divide embedding_dim={dim}, got {num_heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.max_len = max_len
        self.position = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, num_heads, dropout) for _ in range(num_blocks))
        self.norm = nn.LayerNorm(dim)

    def forward(self, info) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared tables as they are (the item table is read per sequence; the user table not at all)."""
        return info()

    def states(self, item_table: torch.Tensor, sequences: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, dim) hidden state after each position of (B, L) left-padded item sequences, L <= max_len;
        (B, 1, dim), the last position's, with ``last_only``."""
        length = sequences.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequences of {length} items are longer than model.max_len={self.max_len}")
        real = sequences >= 0
        x = gather_rows(item_table, sequences.clamp(min=0)) + self.position.weight[self.max_len - length:]
        x = self.input_dropout(x) * real[..., None]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        self_only = torch.eye(length, dtype=torch.bool, device=x.device)
        allowed = (causal & (real[:, None, :] | self_only))[:, None]  # (B, 1, L, L)
        # as an additive mask, built once for all blocks (a boolean one is converted in every block)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, float("-inf"))
        for i, block in enumerate(self.blocks):
            if last_only and i == len(self.blocks) - 1:
                return self.norm(block(x, mask, last_only=True))
            x = block(x, mask) * real[..., None]
        return self.norm(x)

    def scores(self, item_table: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """(B, num_items): the last position's state against every item row.

        The histories are encoded shortest first, ``_SCORE_CHUNK`` at a time, each chunk cut to its longest
        history: the padding columns it drops are never keys and never the last position, so the states are
        the same, without the work of encoding padding (a sixth of the positions on MovieLens-100K)."""
        lengths = (sequences >= 0).sum(1)
        order = torch.argsort(lengths, stable=True)
        last = torch.empty(len(sequences), item_table.shape[1], dtype=item_table.dtype, device=item_table.device)
        for chunk in order.split(_SCORE_CHUNK):
            longest = max(1, int(lengths[chunk].max()))
            last[chunk] = self.states(item_table, sequences[chunk, -longest:], last_only=True)[:, -1]
        return last @ item_table.T

    def loss(self, item_table: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
             kind: SASRecLoss) -> torch.Tensor:
        """Next-item loss at every position with a target (-1: none): cross-entropy over the whole catalogue,
        or binary cross-entropy of the target against one sampled negative."""
        hidden = self.states(item_table, inputs)
        has_target = targets >= 0
        hidden, targets = hidden[has_target], targets[has_target]
        if kind == "ce":
            return F.cross_entropy(hidden @ item_table.T, targets)
        s_pos = (hidden * gather_rows(item_table, targets)).sum(-1)
        s_neg = (hidden * gather_rows(item_table, negatives[has_target])).sum(-1)
        return (F.softplus(-s_pos) + F.softplus(s_neg)).mean()


def warn_about_order(users: np.ndarray, timestamps: np.ndarray) -> None:
    """A sequential model reads each user's interactions in time order; say how that order was decided where
    the timestamps do not decide it."""
    if len(timestamps) > 1 and bool(np.all(np.diff(timestamps) > 0)):
        warnings.warn("encoder=sasrec: the data has no timestamps (they rise with the file's rows, as the "
                      "readers fill them in when the column is missing); each user's history is read in the "
                      "order of the rows in the source file", UserWarning, stacklevel=3)
        return
    order = np.lexsort((timestamps, users))
    same = (np.diff(users[order]) == 0) & (np.diff(timestamps[order]) == 0)
    if same.any():
        tied_users = len(np.unique(users[order][1:][same]))
        warnings.warn(f"encoder=sasrec: {tied_users} users have interactions with equal timestamps; ties are "
                      f"broken by the order of the rows in the source file (earlier row = earlier), the same "
                      f"order the split uses", UserWarning, stacklevel=3)


def check_histories(sequences: np.ndarray, user_ids: np.ndarray) -> None:
    """Every user is read only through their history, so each needs at least one training item."""
    empty = np.flatnonzero((sequences < 0).all(1))
    if len(empty):
        examples = ", ".join(map(str, user_ids[empty[:5]]))
        raise ValueError(f"encoder=sasrec reads a user only through their training history, but {len(empty)} "
                         f"users have no training interaction (raw ids: {examples}"
                         f"{', ...' if len(empty) > 5 else ''}); use data.split=leave_one_out, or filter users "
                         f"with fewer than 3 interactions from the data")

