"""BridgeModule under FSDP2 (``lightning_bridge.sharding.FullyShardedStrategy``): what sharding changes in
its training step and its evaluation, kept apart from the schedule. Under any other strategy these hooks do
what BridgeModule would do without them."""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from lightning_bridge.sharding import (
    average_replicated_grads,
    clip_grad_norm,
    is_sharded,
    most_across_ranks,
    shard_lm_network,
)


class FullyShardedCoTraining:
    """Mixed into BridgeModule (before RankingEvaluation): shards the LM network, syncs the replicated
    tables' gradients, and keeps the ranks' sharded LM forwards in step during evaluation."""

    _lm_eval_seen: tuple[int, dict[str, torch.Tensor] | None] = (0, None)  # this epoch's (count, last batch)
    _lm_eval_target = 0  # LM evaluation forwards every rank enters this epoch (sharded only)

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (FSDP2), shard the LM over the data-parallel ranks
        (``lightning_bridge.sharding``); other strategies leave the model as it is."""
        if not self._sharded or is_sharded(next(self.lm.recommender.network.parameters())):
            return
        if self.lm.hparams.finetune == "frozen":
            raise ValueError("A frozen backbone (model.lm.finetune: frozen) caches its text features outside the "
                             "sharded forward; use ModelParallelStrategy with finetune lora or full")
        shard_lm_network(self.lm.recommender.network, self.device_mesh["data_parallel"])
        # The strategy loads a checkpoint's weights itself, before on_load_checkpoint could complete our slim
        # state dict: let it skip the frozen backbone weights, which stay as loaded from their source.
        self.strict_loading = False

    @property
    def _sharded(self) -> bool:
        return isinstance(self._trainer.strategy, ModelParallelStrategy) if self._trainer else False

    def _sync_and_clip(self, opt: torch.optim.Optimizer, clip: float | None) -> None:
        """Average the unsharded parameters' gradients across ranks (FSDP2 does the sharded ones), then clip."""
        if not self._sharded:
            if clip is not None:
                self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            return
        params = [p for group in opt.param_groups for p in group["params"]]
        data_parallel = self.device_mesh["data_parallel"].get_group()
        average_replicated_grads(params, data_parallel)
        if clip is not None:
            clip_grad_norm(params, clip, data_parallel)

    # ---- evaluation -------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        t = self.trainer
        self._plan_sharded_evaluation(t.num_sanity_val_batches if t.sanity_checking else t.num_val_batches,
                                      self.hparams.evaluate_lm)
        self.freeze_vectors()

    def on_test_epoch_start(self) -> None:
        self._plan_sharded_evaluation(self.trainer.num_test_batches, self.hparams.evaluate_lm)
        self.freeze_vectors()

    def on_predict_epoch_start(self) -> None:
        self._plan_sharded_evaluation(self.trainer.num_predict_batches, self.hparams.predict_with == "lm")
        self.freeze_vectors()

    def _log_stage(self, stage: str) -> None:
        self._finish_sharded_evaluation()
        super()._log_stage(stage)

    def on_predict_epoch_end(self) -> None:
        self._finish_sharded_evaluation()
        super().on_predict_epoch_end()

    def _lm_eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self._lm_eval_seen = (self._lm_eval_seen[0] + 1, batch)
        return self.lm.recommender.scores(batch)

    # Each forward of a sharded LM gathers its weights from every rank, so all ranks must enter the same
    # number of forwards. Evaluation gives them uneven shares of users (no padding, so no user counts twice):
    # at the start of an evaluation epoch the ranks agree on the most batches any of them has, and at its end
    # the ranks with fewer repeat a throwaway forward of their last batch until they have matched it.
    def _plan_sharded_evaluation(self, my_batches: int | list[int], uses_lm: bool) -> None:
        self._lm_eval_seen, self._lm_eval_target = (0, None), 0
        if self._sharded and uses_lm:
            mine = sum(my_batches) if isinstance(my_batches, list) else int(my_batches)
            self._lm_eval_target = most_across_ranks(mine, self.device_mesh["data_parallel"].get_group())

    def _finish_sharded_evaluation(self) -> None:
        (count, last), self._lm_eval_seen = self._lm_eval_seen, (0, None)
        if count >= self._lm_eval_target:
            return
        if last is None:
            raise ValueError("Under ModelParallelStrategy every rank needs at least one evaluation batch: lower "
                             "data.eval_batch_size or use fewer devices")
        with torch.no_grad():
            for _ in range(self._lm_eval_target - count):
                self.lm.recommender.scores(last)

