"""Domain encoders: turn InfoSharing's ID tables into the user and item vectors that are dot-scored."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from lightning_bridge.modules.info_sharing import InfoSharing


def _propagate(user: torch.Tensor, item: torch.Tensor, r: torch.Tensor, r_t: torch.Tensor,
               num_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of layers 0..K of ``[[0, R], [R^T, 0]]`` applied to ``[user; item]``, summed in place.

    In the graph's precision (float32), also under mixed precision: sparse kernels have no bfloat16 version
    on CPU, and the sums over many neighbours are where low precision would cost most."""
    user, item = user.to(r.dtype), item.to(r.dtype)
    user_sum, item_sum = user.clone(), item.clone()
    with torch.autocast(user.device.type, enabled=False):
        for _ in range(num_layers - 1):
            user, item = _product(r, item), _product(r_t, user)
            user_sum += user
            item_sum += item
        if num_layers:  # the last layer is only summed: the product adds itself into the sum in place
            user_sum.addmm_(r, item)
            item_sum.addmm_(r_t, user)
    scale = 1.0 / (num_layers + 1)
    return user_sum.mul_(scale), item_sum.mul_(scale)


def _product(graph: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``graph @ x`` written straight into new memory (``beta=0`` ignores what it held). ``graph @ x`` itself
    zeroes its result and copies it once more: two extra passes over a table per product, a quarter of a
    LightGCN training step at 10^6 users and items (``bench/README.md``, "How the domain side scales")."""
    return torch.empty(graph.shape[0], x.shape[1], dtype=x.dtype, device=x.device).addmm_(graph, x, beta=0)


class _Propagate(torch.autograd.Function):
    """LightGCN's propagation as one autograd node.

    The operator ``x -> mean_k A^k x`` is symmetric because the normalised adjacency ``A`` is, so its backward
    pass is the same propagation applied to the incoming gradients: no intermediate layer is kept for
    backward and autograd records one node instead of a dozen (a quarter of a training step's time on
    MovieLens-100K went to that bookkeeping and the extra temporaries).
    """

    @staticmethod
    def forward(ctx, user: torch.Tensor, item: torch.Tensor, r: torch.Tensor, r_t: torch.Tensor,
                num_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.graph, ctx.num_layers = (r, r_t), num_layers
        return _propagate(user, item, r, r_t, num_layers)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_user: torch.Tensor | None, grad_item: torch.Tensor | None):
        r, r_t = ctx.graph
        n_users, n_items = r.shape
        if grad_user is None:
            grad_user = torch.zeros(n_users, grad_item.shape[1], dtype=grad_item.dtype, device=grad_item.device)
        if grad_item is None:
            grad_item = torch.zeros(n_items, grad_user.shape[1], dtype=grad_user.dtype, device=grad_user.device)
        grad_user, grad_item = _propagate(grad_user.contiguous(), grad_item.contiguous(), r, r_t, ctx.num_layers)
        return grad_user, grad_item, None, None, None


def _unique_pairs(rows: np.ndarray, cols: np.ndarray, num_cols: int) -> np.ndarray:
    """Sorted unique ``row * num_cols + col`` keys (a sort and a diff: several times faster than np.unique's
    hashing on ~10^5 keys, and this runs whenever a graph is attached)."""
    key = np.sort(rows.astype(np.int64) * num_cols + cols.astype(np.int64))
    if len(key) > 1:
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    return key


def normalized_biadjacency(users: np.ndarray, items: np.ndarray, num_users: int,
                           num_items: int) -> torch.Tensor:
    """The user-item block ``D_u^-1/2 R D_i^-1/2`` of LightGCN's symmetric-normalised adjacency, as a
    sparse CSR tensor (num_users, num_items). Repeated pairs count once."""
    key = _unique_pairs(users, items, num_items)
    rows, cols = key // num_items, key % num_items
    du = np.bincount(rows, minlength=num_users).astype(np.float64)
    di = np.bincount(cols, minlength=num_items).astype(np.float64)
    values = torch.from_numpy(1.0 / np.sqrt(du[rows] * di[cols])).float()
    # int32 indices where they fit: the CPU kernel (MKL) takes them as they are instead of converting the
    # index arrays at every product (5% of each product on MovieLens-100K)
    index = np.int32 if len(key) < np.iinfo(np.int32).max else np.int64
    crow = torch.from_numpy(np.concatenate([[0], np.cumsum(du)]).astype(index))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, torch.from_numpy(cols.astype(index)), values, (num_users, num_items),
                                       check_invariants=False)


class LightGCN(nn.Module):
    """LightGCN (He et al., 2020): K propagation layers over the normalised user-item graph, layer mean.

    The bipartite adjacency ``[[0, R], [R^T, 0]]`` is applied as two sparse products with ``R`` and ``R^T``,
    half the work of multiplying by the full square matrix.
    """

    def __init__(self, num_layers: int = 3, isolated_nodes: str = "layer_mean",
                 dropped_items: str = "propagated") -> None:
        """``isolated_nodes``: ``layer_mean`` (the paper's: a node without edges gets its ego row / (K+1)) or
        ``ego`` (it keeps its ego row whole). ``dropped_items``: what an item dropped out by InfoSharing's
        ``id_dropout`` gets, ``propagated`` (its text part as its ego row, its edges kept) or ``isolated``
        (the vector of an item without edges, as a new item gets). See DomainModule."""
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"LightGCN num_layers must be >= 0, got {num_layers}")
        if isolated_nodes not in ("layer_mean", "ego"):
            raise ValueError(f"model.isolated_nodes must be 'layer_mean' or 'ego', got {isolated_nodes!r}")
        if dropped_items not in ("propagated", "isolated"):
            raise ValueError(f"model.dropped_items must be 'propagated' or 'isolated', got {dropped_items!r}")
        self.num_layers, self.isolated_nodes, self.dropped_items = num_layers, isolated_nodes, dropped_items
        self._isolated: tuple[torch.Tensor, torch.Tensor] | None = None  # per-node scale, "ego" only
        self._graph: tuple[torch.Tensor, torch.Tensor] | None = None
        self._edges: tuple[np.ndarray, np.ndarray, int, int] | None = None

    def set_graph(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> None:
        """Builds the normalised graph; a no-op when these very edges are already set (setup runs at every
        fit / validate / test call, and rebuilding would dominate a quick evaluation)."""
        if self._edges is not None and self._edges[2:] == (num_users, num_items) \
                and np.array_equal(self._edges[0], users) and np.array_equal(self._edges[1], items):
            return
        r = normalized_biadjacency(users, items, num_users, num_items)
        r_t = normalized_biadjacency(items, users, num_items, num_users)
        device = self._graph[0].device if self._graph is not None else r.device
        self._graph = (r.to(device), r_t.to(device))
        if self.isolated_nodes == "ego":  # undo the layer mean's 1/(K+1) where layers 1..K are all zero
            scale = [torch.where(torch.from_numpy(np.bincount(ids, minlength=n) == 0), self.num_layers + 1.0, 1.0)
                     for ids, n in ((users, num_users), (items, num_items))]
            self._isolated = (scale[0].to(device).unsqueeze(1), scale[1].to(device).unsqueeze(1))
        self._edges = (np.array(users, copy=True), np.array(items, copy=True), num_users, num_items)

    def _graph_on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is None:
            raise RuntimeError("LightGCN has no graph: call set_graph with the training interactions first")
        if self._graph[0].device != device or self._graph[0].dtype != dtype:
            self._graph = tuple(g.to(device=device, dtype=dtype) for g in self._graph)
        return self._graph

    def forward(self, info: InfoSharing) -> tuple[torch.Tensor, torch.Tensor]:
        isolate_dropped = self.dropped_items == "isolated"
        user, item = info(id_dropout=not isolate_dropped)
        r, r_t = self._graph_on(user.device, user.dtype)
        if self.num_layers > 0:
            user, item = _Propagate.apply(user, item, r, r_t, self.num_layers)
            if self._isolated is not None:
                user_scale, item_scale = (s.to(user.device) for s in self._isolated)
                user, item = user * user_scale, item * item_scale
        if isolate_dropped:
            item = self._isolate(info, item)
        return user, item

    def _isolate(self, info: InfoSharing, item: torch.Tensor) -> torch.Tensor:
        """``item`` with the vectors of this pass's dropped-out items replaced by what they would get without
        edges: their text part, divided by K+1 under the layer mean. A dropped seen item then looks exactly
        like a new item, so the text part learns to score new items on the scale they are ranked on."""
        dropped = info.dropped_out(item.shape[:1])
        if not bool(dropped.any()):
            return item
        share = 1.0 if self.isolated_nodes == "ego" else 1.0 / (self.num_layers + 1)
        return torch.where(dropped[:, None], info.text_vectors() * share, item)


class MF(nn.Module):
    """Matrix factorisation: the ID embeddings themselves are the user and item vectors."""

    def set_graph(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> None:
        """MF reads no graph; the method exists so that every encoder is set up the same way."""

    def forward(self, info: InfoSharing) -> tuple[torch.Tensor, torch.Tensor]:
        return info()
