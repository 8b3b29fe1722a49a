"""LMModule: a Hugging Face backbone that reads ID tokens from InfoSharing and ranks the whole catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lightning_bridge.models.hparams import save_init_hyperparameters
from lightning_bridge.models.ranking import RankingEvaluator, top_k_items
from lightning_bridge.modules.backbone import Finetune, add_id_placeholder, load_backbone
from lightning_bridge.modules.id_tokens import LMRecommender, Pooling
from lightning_bridge.modules.info_sharing import InfoSharing, InitName
from lightning_bridge.modules.prompts import DEFAULT_TEMPLATE, PromptBuilder
from lightning_bridge.modules.tiny import TINY_NAMES


class LMModule(L.LightningModule):
    """The language-model recommender alone (the LM-only baseline), or the LM half of a BridgeModule.

    A prompt names the user and their recent items as ID tokens plus text; the pooled final hidden state,
    projected to InfoSharing's width, scores every item; training is cross-entropy on the true next item.

    Args:
        num_users: linked from the data.
        num_items: linked from the data.
        backbone: hub id, local folder, ``minilm`` (the packaged all-MiniLM-L6-v2), ``tiny-decoder`` or
            ``tiny-encoder`` (random microscopic models for tests).
        local_files_only: never ask the Hugging Face hub.
        dtype: ``float32`` (the CPU default), ``bfloat16`` or ``float16``.
        gradient_checkpointing: trade compute for activation memory.
        finetune: ``lora``, ``full`` or ``frozen`` backbone.
        lora_rank: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        lora_target_modules: module names to adapt (default: every attention and MLP linear layer).
        pooling: ``last`` (decoder default), ``mean`` (encoder default) or ``first``.
        template: the prompt, with ``{history}`` required and ``{user}``, ``{user_text}`` optional.
        max_length: most tokens in a prompt; the oldest items are dropped whole to fit.
        max_item_tokens: most tokens of one item's text.
        embedding_dim: width of InfoSharing's tables (when this module builds them).
        init: initialisation of InfoSharing's tables.
        init_std: standard deviation (or range) for ``normal`` / ``uniform`` initialisation.
        optimizer: built over this module's trainable parameters.
        scheduler: optional LR scheduler, stepped every epoch.
        ks: cutoffs of the ranking metrics.
        predict_top_k: items per user written by ``predict``.
        info_sharing: the shared tables, injected by BridgeModule; built here when None.
    """

    train_batch_kinds = ("lm",)

    def __init__(self, num_users: int, num_items: int, backbone: str = "minilm", local_files_only: bool = True,
                 dtype: Literal["float32", "bfloat16", "float16"] = "float32",
                 gradient_checkpointing: bool = False, finetune: Finetune = "lora", lora_rank: int = 8,
                 lora_alpha: int = 16, lora_dropout: float = 0.05, lora_target_modules: list[str] | None = None,
                 pooling: Pooling | None = None, template: str = DEFAULT_TEMPLATE, max_length: int = 128,
                 max_item_tokens: int = 24, embedding_dim: int = 64, init: InitName = "xavier_uniform",
                 init_std: float = 0.1, optimizer: OptimizerCallable = torch.optim.AdamW,
                 scheduler: LRSchedulerCallable | None = None, ks: tuple[int, ...] = (5, 10, 20),
                 predict_top_k: int = 20, info_sharing: InfoSharing | None = None) -> None:
        super().__init__()
        save_init_hyperparameters(self, ignore=["info_sharing", "optimizer", "scheduler", "predict_top_k"])
        self.predict_top_k = predict_top_k  # not a hyperparameter: a checkpoint must not override it
        backbone_model, self.tokenizer, is_decoder = load_backbone(
            backbone, local_files_only=local_files_only, dtype=dtype,
            gradient_checkpointing=gradient_checkpointing, finetune=finetune, lora_rank=lora_rank,
            lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_target_modules=lora_target_modules)
        id_token = add_id_placeholder(self.tokenizer)
        self.info = info_sharing or InfoSharing(num_users, num_items, embedding_dim, init, init_std)
        self.recommender = LMRecommender(backbone_model, self.info.dim, id_token, is_decoder=is_decoder,
                                         pooling=pooling)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.evaluator = RankingEvaluator(ks)
        self.prompts: PromptBuilder | None = None
        # Frozen backbone weights are reloaded from their source, so checkpoints leave them out.
        self.strict_loading = False

    # ---- the maths, also called by BridgeModule --------------------------------------------------------
    def attach_data(self, datamodule) -> None:
        """Tokenises the item (and user) texts once for prompt assembly."""
        if datamodule is None:
            raise RuntimeError("LMModule needs a lightning_bridge DataModule (it reads the item texts)")
        if datamodule.num_items != self.hparams.num_items or datamodule.num_users != self.hparams.num_users:
            raise ValueError(f"the data has {datamodule.num_users} users and {datamodule.num_items} items but "
                             f"the model was built for {self.hparams.num_users} and {self.hparams.num_items}")
        h = self.hparams
        self.prompts = PromptBuilder(self.tokenizer, self.recommender.id_token_id, datamodule.item_text,
                                     datamodule.user_text, h.template, h.max_length, h.max_item_tokens)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Prompt tensors for a batch's users and histories, on the model's device."""
        if self.prompts is None:
            raise RuntimeError("LMModule.attach_data must run before prompts can be built")
        return {k: v.to(self.device) for k, v in self.prompts.build(batch["users"], batch["history"]).items()}

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, num_items) scores of every item after each prompt."""
        return self.recommender.scores(**self.encode(batch), info=self.info)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the true next item over the whole catalogue."""
        return F.cross_entropy(self.scores(batch).float(), batch["targets"][:, 0])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ---- Lightning hooks -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.attach_data(self.trainer.datamodule)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/lm_loss", loss, prog_bar=True, batch_size=len(batch["users"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluator.update("val", self.scores(batch).float(), batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluator.update("test", self.scores(batch).float(), batch)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.evaluator.compute("val", "lm"))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.evaluator.compute("test", "lm"))

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return top_k_items(self.scores(batch).float(), batch, self.predict_top_k)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    # ---- slim checkpoints and adapters -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = slim_state_dict(self, checkpoint["state_dict"])

    def save_adapter(self, folder: str | Path) -> None:
        """Writes the LoRA adapter with peft's ``save_pretrained`` (loadable with ``PeftModel``)."""
        self.recommender.backbone.save_pretrained(str(folder))


def slim_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drops frozen backbone weights, which are reloaded from their source (random tiny backbones are
    kept: they have no source)."""
    if getattr(module, "hparams", {}).get("backbone") in TINY_NAMES:
        return state
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    return {k: v for k, v in state.items() if k not in frozen}
