"""Full-ranking evaluation shared by every model: masked scores in, logged metrics out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lightning_bridge.evaluation.metrics import TopKMetrics, target_ranks
from lightning_bridge.evaluation.top_k import mask_scores

STAGES = ("val", "test")
# (group, key prefix): every user; the sparsest fifth of users; the fifth whose target is rarest in training;
# users whose target is a new item (cold-start protocol), ranked among the new items only, and over the whole
# catalogue.
GROUPS = (("all", ""), ("sparse", "sparse_"), ("rare", "rare_"), ("new_item", "new_item_"),
          ("new_item_catalogue", "new_item_catalogue_"))
# The cutoff the per-user observers read ranks at (figures.py's NDCG@10 and HR@10, beside this file).
OBSERVED_CUTOFF = 10
# An observer of test batches: (the batch, each target's rank over the catalogue at a cutoff of at least
# OBSERVED_CUTOFF, the ranks among the new items of the batch's ``group_new_item`` rows or None).
Observer = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None], None]


class RankingEvaluator(nn.Module):
    """One metric object per stage and user group (the protocol of README.md's results): all users, the
    sparsest fifth, the rarest-target fifth and, where the data has new items, the users whose target is one.
    Each batch is ranked once (and once more among the new items): every group's metrics and the test
    observers read the same ranks."""

    def __init__(self, ks: Sequence[int] = (5, 10, 20)) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict({f"{stage}_{group}": TopKMetrics(ks) for stage in STAGES
                                      for group, _ in GROUPS})
        self.cutoff = max(ks)
        self._reported: dict[str, set[str]] = {stage: set() for stage in STAGES}
        # called for every test batch: per-user breakdowns (figures.py)
        self.test_observers: list[Observer] = []

    def update(self, stage: str, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Masks the batch's known items in ``scores`` (in place) and accumulates every group the batch has."""
        scores = mask_scores(scores, batch["exclude_rows"], batch["exclude_cols"])
        targets = batch["targets"]
        if targets.dim() == 1:
            targets = targets[:, None]
        ranks = target_ranks(scores, targets, self.cutoff)
        self._accumulate(stage, "all", ranks, targets)
        for group in ("sparse", "rare"):
            if f"group_{group}" in batch:
                rows = batch[f"group_{group}"]
                self._accumulate(stage, group, ranks[rows], targets[rows])
        new_ranks = None
        if "new_items" in batch:
            rows = batch["group_new_item"]
            self._accumulate(stage, "new_item_catalogue", ranks[rows], targets[rows])
            new_ranks = target_ranks(self._among_new(scores[rows], batch), targets[rows], self.cutoff)
            self._accumulate(stage, "new_item", new_ranks, targets[rows])
        if stage == "test" and self.test_observers:
            if self.cutoff < OBSERVED_CUTOFF:  # cutoffs below the observers': rank again at theirs
                ranks = target_ranks(scores, targets, OBSERVED_CUTOFF)
                if new_ranks is not None:
                    among_new = self._among_new(scores[batch["group_new_item"]], batch)
                    new_ranks = target_ranks(among_new, targets[batch["group_new_item"]], OBSERVED_CUTOFF)
            for observe in self.test_observers:
                observe(batch, ranks, new_ranks)

    @staticmethod
    def _among_new(scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``scores`` with every item that is not new at -inf: the ranking among the new items only."""
        return scores.masked_fill(~batch["new_items"].to(scores.device), float("-inf"))

    def _accumulate(self, stage: str, group: str, ranks: torch.Tensor, targets: torch.Tensor) -> None:
        self.metrics[f"{stage}_{group}"].update(None, targets, ranks)
        self._reported[stage].add(group)

    def compute(self, stage: str, prefix: str) -> dict[str, torch.Tensor]:
        """``{prefix}/{stage}/ndcg@10``, ``{prefix}/{stage}/sparse_ndcg@10``, ... then resets the stage."""
        out = {}
        for group, infix in GROUPS:
            metric = self.metrics[f"{stage}_{group}"]
            if group in self._reported[stage]:
                out.update({f"{prefix}/{stage}/{infix}{k}": v.float() for k, v in metric.compute().items()})
            metric.reset()
        self._reported[stage] = set()
        return out
