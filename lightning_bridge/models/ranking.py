"""Full-ranking evaluation shared by every model: masked scores in, logged metrics out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_bridge.metrics import TopKMetrics, mask_scores

STAGES = ("val", "test")


class RankingEvaluator(nn.Module):
    """One metric object per stage for all users and one for the sparsest fifth (DESIGN.md's protocol)."""

    def __init__(self, ks: Sequence[int] = (5, 10, 20)) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict({f"{stage}_{group}": TopKMetrics(ks) for stage in STAGES
                                      for group in ("all", "sparse")})

    def update(self, stage: str, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Masks the batch's known items in ``scores`` (in place) and accumulates both groups."""
        scores = mask_scores(scores, batch["exclude_rows"], batch["exclude_cols"])
        self.metrics[f"{stage}_all"].update(scores, batch["targets"])
        sparse = batch["sparse"]
        self.metrics[f"{stage}_sparse"].update(scores[sparse], batch["targets"][sparse])

    def compute(self, stage: str, prefix: str) -> dict[str, torch.Tensor]:
        """``{prefix}/{stage}/ndcg@10``, ``{prefix}/{stage}/sparse_ndcg@10``, ... then resets the stage."""
        out = {}
        for group, infix in (("all", ""), ("sparse", "sparse_")):
            metric = self.metrics[f"{stage}_{group}"]
            out.update({f"{prefix}/{stage}/{infix}{k}": v.float() for k, v in metric.compute().items()})
            metric.reset()
        return out


def top_k_items(scores: torch.Tensor, batch: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """A predict step's output: each user's top-k unseen items and their scores."""
    scores = mask_scores(scores, batch["exclude_rows"], batch["exclude_cols"])
    values, items = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return {"users": batch["users"], "items": items, "scores": values}
