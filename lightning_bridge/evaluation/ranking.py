"""Full-ranking evaluation shared by every model: masked scores in, logged metrics out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lightning_bridge.evaluation.metrics import TopKMetrics
from lightning_bridge.evaluation.top_k import mask_scores

STAGES = ("val", "test")
# (group, key prefix): every user; the sparsest fifth of users; the fifth whose target is rarest in training;
# users whose target is a new item (cold-start protocol), ranked among the new items only, and over the whole
# catalogue.
GROUPS = (("all", ""), ("sparse", "sparse_"), ("rare", "rare_"), ("new_item", "new_item_"),
          ("new_item_catalogue", "new_item_catalogue_"))


class RankingEvaluator(nn.Module):
    """One metric object per stage and user group (the protocol of README.md's results): all users, the
    sparsest fifth, the rarest-target fifth and, where the data has new items, the users whose target is one."""

    def __init__(self, ks: Sequence[int] = (5, 10, 20)) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict({f"{stage}_{group}": TopKMetrics(ks) for stage in STAGES
                                      for group, _ in GROUPS})
        self._reported: dict[str, set[str]] = {stage: set() for stage in STAGES}
        # called with (masked scores, batch) for every test batch: per-user breakdowns (figures.py)
        self.test_observers: list[Callable[[torch.Tensor, dict[str, torch.Tensor]], None]] = []

    def update(self, stage: str, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Masks the batch's known items in ``scores`` (in place) and accumulates every group the batch has."""
        scores = mask_scores(scores, batch["exclude_rows"], batch["exclude_cols"])
        targets = batch["targets"]
        self._accumulate(stage, "all", scores, targets)
        for observe in self.test_observers if stage == "test" else ():
            observe(scores, batch)
        for group in ("sparse", "rare"):
            if f"group_{group}" in batch:
                rows = batch[f"group_{group}"]
                self._accumulate(stage, group, scores[rows], targets[rows])
        if "new_items" in batch:
            rows = batch["group_new_item"]
            self._accumulate(stage, "new_item_catalogue", scores[rows], targets[rows])
            among_new = scores[rows].masked_fill(~batch["new_items"].to(scores.device), float("-inf"))
            self._accumulate(stage, "new_item", among_new, targets[rows])

    def _accumulate(self, stage: str, group: str, scores: torch.Tensor, targets: torch.Tensor) -> None:
        self.metrics[f"{stage}_{group}"].update(scores, targets)
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
