"""BridgeModule: BDLM co-training. One InfoSharing, injected into a DomainModule and an LMModule, which take
turns updating it under manual optimization."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning as L
import torch

from lightning_bridge.co_training.knowledge import KnowledgePath
from lightning_bridge.co_training.settings import ColdStart, Knowledge, Schedule, WarmStart, as_group
from lightning_bridge.co_training.sharded import FullyShardedCoTraining
from lightning_bridge.co_training.text_anchor import TextAnchor
from lightning_bridge.data.contract import DataNeeds, Side, connect_data
from lightning_bridge.evaluation.hooks import RankingEvaluation, Scorer
from lightning_bridge.evaluation.ranking import RankingEvaluator
from lightning_bridge.models.checkpoint_contents import (
    DOMAIN_HPARAMS_KEY,
    TEXT_ANCHOR_KEY,
    TEXT_CHANNEL_EPOCH_KEY,
    WARM_STARTED_FROM_KEY,
    complete_slim_state_dict,
    slim_state_dict,
)
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lm import LMModule
from lightning_bridge.models.reproducible import step_random_state
from lightning_bridge.modules.info_sharing import InfoSharing, InitName
from lightning_bridge.run.checkpoints import read_checkpoint
from lightning_bridge.run.fingerprint import KEY as FINGERPRINT_KEY
from lightning_bridge.run.training_log import log_step


class BridgeModule(KnowledgePath, FullyShardedCoTraining, RankingEvaluation, L.LightningModule):
    """Alternates domain and LM optimizer steps over one shared InfoSharing; each model still recommends alone.

    Every ``training_step`` makes exactly one optimizer step (domain or LM), so ``global_step``, ``max_steps``
    and checkpoint cadence keep their usual meaning. Each side's optimizer holds its own state for the shared
    tables: an LM step never touches the domain optimizer's Adam moments, and vice versa.

    Every step receives one batch of each kind (``train_batch_kinds``, told to the data module), whichever
    side steps: the other side's batch is built and left unused, except that a domain step reads the LM
    batch's ``text_items`` for the text anchor. With ``schedule.domain_steps: 4`` four of five LM batches go unused;
    they are cheap to build (ids and histories; prompts are built only by the LM that steps).

    Args:
        num_users: linked from the data.
        num_items: linked from the data.
        domain: the domain model's section (``class_path`` + ``init_args``, the same options as alone).
        lm: the language model's section (the same options as when it runs alone).
        embedding_dim: width of the shared tables.
        init: initialisation of the shared tables.
        init_std: standard deviation (or range) for ``normal`` / ``uniform`` initialisation.
        schedule: which model steps when (domain and LM steps per cycle) and each side's gradient clipping.
        warm_start: where co-training starts: the domain model trained alone first (``auto``, by default;
            ``lightning_bridge.co_training.warm_start``) or a domain-only run's ``checkpoint``.
        knowledge: how the LM's reading of item texts reaches the shared item table (the text anchor, the text
            channel).
        cold_start: training for new items (DropoutNet's item-ID dropout over the text channel).
        predict_with: which model writes ``predict``'s recommendations.
        evaluate_lm: validate and test the LM beside the domain model. Off when the LM only teaches the
            shared table through its text tasks (no ``next_item`` task), which saves its prompt evaluations.
    """

    train_batch_kinds: tuple[Side, ...] = ("domain", "lm")

    def __init__(self, num_users: int, num_items: int, domain: Callable[[int, int], DomainModule],
                 lm: Callable[[int, int], LMModule], embedding_dim: int = 64, init: InitName = "xavier_uniform",
                 init_std: float = 0.1, schedule: Schedule = Schedule(), warm_start: WarmStart = WarmStart(),
                 knowledge: Knowledge = Knowledge(), cold_start: ColdStart = ColdStart(),
                 predict_with: Side = "domain", evaluate_lm: bool = True) -> None:
        super().__init__()
        # a checkpoint's hyperparameters hold the groups as plain dicts (see ``settings``)
        self.schedule = as_group(Schedule, schedule)
        self.warm_start = as_group(WarmStart, warm_start)
        self.knowledge = as_group(Knowledge, knowledge)
        self.cold_start = as_group(ColdStart, cold_start)
        if self.cold_start.item_id_dropout and not self.knowledge.text_channel:
            raise ValueError("model.cold_start.item_id_dropout > 0 needs model.knowledge.text_channel=true: without "
                             "a text part an item whose ID row is dropped has no vector at all")
        # hparams keep the groups as plain dicts, which checkpoints read with weights_only=True
        schedule, warm_start, knowledge, cold_start = (asdict(g) for g in (self.schedule, self.warm_start,
                                                                             self.knowledge, self.cold_start))
        self.save_hyperparameters(ignore=["domain", "lm"])
        self.automatic_optimization = False
        self.info = InfoSharing(num_users, num_items, embedding_dim, init, init_std)
        self.domain = domain(num_users, num_items, info_sharing=self.info)
        self.lm = lm(num_users, num_items, info_sharing=self.info)
        if self.domain.hparams.get("dropped_items") == "isolated" and not self.cold_start.item_id_dropout:
            raise ValueError("model.domain.init_args.dropped_items=isolated needs model.cold_start.item_id_dropout "
                             "> 0: without it no item is ever dropped out")
        # the LM's pooled states are its final hidden states, as wide as its output projection
        if self.knowledge.text_channel:
            self.info.add_text_channel(self.lm.recommender.text_dim, self.cold_start.item_id_dropout)
        self._text_channel_epoch: int | None = None  # the epoch whose start last encoded the item texts
        if self.warm_start.checkpoint:
            self.warm_start_from(self.warm_start.checkpoint)
        self._text_anchor: TextAnchor | None = None
        # after an automatic warm start: its best checkpoint and validation score (AutomaticWarmStart)
        self.warm_started_from: tuple[str, float] | None = None

    def warm_start_from(self, path: str) -> None:
        """Loads InfoSharing and the domain encoder from a domain-only run."""
        checkpoint = read_checkpoint(path)  # a damaged file is an error naming it; read once, here
        self.warm_start_fingerprint = checkpoint.get(FINGERPRINT_KEY)  # the CLI checks it against the data
        state = checkpoint["state_dict"]
        expected = {k: tuple(v.shape) for k, v in self.domain.state_dict().items()}
        wanted = {k: v for k, v in state.items() if k in expected}
        if not any(k.startswith("recommender.info.") for k in wanted):
            raise ValueError(f"{path}: not a DomainModule checkpoint (no 'info.*' weights)")
        found = {k: tuple(v.shape) for k, v in wanted.items()}
        if any(expected[k] != shape for k, shape in found.items()):
            raise ValueError(f"{path}: its weights {found} do not fit this model "
                             f"({self.info.num_users} users, {self.info.num_items} items, dim {self.info.dim})")
        self.domain.load_state_dict(wanted, strict=False)

    def configure_callbacks(self) -> list[L.Callback]:
        """The automatic warm start belongs to co-training, whoever calls ``fit``; not to a test or prediction
        (Lightning asks again for those, and would announce that the new one replaces fit's)."""
        from lightning_bridge.co_training.warm_start import AutomaticWarmStart  # it trains this module's domain model

        return [AutomaticWarmStart()] if self.warm_start.auto and self.trainer.state.fn == "fit" else []

    # ---- schedule ---------------------------------------------------------------------------------------
    def side_for_step(self, global_step: int) -> Side:
        """Which model steps now: a pure function of the step, so a resumed run picks up the schedule exactly
        where it stopped."""
        s = self.schedule
        return "domain" if global_step % (s.domain_steps + s.lm_steps) < s.domain_steps else "lm"

    # ---- training ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        connect_data(self.trainer.datamodule, self.data_needs())
        self.domain.recommender.attach(self.trainer.datamodule)
        self.lm.recommender.attach(self.trainer.datamodule)
        if self.knowledge.text_channel:
            self.prepare_text_channel(self.trainer.datamodule)

    def data_needs(self) -> DataNeeds:
        """One batch of each side's kind per step, sequences where the domain model reads them."""
        return DataNeeds(self.train_batch_kinds, self.domain.sequence_len)

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        side = self.side_for_step(self.global_step)
        domain_opt, lm_opt = self.optimizers()
        clip = self.schedule.domain_clip if side == "domain" else self.schedule.lm_clip
        opt = domain_opt if side == "domain" else lm_opt
        part = batch[side]
        with step_random_state(self.global_step, self.device):
            step = (self.domain if side == "domain" else self.lm).step_loss(part)
            if side == "domain":
                total = step.loss + self._anchor_term(batch["lm"])
            else:
                if self._text_anchor is not None and step.item_text_queries is not None:
                    self._text_anchor.update(*step.item_text_queries)
                total = step.loss
        log_step(self, step, len(part["users"]))
        opt.zero_grad()
        self.manual_backward(total)
        self._sync_and_clip(opt, clip)
        opt.step()
        return total

    def configure_optimizers(self):
        """Each side's own optimizer (and scheduler) from its config section: domain first, then LM."""
        configs = [c if isinstance(c, dict) else {"optimizer": c}
                   for c in (self.domain.configure_optimizers(), self.lm.configure_optimizers())]
        return configs

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    # ---- evaluation: each model alone, side by side -----------------------------------------------------
    def evaluated_models(self) -> dict[str, tuple[RankingEvaluator, Scorer]]:
        models = {"domain": (self.domain.evaluator, self.domain.recommender.scores)}
        if self.hparams.evaluate_lm:
            models["lm"] = (self.lm.evaluator, self._lm_eval_scores)
        return models

    def predicting_model(self) -> tuple[Scorer, int]:
        if self.hparams.predict_with == "domain":
            return self.domain.recommender.scores, self.domain.predict_top_k
        return self._lm_eval_scores, self.lm.predict_top_k

    def freeze_vectors(self) -> None:
        self.domain.recommender.freeze_vectors()

    def release_vectors(self) -> None:
        self.domain.recommender.release_vectors()

    # ---- checkpoints -----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = slim_state_dict(self, checkpoint["state_dict"])
        if self._text_channel_epoch is not None:  # the features themselves are InfoSharing's buffer
            checkpoint[TEXT_CHANNEL_EPOCH_KEY] = self._text_channel_epoch
        if self._text_anchor is not None:  # a resumed run replays the same anchor until its next refresh
            checkpoint[TEXT_ANCHOR_KEY] = {"epoch": self._text_anchor.epoch, "queries": self._text_anchor.queries}
        if self.warm_started_from is not None:  # a resumed run still reports where co-training began
            checkpoint[WARM_STARTED_FROM_KEY] = list(self.warm_started_from)
        # what export_domain needs to write a DomainModule checkpoint without loading the LM
        checkpoint[DOMAIN_HPARAMS_KEY] = self.domain_hyper_parameters()

    def domain_hyper_parameters(self) -> dict[str, Any]:
        """The domain model's class and own settings, and the shared tables' settings, which are the bridge's:
        what a checkpoint of the domain model alone needs to be loaded or tested without the bridge.
        ``dropped_items`` acts only on the bridge's item dropout, so the model alone gets its default (a domain
        model alone refuses any other value)."""
        domain_class = f"{type(self.domain).__module__}.{type(self.domain).__qualname__}"
        return {"_class_path": domain_class, **self.domain.hparams, "dropped_items": "propagated",
                **self.info.settings}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # ModelParallelStrategy has loaded the weights already
            complete_slim_state_dict(self, checkpoint["state_dict"])
        if TEXT_ANCHOR_KEY in checkpoint:
            self._text_anchor = TextAnchor(**checkpoint[TEXT_ANCHOR_KEY])
        self._text_channel_epoch = checkpoint.get(TEXT_CHANNEL_EPOCH_KEY)
        if WARM_STARTED_FROM_KEY in checkpoint:
            path, score = checkpoint[WARM_STARTED_FROM_KEY]
            self.warm_started_from = (path, float(score))

