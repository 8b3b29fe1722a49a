"""Domain encoders: turn InfoSharing's ID tables into the user and item vectors that are dot-scored."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from lightning_bridge.modules.info_sharing import InfoSharing


class _SparseMatmul(torch.autograd.Function):
    """``A @ x`` with a precomputed ``A^T`` for the backward pass (CSR transposes are costly on the fly)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.a_t @ grad


def normalized_biadjacency(users: np.ndarray, items: np.ndarray, num_users: int,
                           num_items: int) -> torch.Tensor:
    """The user-item block ``D_u^-1/2 R D_i^-1/2`` of LightGCN's symmetric-normalised adjacency, as a
    sparse CSR tensor (num_users, num_items). Repeated pairs count once."""
    key = np.unique(users.astype(np.int64) * num_items + items)
    rows, cols = key // num_items, key % num_items
    du = np.bincount(rows, minlength=num_users).astype(np.float64)
    di = np.bincount(cols, minlength=num_items).astype(np.float64)
    values = torch.from_numpy(1.0 / np.sqrt(du[rows] * di[cols])).float()
    crow = torch.from_numpy(np.concatenate([[0], np.cumsum(du)]).astype(np.int64))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, torch.from_numpy(cols), values, (num_users, num_items),
                                       check_invariants=False)


class LightGCN(nn.Module):
    """LightGCN (He et al., 2020): K propagation layers over the normalised user-item graph, layer mean.

    The bipartite adjacency ``[[0, R], [R^T, 0]]`` is applied as two sparse products with ``R`` and ``R^T``,
    half the work of multiplying by the full square matrix.
    """

    def __init__(self, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"LightGCN num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers
        self._graph: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_graph(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> None:
        r = normalized_biadjacency(users, items, num_users, num_items)
        r_t = normalized_biadjacency(items, users, num_items, num_users)
        self._graph = (r, r_t)

    def _graph_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is None:
            raise RuntimeError("LightGCN has no graph: call set_graph with the training interactions first")
        if self._graph[0].device != device:
            self._graph = tuple(g.to(device) for g in self._graph)
        return self._graph

    def forward(self, info: InfoSharing) -> tuple[torch.Tensor, torch.Tensor]:
        user, item = info()
        r, r_t = self._graph_on(user.device)
        user_sum, item_sum = user, item
        for _ in range(self.num_layers):
            user, item = _SparseMatmul.apply(r, r_t, item), _SparseMatmul.apply(r_t, r, user)
            user_sum, item_sum = user_sum + user, item_sum + item
        return user_sum / (self.num_layers + 1), item_sum / (self.num_layers + 1)


class MF(nn.Module):
    """Matrix factorisation: the ID embeddings themselves are the user and item vectors."""

    def set_graph(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> None:
        """MF reads no graph; the method exists so that every encoder is set up the same way."""

    def forward(self, info: InfoSharing) -> tuple[torch.Tensor, torch.Tensor]:
        return info()
