"""Each tested user's own figures (NDCG@10 and HR@10, over the catalogue and among new items), their groups and
their rarest target's popularity: what the figures cut into quintiles and ``per_user_test.csv`` lists."""

from __future__ import annotations

import numpy as np
import torch
import torchmetrics

from lightning_bridge.evaluation.metrics import user_metrics

K = 10


class PerUserMetrics(torchmetrics.Metric):
    """Each evaluated user's NDCG@10 and HR@10, the groups they belong to (sparsest fifth, rarest-target fifth,
    target a new item: the same masks the ranking metrics use) and the training popularity of their rarest
    test item, kept per user id so that quintiles can be cut and subgroups compared user by user once every
    user is in (sum states: DDP-safe, each user is evaluated on one rank only). Users whose target is a new
    item also get NDCG@10 and HR@10 with their ranking restricted to the new items, as ``new_item_ndcg@10``.
    """

    full_state_update = False
    GROUPS = ("sparse", "rare", "new_item")

    def __init__(self, num_users: int, item_popularity: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("popularity", torch.as_tensor(item_popularity, dtype=torch.float64), persistent=False)
        for name in ("ndcg", "hr", "new_ndcg", "new_hr", "seen", "target_popularity",
                     *(f"group_{g}" for g in self.GROUPS)):
            self.add_state(name, torch.zeros(num_users, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, batch: dict[str, torch.Tensor], ranks: torch.Tensor, new_ranks: torch.Tensor | None) -> None:
        """``batch`` the evaluation batch (``targets`` (B, T) padded with -1, ``users``, ``group_*`` masks), as
        ``RankingEvaluator.update`` receives it; ``ranks`` its targets' ranks over the catalogue and
        ``new_ranks`` those of its ``group_new_item`` rows among the new items (None without new items), at a
        cutoff of at least K (``RankingEvaluator``'s one ranking of the batch)."""
        targets = batch["targets"]
        if targets.dim() == 1:
            targets = targets[:, None]
        keep = (targets >= 0).any(1)
        if new_ranks is not None:
            new_rows = batch["group_new_item"].to(keep.device)
            new_users = batch["users"][new_rows & keep].to(self.ndcg.device)
            new_ndcg, new_hr = _ndcg_hr(new_ranks[keep[new_rows]], targets[new_rows & keep])
            self.new_ndcg[new_users], self.new_hr[new_users] = new_ndcg.to(self.ndcg), new_hr.to(self.hr)
        users = batch["users"][keep].to(self.ndcg.device)
        targets = targets[keep]
        ndcg, hr = _ndcg_hr(ranks[keep], targets)
        valid = targets >= 0
        popularity = self.popularity[targets.clamp(min=0).to(self.popularity.device)]
        rarest = popularity.masked_fill(~valid.to(popularity.device), float("inf")).min(1).values
        self.ndcg[users], self.hr[users] = ndcg.to(self.ndcg), hr.to(self.hr)
        self.seen[users] = 1.0
        self.target_popularity[users] = rarest
        for group in self.GROUPS:
            if f"group_{group}" in batch:
                getattr(self, f"group_{group}")[users] = batch[f"group_{group}"][keep].to(self.ndcg)

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.seen > 0
        out = {"users": seen.nonzero()[:, 0], "ndcg": self.ndcg[seen], "hr": self.hr[seen],
               "new_item_ndcg": self.new_ndcg[seen], "new_item_hr": self.new_hr[seen],
               "target_popularity": self.target_popularity[seen]}
        out.update({group: getattr(self, f"group_{group}")[seen] > 0 for group in self.GROUPS})
        return out


def _ndcg_hr(ranks: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row NDCG@K and HR@K from the targets' ranks (``TopKMetrics``'s own per-user figures)."""
    hr, ndcg = user_metrics(ranks, (targets >= 0).sum(1), (K,))[:2, :, 0]
    return ndcg, hr
