"""Full-ranking top-K recommendation metrics (RecBole definitions) as a DDP-safe torchmetrics Metric.

The states are per-K sums over users plus a user count, all reduced with "sum", so memory does not grow with
the catalogue or the number of users, and merging ranks (or metric instances) is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchmetrics
from torch import Tensor

NAMES = ("hr", "ndcg", "recall", "mrr")


class TopKMetrics(torchmetrics.Metric):
    """HR@K, NDCG@K, Recall@K and MRR@K over all items, averaged over the users seen.

    update() takes scores (B, N), already masked (excluded items at -inf), and targets (B, T): the relevant
    item indices per user, padded with -1. Rows with no valid target are ignored. An item scored -inf never
    counts as a hit (a masked target is a miss that still counts in #relevant); callers should not mask
    targets. compute() returns {"hr@5": ..., "ndcg@5": ..., "recall@5": ..., "mrr@5": ..., ...}; every value
    is 0 if no user was counted.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (5, 10, 20), **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = sorted({int(k) for k in ks})
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"ks must be positive integers, got {ks}")
        # sums[i, j] = sum over users of metric NAMES[i] at cutoff ks[j]
        sums = torch.zeros(len(NAMES), len(self.ks), dtype=torch.float64)
        self.add_state("sums", sums, dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        if targets.dim() == 1:
            targets = targets[:, None]
        valid = targets >= 0
        n_rel = valid.sum(1)
        keep = n_rel > 0
        scores, targets, valid, n_rel = scores[keep], targets[keep], valid[keep], n_rel[keep]
        if scores.shape[0] == 0:
            return
        top_k = min(self.ks[-1], scores.shape[1])
        top_scores, top_items = torch.topk(scores, top_k, dim=1)  # (B, K), sorted descending
        # (B, K, 1) vs (B, 1, T): no dense (B, N) relevance matrix
        hits = ((top_items[:, :, None] == targets[:, None, :]) & valid[:, None, :]).any(-1)
        hits &= top_scores > float("-inf")
        hits = hits.double()

        disc = 1.0 / torch.log2(torch.arange(self.ks[-1], device=scores.device, dtype=torch.float64) + 2)
        cum_hits = hits.cumsum(1)  # (B, K): #hits in the top r+1
        cum_dcg = (hits * disc[:top_k]).cumsum(1)
        first = hits.argmax(1).double()  # rank of the first hit (0 if none; masked out by hr below)

        ks = torch.tensor(self.ks, device=scores.device)
        col = ks.clamp(max=top_k) - 1  # a cutoff beyond N covers the whole catalogue
        n_hit = cum_hits[:, col]  # (B, len(ks))
        hr = (n_hit > 0).double()
        recall = n_hit / n_rel[:, None]
        idcg = disc.cumsum(0)[torch.minimum(n_rel[:, None], ks) - 1]
        ndcg = cum_dcg[:, col] / idcg
        mrr = hr / (first[:, None] + 1)

        self.sums += torch.stack([hr, ndcg, recall, mrr]).sum(1)
        self.count += scores.shape[0]

    def compute(self) -> dict[str, Tensor]:
        means = self.sums / self.count.clamp(min=1)
        return {f"{name}@{k}": means[i, j] for i, name in enumerate(NAMES) for j, k in enumerate(self.ks)}


def mask_scores(scores: Tensor, exclude_rows: Tensor, exclude_cols: Tensor) -> Tensor:
    """In place set scores[exclude_rows[i], exclude_cols[i]] = -inf for every pair i, and return scores."""
    scores[exclude_rows, exclude_cols] = float("-inf")
    return scores
