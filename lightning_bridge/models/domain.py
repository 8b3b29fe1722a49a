"""DomainModule: trains a domain recommender (LightGCN, MF, NeuMF or SASRec) over InfoSharing's ID embeddings."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lightning_bridge.data.contract import DataNeeds, Side, connect_data
from lightning_bridge.evaluation.hooks import RankingEvaluation, Scorer
from lightning_bridge.evaluation.ranking import RankingEvaluator
from lightning_bridge.models.checkpoint_contents import save_own_hyperparameters
from lightning_bridge.models.lazy_adam import lazy_optimizer
from lightning_bridge.modules.domain.recommender import LOSSES, DomainRecommender, Encoder, Loss, build_encoder
from lightning_bridge.modules.info_sharing import InfoSharing, InitName, fold_text_channel, tables_for
from lightning_bridge.run.training_log import StepLoss, log_step

# the encoders whose loss reads only the batch's rows, and why the others cannot train with sparse gradients
SPARSE_ENCODERS = ("mf", "ncf")
NOT_SPARSE = {"lightgcn": "LightGCN propagates over every user and item row at every step (O(interactions) per "
                          "step by design)",
              "sasrec": "SASRec's loss scores the whole item table (ce) and reads its rows by indexing it"}


class DomainModule(RankingEvaluation, L.LightningModule):
    """The domain-specific model alone (the domain-only baseline), or the domain half of a BridgeModule.

    Args:
        num_users: linked from the data.
        num_items: linked from the data.
        encoder: ``lightgcn``, ``mf`` (dot-product scores of BPR-trained vectors), ``ncf`` (NeuMF: GMF and
            MLP towers over the same shared rows) or ``sasrec`` (causal self-attention over each user's most
            recent items; reads the item table only).
        num_layers: LightGCN propagation layers (2: chosen on ML-100K's validation, and kept on ML-1M).
        isolated_nodes: LightGCN's vector of a user or item with no training interaction (a new item).
            ``layer_mean`` (the paper's) averages its K+1 layers, K of them zero, so its ego row is divided
            by K+1 and it ranks far below items with neighbours. ``ego`` keeps the ego row whole, so that a
            row taught by something else (the LM's text, through InfoSharing) can compete.
        dropped_items: LightGCN's vector, in a training pass, of a seen item that BridgeModule's
            ``cold_start.item_id_dropout`` drops out. ``propagated``: its ego row is its text part, and its neighbours
            still propagate into it, so it keeps most of what its edges say. ``isolated``: the vector an item
            without edges gets (its text part; divided by K+1 under ``layer_mean``), the same kind of vector a
            new item is ranked with, so the text part learns to score new items on the scale of the others.
            Only for ``lightgcn`` inside a BridgeModule with ``cold_start.item_id_dropout`` (MF reads the same
            either way).
        embedding_dim: width of InfoSharing's tables (None: InfoSharing's default, 64). Inside a BridgeModule
            the bridge's own setting applies and a different value here is an error; so for ``init`` and
            ``init_std``.
        init: initialisation of InfoSharing's tables (None: ``xavier_uniform``).
        init_std: standard deviation (or range) for ``normal`` / ``uniform`` initialisation (None: 0.1).
        reg_weight: L2 weight on the batch's ego embeddings, ``reg_weight * ||e||^2 / (2 * batch)``.
        optimizer: built over this module's parameters.
        scheduler: optional LR scheduler, stepped every epoch.
        ks: cutoffs of the ranking metrics.
        predict_top_k: items per user written by ``predict``.
        info_sharing: the shared tables, injected by BridgeModule; built here when None.
        loss: ``bpr`` (lightgcn, mf, ncf), ``log`` (ncf: pointwise log loss, the sampled negative labelled 0),
            ``ce`` (sasrec: cross-entropy over the whole catalogue) or ``bce`` (sasrec: one sampled negative
            per position). None: the encoder's default (bpr; log for ncf; ce for sasrec).
        mlp_layers: NeuMF's MLP tower widths; they narrow from ``2 * embedding_dim`` (None:
            ``[embedding_dim, embedding_dim // 2]``).
        max_len: most recent items SASRec reads.
        num_blocks: SASRec's attention blocks.
        num_heads: SASRec's attention heads.
        dropout: SASRec's dropout, and NeuMF's between MLP layers.
        sparse_embeddings: a training step that costs O(batch) instead of O(users + items), for large
            catalogues: the batch's rows are looked up with sparse gradients and ``optimizer`` (Adam) becomes
            ``LazyAdam``, which updates only those rows and their moments (``lightning_bridge/models/lazy_adam.py``).
            Only ``mf`` and ``ncf`` read just the batch's rows; LightGCN propagates over every row at every
            step, so its gradients are dense by design, and SASRec's loss reads the whole item table: both are
            an error. Domain-only: inside a BridgeModule it is an error. The optimizer needs weight_decay 0
            (``reg_weight`` regularises the batch's rows), and gradient clipping is an error (torch cannot
            clip sparse gradients).
    """

    train_batch_kinds: tuple[Side, ...] = ("domain",)

    def __init__(self, num_users: int, num_items: int, encoder: Encoder = "lightgcn",
                 num_layers: int = 2, embedding_dim: int | None = None, init: InitName | None = None,
                 init_std: float | None = None, reg_weight: float = 1e-4,
                 optimizer: OptimizerCallable = torch.optim.Adam, scheduler: LRSchedulerCallable | None = None,
                 ks: tuple[int, ...] = (5, 10, 20),
                 predict_top_k: int = 20, info_sharing: InfoSharing | None = None, loss: Loss | None = None,
                 mlp_layers: tuple[int, ...] | None = None, max_len: int = 50, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2,
                 isolated_nodes: Literal["layer_mean", "ego"] = "layer_mean", sparse_embeddings: bool = False,
                 dropped_items: Literal["propagated", "isolated"] = "propagated") -> None:
        arguments = dict(locals())
        super().__init__()
        save_own_hyperparameters(self, arguments)
        self.predict_top_k = predict_top_k  # not a hyperparameter: a checkpoint must not override it
        if encoder not in LOSSES:
            raise ValueError(f"model.encoder must be one of {', '.join(LOSSES)}; got {encoder!r}")
        if loss is not None and loss not in LOSSES[encoder]:
            raise ValueError(f"model.loss={loss!r} does not apply to encoder={encoder!r}; it trains with "
                             f"{' or '.join(LOSSES[encoder])}")
        if sparse_embeddings and encoder not in SPARSE_ENCODERS:
            raise ValueError(f"model.sparse_embeddings=true applies to encoder {' or '.join(SPARSE_ENCODERS)}, "
                             f"whose loss reads only the batch's rows; got encoder={encoder!r}: "
                             f"{NOT_SPARSE[encoder]}, so its gradients are dense whatever the tables do")
        if dropped_items != "propagated" and (encoder != "lightgcn" or info_sharing is None):
            raise ValueError(f"model.dropped_items={dropped_items!r} applies to encoder lightgcn inside a "
                             "BridgeModule with model.cold_start.item_id_dropout > 0 (only LightGCN propagates, and "
                             "only "
                             f"the bridge drops items out); got encoder={encoder!r}"
                             + ("" if info_sharing is not None else " in a domain-only model"))
        info = tables_for("model.init_args.domain.init_args", num_users, num_items, info_sharing, embedding_dim,
                          init, init_std, sparse_embeddings)
        encoder_module = build_encoder(encoder, info.dim, num_layers, mlp_layers, max_len, num_blocks, num_heads,
                                       dropout, isolated_nodes, dropped_items)
        self.recommender = DomainRecommender(info, encoder_module, loss or LOSSES[encoder][0], reg_weight)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.evaluator = RankingEvaluator(ks)

    @property
    def info(self) -> InfoSharing:
        return self.recommender.info

    @property
    def sequence_len(self) -> int | None:
        """SASRec's history length, so that the data module serves sequences (None: no sequences)."""
        return self.recommender.sequence_len

    def data_needs(self) -> DataNeeds:
        """What the data module builds for this model (told at ``setup``)."""
        return DataNeeds(self.train_batch_kinds, self.sequence_len)

    # ---- Lightning hooks -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.info.sparse and self.trainer.gradient_clip_val:
            raise ValueError(f"trainer.gradient_clip_val={self.trainer.gradient_clip_val} cannot apply with "
                             "model.init_args.sparse_embeddings=true: torch clips neither the norm nor the values of "
                             "sparse gradients; remove one of them")
        connect_data(self.trainer.datamodule, self.data_needs())
        self.recommender.attach(self.trainer.datamodule)

    def step_loss(self, batch: dict[str, torch.Tensor]) -> StepLoss:
        """One training step's loss on a domain batch: this model's ``training_step`` and co-training's domain
        steps both take it from here."""
        loss = self.recommender.loss(batch)
        return StepLoss(loss, {"train/domain_loss": loss})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        step = self.step_loss(batch)
        log_step(self, step, len(batch["users"]))
        return step.loss

    def evaluated_models(self) -> dict[str, tuple[RankingEvaluator, Scorer]]:
        return {"domain": (self.evaluator, self.recommender.scores)}

    def predicting_model(self) -> tuple[Scorer, int]:
        return self.recommender.scores, self.predict_top_k

    def freeze_vectors(self) -> None:
        self.recommender.freeze_vectors()

    def release_vectors(self) -> None:
        self.recommender.release_vectors()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.info.sparse:
            optimizer = lazy_optimizer(optimizer, "model.init_args")
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Tables saved with the text channel (a co-training warm start with ``model.knowledge.text_channel``) load into
        a model without it as their folded item table, which scores exactly the same."""
        if self.info.text_proj is None:
            checkpoint["state_dict"] = fold_text_channel(checkpoint["state_dict"], "recommender.info.")
