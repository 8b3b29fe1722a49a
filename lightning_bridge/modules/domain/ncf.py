"""NeuMF (He et al., 2017): a GMF and an MLP tower over InfoSharing's user and item rows."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NCFLoss = Literal["bpr", "log"]

# (users x items x first MLP width) activations per scoring chunk: 2^22 floats, 16 MB
_CHUNK_CELLS = 1 << 22


def check_mlp_layers(dim: int, mlp_layers: Sequence[int]) -> None:
    """The MLP tower reads ``[user; item]`` (2 * dim wide) and narrows, as in the paper: each layer no wider
    than what it reads."""
    widths = [2 * dim, *mlp_layers]
    if not mlp_layers or min(mlp_layers) < 1 or any(b > a for a, b in pairwise(widths)):
        raise ValueError(f"model.mlp_layers must be one or more positive widths that narrow from the MLP "
                         f"tower's input, 2 * embedding_dim = {2 * dim} (e.g. [{dim}, {max(1, dim // 2)}]); "
                         f"got {list(mlp_layers)}")


class NeuMF(nn.Module):
    """NeuMF's two towers, both reading the *same* InfoSharing rows.

    The paper gives GMF and MLP separate embedding tables; here there is one table, the one both models of
    BDLM share. GMF reads the rows as they are (``u * i``); the MLP tower's first layer is its own learned
    projection of the same rows. That layer, ``W [u; i] + b``, is kept as two halves ``W_u u + b`` and
    ``W_i i`` so that ranking the catalogue projects each item once and adds it to each user's half,
    instead of concatenating a (user, item) pair for every cell as a per-pair ``predict`` does. The towers'
    last layers are concatenated into one linear output, which is split the same way.

    Args:
        dim: width of InfoSharing's rows.
        mlp_layers: widths of the MLP tower, first layer first (it reads ``2 * dim``); None:
            ``[dim, dim // 2]``.
        dropout: dropout before each MLP layer after the first.
    """

    def __init__(self, dim: int, mlp_layers: Sequence[int] | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        mlp_layers = (dim, max(1, dim // 2)) if mlp_layers is None else tuple(mlp_layers)
        check_mlp_layers(dim, mlp_layers)
        self.user_in = nn.Linear(dim, mlp_layers[0])
        self.item_in = nn.Linear(dim, mlp_layers[0], bias=False)
        tower: list[nn.Module] = [nn.ReLU()]
        for width_in, width_out in pairwise(mlp_layers):
            tower += [nn.Dropout(dropout), nn.Linear(width_in, width_out), nn.ReLU()]
        self.tower = nn.Sequential(*tower)
        self.gmf_out = nn.Linear(dim, 1, bias=False)
        self.mlp_out = nn.Linear(mlp_layers[-1], 1)

    def forward(self, info) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared rows themselves: both towers read them per pair."""
        return info()

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,) scores of matching rows ``users[b]``, ``items[b]`` (each (B, dim))."""
        gmf = self.gmf_out(users * items)
        mlp = self.mlp_out(self.tower(self.user_in(users) + self.item_in(items)))
        return (gmf + mlp).squeeze(-1)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, kind: NCFLoss) -> torch.Tensor:
        """BPR on (positive - negative), or the paper's pointwise log loss with the negatives as label 0."""
        s_pos, s_neg = self.pair_scores(users, pos), self.pair_scores(users, neg)
        if kind == "bpr":
            return F.softplus(s_neg - s_pos).mean()
        return (F.softplus(-s_pos).mean() + F.softplus(s_neg).mean()) / 2

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, N) scores of every item row for every user row.

        GMF is one matrix product (``(u * h) @ I^T``). The MLP tower is non-linear after its first layer, so
        its (users, items, width) activations cannot be avoided; they are built a chunk of users at a time,
        at most 16 MB, from each side's precomputed half of the first layer.
        """
        out = (users * self.gmf_out.weight[0]) @ items.T
        user_half, item_half = self.user_in(users), self.item_in(items)
        chunk = max(1, _CHUNK_CELLS // (items.shape[0] * item_half.shape[1]))
        for start in range(0, users.shape[0], chunk):
            hidden = self.tower(user_half[start:start + chunk, None, :] + item_half[None])
            out[start:start + chunk] += self.mlp_out(hidden).squeeze(-1)
        return out
