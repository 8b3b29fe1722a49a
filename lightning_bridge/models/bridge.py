"""BridgeModule: BDLM co-training. One InfoSharing, injected into a DomainModule and an LMModule, which take
turns updating it under manual optimization."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import ModelParallelStrategy

from lightning_bridge.checkpoints import read_checkpoint
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lm import (
    LMModule,
    complete_slim_state_dict,
    log_task_losses,
    slim_state_dict,
    weighted_sum,
)
from lightning_bridge.models.ranking import top_k_items
from lightning_bridge.models.reproducible import step_random_state
from lightning_bridge.modules.id_tokens import ITEM
from lightning_bridge.modules.info_sharing import InfoSharing, InitName
from lightning_bridge.sharding import (
    average_replicated_grads,
    clip_grad_norm,
    is_sharded,
    most_across_ranks,
    shard_recommender,
)
from lightning_bridge.training_log import log_training_loss

Side = Literal["domain", "lm"]


class BridgeModule(L.LightningModule):
    """Alternates domain and LM optimizer steps over one shared InfoSharing; each model still recommends alone.

    Every ``training_step`` makes exactly one optimizer step (domain or LM), so ``global_step``, ``max_steps``
    and checkpoint cadence keep their usual meaning. Each side's optimizer holds its own state for the shared
    tables: an LM step never touches the domain optimizer's Adam moments, and vice versa.

    Args:
        num_users: linked from the data.
        num_items: linked from the data.
        domain: the domain model's section (``class_path`` + ``init_args``, the same options as alone).
        lm: the language model's section (the same options as when it runs alone).
        embedding_dim: width of the shared tables.
        init: initialisation of the shared tables.
        init_std: standard deviation (or range) for ``normal`` / ``uniform`` initialisation.
        domain_steps: domain steps (or epochs) per cycle of the schedule.
        lm_steps: LM steps (or epochs) per cycle.
        schedule_unit: ``step`` alternates optimizer steps; ``epoch`` alternates whole epochs.
        warmup_domain_epochs: domain-only epochs before the alternation starts.
        warm_start_checkpoint: a DomainModule checkpoint whose InfoSharing and encoder start this run.
        mutual_weight: weight of the mutual-learning KL term (0 disables it).
        mutual_temperature: softmax temperature of both score distributions in the KL term.
        mutual_direction: ``both``, ``domain_to_lm`` (the LM learns from the domain model) or ``lm_to_domain``.
        mutual_scope: ``catalogue`` (all items) or ``batch`` (the LM batch's target items).
        domain_clip: gradient-norm clip for domain steps (None: no clipping).
        lm_clip: gradient-norm clip for LM steps.
        predict_with: which model writes ``predict``'s recommendations.
        text_anchor_weight: on domain steps, the LM's ``item_text`` task replayed with the LM's text
            representations of the items held fixed: every item row, rare and new items included, keeps being
            pulled toward what the LM reads in its text while BPR trains (BPR alone pushes rows of items that
            are never positives down). The items are the LM batch's ``text_items``. 0 disables it.
        text_anchor_refresh_epochs: the LM encodes the whole catalogue's text for the anchor when co-training
            starts; afterwards each LM step's ``item_text`` task refreshes the items it read, for free. Set this
            to also re-encode the whole catalogue every that many epochs (None: never).
        warm_start_auto: before co-training, train the domain model alone with early stopping on its own
            validation NDCG@10 and start from its best epoch; counted in the domain model's own epochs, so
            the warm-up ends at the same place whatever the dataset's size (``lightning_bridge.warm_start``).
        warm_start_max_epochs: most domain-only epochs of the automatic warm start.
        warm_start_patience: validations without improvement that end the automatic warm start.
        warm_start_val_every: domain-only epochs between two validations of the automatic warm start.
        evaluate_lm: validate and test the LM beside the domain model. Off when the LM only teaches the
            shared table through its text tasks (no ``next_item`` task), which saves its prompt evaluations.
    """

    train_batch_kinds = ("domain", "lm")

    def __init__(self, num_users: int, num_items: int, domain: Callable[[int, int], DomainModule],
                 lm: Callable[[int, int], LMModule], embedding_dim: int = 64, init: InitName = "xavier_uniform",
                 init_std: float = 0.1, domain_steps: int = 4, lm_steps: int = 1,
                 schedule_unit: Literal["step", "epoch"] = "step", warmup_domain_epochs: int = 0,
                 warm_start_checkpoint: str | None = None, mutual_weight: float = 0.0,
                 mutual_temperature: float = 1.0,
                 mutual_direction: Literal["both", "domain_to_lm", "lm_to_domain"] = "both",
                 mutual_scope: Literal["catalogue", "batch"] = "catalogue", domain_clip: float | None = None,
                 lm_clip: float | None = None, predict_with: Side = "domain", text_anchor_weight: float = 0.0,
                 text_anchor_refresh_epochs: int | None = None, warm_start_auto: bool = False,
                 warm_start_max_epochs: int = 300, warm_start_patience: int = 10,
                 warm_start_val_every: int = 5, evaluate_lm: bool = True) -> None:
        super().__init__()
        if text_anchor_weight < 0:
            raise ValueError(f"model.text_anchor_weight must be >= 0, got {text_anchor_weight}")
        for name, value in (("text_anchor_refresh_epochs", text_anchor_refresh_epochs or 1),
                            ("warm_start_max_epochs", warm_start_max_epochs),
                            ("warm_start_patience", warm_start_patience),
                            ("warm_start_val_every", warm_start_val_every)):
            if value < 1:
                raise ValueError(f"model.{name} must be at least 1, got {value}")
        if warm_start_auto and warm_start_checkpoint:
            raise ValueError("model.warm_start_auto and model.warm_start_checkpoint exclude each other: give one")
        if domain_steps < 0 or lm_steps < 0 or domain_steps + lm_steps == 0:
            raise ValueError(f"domain_steps and lm_steps must be >= 0 and not both 0, got {domain_steps}, {lm_steps}")
        if schedule_unit not in ("step", "epoch"):
            raise ValueError(f"schedule_unit must be 'step' or 'epoch', got {schedule_unit!r}")
        self.save_hyperparameters(ignore=["domain", "lm"])
        self.automatic_optimization = False
        self.info = InfoSharing(num_users, num_items, embedding_dim, init, init_std)
        self.domain = domain(num_users, num_items, info_sharing=self.info)
        self.lm = lm(num_users, num_items, info_sharing=self.info)
        if warm_start_checkpoint:
            self.warm_start_from(warm_start_checkpoint)
        self._lm_teacher: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None
        self._text_anchor: TextAnchor | None = None
        self._lm_eval_seen: tuple[int, dict[str, torch.Tensor] | None] = (0, None)  # (count, last batch)
        self._lm_eval_target = 0  # LM evaluation forwards to enter this epoch (sharded only)

    def warm_start_from(self, path: str) -> None:
        """Loads InfoSharing and the domain encoder from a domain-only run."""
        state = read_checkpoint(path)["state_dict"]  # a damaged file is an error naming it
        wanted = {k: v for k, v in state.items() if k.startswith(("info.", "encoder."))}
        if not any(k.startswith("info.") for k in wanted):
            raise ValueError(f"{path}: not a DomainModule checkpoint (no 'info.*' weights)")
        expected = {k: tuple(v.shape) for k, v in self.domain.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in wanted.items()}
        if any(expected.get(k) != shape for k, shape in found.items()):
            raise ValueError(f"{path}: its weights {found} do not fit this model "
                             f"({self.info.num_users} users, {self.info.num_items} items, dim {self.info.dim})")
        self.domain.load_state_dict(wanted, strict=False)

    # ---- schedule ---------------------------------------------------------------------------------------
    def side_for_step(self, global_step: int, epoch: int) -> Side:
        """Which model steps now: a pure function of the step and epoch, so a resumed run picks up the
        schedule exactly where it stopped."""
        h = self.hparams
        if epoch < h.warmup_domain_epochs:
            return "domain"
        position = global_step if h.schedule_unit == "step" else epoch - h.warmup_domain_epochs
        return "domain" if position % (h.domain_steps + h.lm_steps) < h.domain_steps else "lm"

    # ---- training ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.domain.attach_data(self.trainer.datamodule)
        self.lm.attach_data(self.trainer.datamodule)

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        side = self.side_for_step(self.global_step, self.current_epoch)
        domain_opt, lm_opt = self.optimizers()
        opt, clip = (domain_opt, self.hparams.domain_clip) if side == "domain" else (lm_opt, self.hparams.lm_clip)
        part = batch[side]
        with step_random_state(self.global_step, self.device):
            if side == "domain":
                loss = self.domain.loss(part)
                total = loss + self._anchor_term(batch["lm"])
            else:
                losses = self.lm.losses(part)
                loss = weighted_sum(losses, self.lm.task_weights)
                if self._text_anchor is not None and self.lm.latest_item_text_queries is not None:
                    self._text_anchor.update(*self.lm.latest_item_text_queries)
                log_task_losses(self, losses, len(part["users"]))
                total = loss
            total = total + self._mutual_term(side, part)
        log_training_loss(self, f"train/{side}_loss", loss, len(part["users"]), prog_bar=True)
        opt.zero_grad()
        self.manual_backward(total)
        self._sync_and_clip(opt, clip)
        opt.step()
        return total

    # ---- sharded training (FSDP2) -----------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (FSDP2), shard the LM over the data-parallel ranks
        (``lightning_bridge.sharding``); other strategies leave the model as it is."""
        if not self._sharded or is_sharded(next(self.lm.recommender.parameters())):
            return
        if self.lm.hparams.finetune == "frozen":
            raise ValueError("A frozen backbone (model.lm.finetune: frozen) caches its text features outside the "
                             "sharded forward; use ModelParallelStrategy with finetune lora or full")
        shard_recommender(self.lm.recommender, self.device_mesh["data_parallel"])
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

    # ---- the text anchor ---------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        h, epoch = self.hparams, self.current_epoch
        if h.text_anchor_weight == 0 or epoch < h.warmup_domain_epochs:
            return
        refresh = h.text_anchor_refresh_epochs
        if self._text_anchor is None or (refresh and epoch - self._text_anchor.epoch >= refresh):
            self._text_anchor = TextAnchor.from_lm(self.lm, epoch)

    def _anchor_term(self, lm_part: dict[str, torch.Tensor]) -> torch.Tensor:
        """The LM's item-text cross-entropy over the catalogue, with the LM's text queries held fixed, so that
        only InfoSharing's item rows move (with the domain optimizer)."""
        if self._text_anchor is None:
            return torch.zeros((), device=self.device)
        if "text_items" not in lm_part:
            raise ValueError("model.text_anchor_weight > 0 needs LM batches with text_items: set "
                             "data.text_batch_size > 0 (and use data with item text)")
        items = lm_part["text_items"].to(self.device)
        queries = self._text_anchor.queries.to(self.device)[items]
        loss = F.cross_entropy(self.lm.recommender.score_queries(queries, self.info.item.weight).float(), items)
        log_training_loss(self, "train/text_anchor_loss", loss, len(items))
        return self.hparams.text_anchor_weight * loss

    def _mutual_term(self, side: Side, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """KL between the two models' score distributions over the same items.

        On an LM step both models score the LM batch's users: the LM learns from the domain model's
        (detached) distribution, and that LM distribution is kept as the teacher for the following domain
        steps, which pull the domain model's scores for the same users towards it.
        """
        h = self.hparams
        zero = torch.zeros((), device=self.device)
        if h.mutual_weight == 0:
            return zero
        t = h.mutual_temperature
        if side == "lm":
            users = part["users"]
            columns = part["targets"][:, 0].unique() if h.mutual_scope == "batch" else None
            lm_scores = self.lm.scores(part)
            with torch.no_grad():
                domain_scores = self.domain.scores(users.to(self.device))
            if columns is not None:
                lm_scores, domain_scores = lm_scores[:, columns], domain_scores[:, columns]
            self._lm_teacher = (users, columns, lm_scores.detach())
            if h.mutual_direction == "lm_to_domain":
                return zero
            kl = _kl(domain_scores, lm_scores, t)
        else:
            if self._lm_teacher is None or h.mutual_direction == "domain_to_lm":
                return zero
            users, columns, teacher = self._lm_teacher
            student = self.domain.scores(users.to(self.device))
            kl = _kl(teacher, student if columns is None else student[:, columns], t)
        log_training_loss(self, "train/mutual_kl", kl, len(part["users"]))
        return h.mutual_weight * t * t * kl

    def configure_optimizers(self):
        """Each side's own optimizer (and scheduler) from its config section: domain first, then LM."""
        configs = [self.domain.configure_optimizers(), self.lm.configure_optimizers()]
        return [c if isinstance(c, dict) else {"optimizer": c} for c in configs]

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    # ---- evaluation: each model alone, side by side -----------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        t = self.trainer
        self._plan_sharded_evaluation(t.num_sanity_val_batches if t.sanity_checking else t.num_val_batches,
                                      self.hparams.evaluate_lm)
        self.domain.freeze_vectors()

    def on_test_epoch_start(self) -> None:
        self._plan_sharded_evaluation(self.trainer.num_test_batches, self.hparams.evaluate_lm)
        self.domain.freeze_vectors()

    def on_predict_epoch_start(self) -> None:
        self._plan_sharded_evaluation(self.trainer.num_predict_batches, self.hparams.predict_with == "lm")
        self.domain.freeze_vectors()

    def _evaluate(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        self.domain.evaluator.update(stage, self.domain.scores(batch["users"], batch.get("sequence")), batch)
        if self.hparams.evaluate_lm:
            self.lm.evaluator.update(stage, self._lm_eval_scores(batch), batch)

    def _lm_eval_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self._lm_eval_seen = (self._lm_eval_seen[0] + 1, batch)
        return self.lm.scores(batch).float()

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
                self.lm.scores(last)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _log_stage(self, stage: str) -> None:
        self._finish_sharded_evaluation()
        lm = self.lm.evaluator.compute(stage, "lm") if self.hparams.evaluate_lm else {}
        self.log_dict({**self.domain.evaluator.compute(stage, "domain"), **lm})
        self.domain.release_vectors()

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        if self.hparams.predict_with == "domain":
            scores = self.domain.scores(batch["users"], batch.get("sequence"))
            return top_k_items(scores, batch, self.domain.predict_top_k)
        return top_k_items(self._lm_eval_scores(batch), batch, self.lm.predict_top_k)

    def on_predict_epoch_end(self) -> None:
        self._finish_sharded_evaluation()
        self.domain.release_vectors()

    # ---- checkpoints -----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = slim_state_dict(self, checkpoint["state_dict"])
        if self._text_anchor is not None:  # a resumed run replays the same anchor until its next refresh
            checkpoint["text_anchor"] = {"epoch": self._text_anchor.epoch, "queries": self._text_anchor.queries}
        # what export_domain needs to write a DomainModule checkpoint without loading the LM
        checkpoint["domain_hyper_parameters"] = {**self.domain.hparams, "embedding_dim": self.info.dim}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # ModelParallelStrategy has loaded the weights already
            complete_slim_state_dict(self, checkpoint["state_dict"])
        if "text_anchor" in checkpoint:
            self._text_anchor = TextAnchor(**checkpoint["text_anchor"])


@dataclass
class TextAnchor:
    """The LM's text representation of every item (zeros where an item has no text), encoded in full at
    ``epoch`` and refreshed item by item as the LM's item-text task reads them."""

    epoch: int
    queries: torch.Tensor

    def update(self, items: torch.Tensor, queries: torch.Tensor) -> None:
        self.queries[items.to(self.queries.device)] = queries.to(self.queries)

    @classmethod
    def from_lm(cls, lm: LMModule, epoch: int, batch_size: int = 256) -> TextAnchor:
        """Encodes every item's text with the LM in eval mode (no dropout), without gradients."""
        has_text = [i for i, text in enumerate(lm.prompts.item_texts) if text] if lm.prompts else []
        queries = torch.zeros(lm.info.num_items, lm.info.dim, device=lm.device)
        was_training = lm.training
        lm.eval()
        with torch.no_grad():
            for start in range(0, len(has_text), batch_size):
                ids = torch.tensor(has_text[start: start + batch_size], device=lm.device)
                queries[ids] = lm.text_queries(ITEM, ids).float()
        lm.train(was_training)
        return cls(epoch, queries)


def _kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened score distributions, averaged over rows."""
    return F.kl_div(F.log_softmax(student_logits.float() / temperature, -1),
                    F.log_softmax(teacher_logits.float() / temperature, -1), log_target=True,
                    reduction="batchmean")
