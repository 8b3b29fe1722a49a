"""The validation, test and predict hooks of every trainer (DomainModule, LMModule, BridgeModule)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from lightning_bridge.evaluation.ranking import RankingEvaluator
from lightning_bridge.evaluation.top_k import top_k_items

# A side model's ``scores(batch)``: float32 (B, num_items) scores of the whole catalogue for the batch's users.
Scorer = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class RankingEvaluation:
    """Mixed into a LightningModule: each evaluated model's scores go through its RankingEvaluator and are
    logged as ``{model}/{stage}/...``; ``predict`` writes one model's top-k unseen items. What evaluation
    reuses across batches (propagated vectors) is cached for the epoch by ``freeze_vectors``."""

    _evaluating: frozenset[str] | None = None  # set by ``evaluate_only``; None: every model

    def evaluated_models(self) -> dict[str, tuple[RankingEvaluator, Scorer]]:
        """``{"domain": (evaluator, scores), ...}``: the models validated and tested, by log prefix."""
        raise NotImplementedError

    def evaluate_only(self, models: Iterable[str] | None) -> None:
        """Validates and tests only ``models`` from now on (None: all of them again). After fit each model is
        tested at its own best checkpoint, where the other model's metrics would be wasted work."""
        self._evaluating = None if models is None else frozenset(models)

    def active_models(self) -> dict[str, tuple[RankingEvaluator, Scorer]]:
        """``evaluated_models`` less those ``evaluate_only`` leaves out."""
        models = self.evaluated_models()
        return models if self._evaluating is None else {k: v for k, v in models.items() if k in self._evaluating}

    def predicting_model(self) -> tuple[Scorer, int]:
        """The scores ``predict`` ranks by, and how many items it writes per user."""
        raise NotImplementedError

    def freeze_vectors(self) -> None:
        """Caches what every evaluation batch reuses (nothing unless a model overrides it)."""

    def release_vectors(self) -> None:
        """Drops that cache, so training never reads stale vectors."""

    def on_validation_epoch_start(self) -> None:
        self.freeze_vectors()

    on_test_epoch_start = on_predict_epoch_start = on_validation_epoch_start

    def _update(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        for evaluator, scores in self.active_models().values():
            evaluator.update(stage, scores(batch), batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._update("test", batch)

    def _log_stage(self, stage: str) -> None:
        metrics = {}
        for prefix, (evaluator, _) in self.active_models().items():
            metrics.update(evaluator.compute(stage, prefix))
        self.log_dict(metrics)
        self.release_vectors()

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        scores, k = self.predicting_model()
        return top_k_items(scores(batch), batch, k)

    def on_predict_epoch_end(self) -> None:
        self.release_vectors()
