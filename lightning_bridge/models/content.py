"""ContentModule: the content-only baseline, a recommender that reads item text and nothing else."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from lightning_bridge.evaluation.hooks import RankingEvaluation, Scorer
from lightning_bridge.evaluation.ranking import RankingEvaluator
from lightning_bridge.models.lm import LMModule
from lightning_bridge.modules.lm.id_tokens import ITEM
from lightning_bridge.run.downloads import DEFAULT_CACHE


class ContentModule(RankingEvaluation, L.LightningModule):
    """Ranks items by what their text says, with no ID row and no training: an item's vector is a frozen LM's
    pooled representation of its text (unit-normalised, as the text channel reads it), a user's the mean of
    their training items' vectors, and the score their cosine. It is the content-only form of the text
    channel's idea, so a co-trained model's gain on new items must beat it. Use it with ``test`` or
    ``validate``; its metrics are logged as ``content/...``.

    Args:
        num_users: linked from the data.
        num_items: linked from the data.
        backbone: the LM whose text representations are used (as ``LMModule``'s).
        gguf_file: a GGUF backbone's file (as ``LMModule``'s).
        cache_dir: where downloaded backbones are cached.
        local_files_only: never download a backbone.
        max_length: tokens per item text.
        ks: cutoffs of the ranking metrics.
    """

    def __init__(self, num_users: int, num_items: int, backbone: str = "minilm", gguf_file: str | None = None,
                 cache_dir: str = DEFAULT_CACHE, local_files_only: bool = True, max_length: int = 128,
                 ks: tuple[int, ...] = (5, 10, 20)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lm = LMModule(num_users, num_items, backbone=backbone, gguf_file=gguf_file, cache_dir=cache_dir,
                           local_files_only=local_files_only, finetune="frozen", max_length=max_length,
                           task_weights={"next_item": 1.0})
        self.evaluator = RankingEvaluator(ks)
        self.user_vectors: torch.Tensor | None = None
        self.item_vectors: torch.Tensor | None = None

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        with_text = torch.tensor([i for i, text in enumerate(data.item_text) if text], dtype=torch.long)
        if len(with_text) == 0:
            raise ValueError("ContentModule ranks items by their text, but the data has no item text")
        recommender = self.lm.recommender
        recommender.attach(data)
        states = F.normalize(recommender.encode_texts(ITEM, with_text, project=False), dim=1)
        items = torch.zeros(data.num_items, states.shape[1], device=states.device)
        items[with_text.to(states.device)] = states
        users, trained = (torch.from_numpy(a).to(states.device) for a in data.train_graph())
        sums = torch.zeros(data.num_users, states.shape[1], device=states.device).index_add_(0, users, items[trained])
        self.user_vectors, self.item_vectors = F.normalize(sums, dim=1), items

    def configure_optimizers(self) -> None:
        raise RuntimeError("ContentModule has nothing to train: run it with `test` or `validate`")

    training_step = configure_optimizers  # never reached; Lightning only asks that it exists

    def evaluated_models(self) -> dict[str, tuple[RankingEvaluator, Scorer]]:
        return {"content": (self.evaluator, self.scores)}

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, num_items) cosine of each user's text profile with every item's text."""
        return self.user_vectors[batch["users"].to(self.user_vectors.device)] @ self.item_vectors.T
