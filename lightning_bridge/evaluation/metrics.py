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
    item indices per user, padded with -1; or, in place of the scores, the targets' ranks from
    :func:`target_ranks` at a cutoff of at least the largest K (one ranking shared by several metrics and
    observers). Rows with no valid target are ignored. An item scored -inf never
    counts as a hit (a masked target is a miss that still counts in #relevant); callers should not mask
    targets. With few targets per user a target tied with other items is placed after them (see
    :func:`target_ranks`). compute() returns {"hr@5": ..., "ndcg@5": ..., "recall@5": ..., "mrr@5": ..., ...};
    every value is 0 if no user was counted.
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

    def update(self, scores: Tensor | None, targets: Tensor, ranks: Tensor | None = None) -> None:
        if targets.dim() == 1:
            targets = targets[:, None]
        n_rel = (targets >= 0).sum(1)
        keep = n_rel > 0
        if not bool(keep.all()):
            targets, n_rel = targets[keep], n_rel[keep]
            scores, ranks = (None if x is None else x[keep] for x in (scores, ranks))
        if targets.shape[0] == 0:
            return
        if ranks is None:
            ranks = target_ranks(scores, targets, self.ks[-1])  # (B, T); cutoff = not in any top-K
        self.sums += user_metrics(ranks, n_rel, self.ks).sum(1)
        self.count += targets.shape[0]

    def compute(self) -> dict[str, Tensor]:
        means = self.sums / self.count.clamp(min=1)
        return {f"{name}@{k}": means[i, j] for i, name in enumerate(NAMES) for j, k in enumerate(self.ks)}


def user_metrics(ranks: Tensor, n_rel: Tensor, ks: Sequence[int]) -> Tensor:
    """(len(NAMES), B, len(ks)) each user's HR, NDCG, Recall and MRR at each cutoff, from the targets' ``ranks``
    (:func:`target_ranks` at a cutoff of at least ``max(ks)``) and the user's number of relevant items."""
    ks_ = torch.tensor(ks, device=ranks.device)
    hits = ranks[:, :, None] < ks_  # (B, T, len(ks))
    gain = 1.0 / torch.log2(ranks.double() + 2)  # (B, T)
    n_hit = hits.sum(1).double()  # (B, len(ks))
    hr = (n_hit > 0).double()
    recall = n_hit / n_rel[:, None]
    ideal = (1.0 / torch.log2(torch.arange(max(ks), device=ranks.device, dtype=torch.float64) + 2)).cumsum(0)
    ndcg = (hits * gain[:, :, None]).sum(1) / ideal[torch.minimum(n_rel[:, None], ks_) - 1]
    first = ranks.min(1).values[:, None]  # (B, 1): the best-placed target
    mrr = (first < ks_) / (first + 1.0)
    return torch.stack([hr, ndcg, recall, mrr])


# Up to this many targets per user, ranks are counted (one pass over the scores per target); beyond, top-K.
_MAX_COUNTED_TARGETS = 8


def target_ranks(scores: Tensor, targets: Tensor, cutoff: int) -> Tensor:
    """(B, T) 0-based position of each target item in its row's ranking, or ``cutoff`` where the target is
    not among the top ``cutoff`` items, is padding (-1) or is scored -inf or NaN.

    Leave-one-out (one target per user, the default protocol) needs no top-K at all: a target's position is
    the number of items that score at least as high as it, which is one comparison pass over the row, a few
    times cheaper than ``torch.topk``. Ties and NaN scores count against the target, so that a model whose
    scores are all equal (or broken) ranks nothing well. Rows with many targets fall back to top-K (ties
    then fall in ``torch.topk``'s order).
    """
    valid = targets >= 0
    items = targets.clamp(min=0)
    if targets.shape[1] <= _MAX_COUNTED_TARGETS:
        target_scores = scores.gather(1, items)  # (B, T)
        # items not below the target (ties and NaN included), minus the target itself; int32 sums are faster
        below = (scores[:, None, :] < target_scores[:, :, None]).sum(-1, dtype=torch.int32)
        at_least = (scores.shape[1] - 1 - below).long()
        found = valid & (target_scores > float("-inf")) & (at_least < cutoff)
        return torch.where(found, at_least, cutoff)
    top_scores, top_items = torch.topk(scores, min(cutoff, scores.shape[1]), dim=1)  # (B, K), descending
    match = (top_items[:, :, None] == items[:, None, :]) & (top_scores > float("-inf"))[:, :, None]  # (B, K, T)
    found = valid & match.any(1)
    return torch.where(found, match.int().argmax(1), cutoff)
