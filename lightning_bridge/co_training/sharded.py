"""BridgeModule under FSDP2 (``lightning_bridge.co_training.fsdp.FullyShardedStrategy``): what sharding changes in
its training step and its evaluation, kept apart from the schedule. Under any other strategy these hooks do
what BridgeModule would do without them."""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from lightning_bridge.co_training.fsdp import (
    average_replicated_grads,
    clip_grad_norm,
    is_sharded,
    most_across_ranks,
    shard_lm_network,
)
from lightning_bridge.run.lightning_internals import attached_trainer


class FullyShardedCoTraining:
    """Mixed into BridgeModule (before RankingEvaluation): shards the LM network, syncs the replicated
    tables' gradients, and keeps the ranks' sharded LM forwards in step during evaluation."""

    # this evaluation epoch's LM forwards: done so far, this rank's batches, what every rank enters (sharded)
    _lm_eval_count = _lm_eval_mine = _lm_eval_target = 0

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (FSDP2), shard the LM over the data-parallel ranks
        (``lightning_bridge.co_training.fsdp``); other strategies leave the model as it is."""
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
        trainer = attached_trainer(self)
        return isinstance(trainer.strategy, ModelParallelStrategy) if trainer else False

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

    # Each forward of a sharded LM gathers its weights from every rank, so all ranks must enter the same
    # number of forwards. Evaluation gives them uneven shares of users (no padding, so no user counts twice):
    # at the start of an evaluation epoch the ranks agree on the most batches any of them has, and right
    # after its own last batch a rank with fewer repeats a throwaway forward of it until it has matched that
    # number, before any epoch-end hook (a callback's metric sync, say) could wait on the others.
    def _plan_sharded_evaluation(self, my_batches: int | list[int], uses_lm: bool) -> None:
        self._lm_eval_count, self._lm_eval_mine, self._lm_eval_target = 0, 0, 0
        if self._sharded and uses_lm:
            self._lm_eval_mine = sum(my_batches) if isinstance(my_batches, list) else int(my_batches)
            group = self.device_mesh["data_parallel"].get_group()
            self._lm_eval_target = most_across_ranks(self._lm_eval_mine, group)
            fewest = -most_across_ranks(-self._lm_eval_mine, group)
            if fewest == 0 and self._lm_eval_target > 0:  # raised on every rank: none waits in a forward
                raise ValueError(f"Under ModelParallelStrategy every rank needs at least one evaluation batch, but "
                                 f"a rank has none (at most {self._lm_eval_target} on any rank): lower "
                                 "data.eval_batch_size, evaluate more users or use fewer devices")

    def _lm_eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = self.lm.recommender.scores(batch)
        self._lm_eval_count += 1
        if self._lm_eval_count == self._lm_eval_mine:
            with torch.no_grad():
                for _ in range(self._lm_eval_target - self._lm_eval_mine):
                    self.lm.recommender.scores(batch)
        return scores
