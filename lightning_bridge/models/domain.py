"""DomainModule: trains a domain recommender (LightGCN, MF, NeuMF or SASRec) over InfoSharing's ID embeddings."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lightning_bridge.models.hparams import save_init_hyperparameters
from lightning_bridge.models.ranking import RankingEvaluator, top_k_items
from lightning_bridge.modules.encoders import MF, LightGCN
from lightning_bridge.modules.info_sharing import InfoSharing, InitName
from lightning_bridge.modules.ncf import NeuMF
from lightning_bridge.modules.sasrec import SASRec, check_histories, warn_about_order
from lightning_bridge.training_log import log_training_loss

Encoder = Literal["lightgcn", "mf", "ncf", "sasrec"]
Loss = Literal["bpr", "log", "ce", "bce"]
# the losses each encoder trains with, its default first
LOSSES: dict[str, tuple[str, ...]] = {"lightgcn": ("bpr",), "mf": ("bpr",), "ncf": ("log", "bpr"),
                                      "sasrec": ("ce", "bce")}


class DomainModule(L.LightningModule):
    """The domain-specific model alone (the domain-only baseline), or the domain half of a BridgeModule.

    Args:
        num_users: linked from the data.
        num_items: linked from the data.
        encoder: ``lightgcn``, ``mf`` (dot-product scores of BPR-trained vectors), ``ncf`` (NeuMF: GMF and
            MLP towers over the same shared rows) or ``sasrec`` (causal self-attention over each user's most
            recent items; reads the item table only).
        num_layers: LightGCN propagation layers.
        embedding_dim: width of InfoSharing's tables (when this module builds them).
        init: initialisation of InfoSharing's tables.
        init_std: standard deviation (or range) for ``normal`` / ``uniform`` initialisation.
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
    """

    train_batch_kinds = ("domain",)

    def __init__(self, num_users: int, num_items: int, encoder: Encoder = "lightgcn",
                 num_layers: int = 3, embedding_dim: int = 64, init: InitName = "xavier_uniform",
                 init_std: float = 0.1, reg_weight: float = 1e-4, optimizer: OptimizerCallable = torch.optim.Adam,
                 scheduler: LRSchedulerCallable | None = None, ks: tuple[int, ...] = (5, 10, 20),
                 predict_top_k: int = 20, info_sharing: InfoSharing | None = None, loss: Loss | None = None,
                 mlp_layers: tuple[int, ...] | None = None, max_len: int = 50, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        save_init_hyperparameters(self, ignore=["info_sharing", "optimizer", "scheduler", "predict_top_k"])
        self.predict_top_k = predict_top_k  # not a hyperparameter: a checkpoint must not override it
        if encoder not in LOSSES:
            raise ValueError(f"model.encoder must be one of {', '.join(LOSSES)}; got {encoder!r}")
        if loss is not None and loss not in LOSSES[encoder]:
            raise ValueError(f"model.loss={loss!r} does not apply to encoder={encoder!r}; it trains with "
                             f"{' or '.join(LOSSES[encoder])}")
        self.loss_kind = loss or LOSSES[encoder][0]
        self.info = info_sharing or InfoSharing(num_users, num_items, embedding_dim, init, init_std)
        dim = self.info.dim
        if encoder == "lightgcn":
            self.encoder = LightGCN(num_layers)
        elif encoder == "mf":
            self.encoder = MF()
        elif encoder == "ncf":
            self.encoder = NeuMF(dim, mlp_layers, dropout)
        else:
            self.encoder = SASRec(dim, max_len, num_blocks, num_heads, dropout)
        # SASRec's fallback input when a caller has no sequence (BridgeModule's mutual-learning term): each
        # user's most recent training items, set by attach_data
        self._train_sequences: torch.Tensor | None = None
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.evaluator = RankingEvaluator(ks)
        self._frozen_vectors: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- the maths, also called by BridgeModule --------------------------------------------------------
    def attach_data(self, datamodule) -> None:
        """Reads the training graph; checks that the data matches the sizes this model was built with."""
        if datamodule is None:
            raise RuntimeError("DomainModule needs a lightning_bridge DataModule (it reads the training graph)")
        expected = (self.hparams.num_users, self.hparams.num_items)
        if (datamodule.num_users, datamodule.num_items) != expected:
            raise ValueError(f"the data has {datamodule.num_users} users and {datamodule.num_items} items but "
                             f"the model was built for {expected[0]} and {expected[1]}")
        if isinstance(self.encoder, SASRec):
            warn_about_order(datamodule.interactions.users, datamodule.interactions.timestamps)
            sequences = datamodule.recent_training_items(self.encoder.max_len)
            check_histories(sequences, datamodule.interactions.user_ids)
            self._train_sequences = torch.from_numpy(sequences)
        elif not isinstance(self.encoder, NeuMF):
            self.encoder.set_graph(*datamodule.train_graph(), *expected)

    @property
    def sequence_len(self) -> int | None:
        """Most recent items the encoder reads per user (the data module then serves sequences), or None."""
        return self.encoder.max_len if isinstance(self.encoder, SASRec) else None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ranking loss plus L2 on the batch's ego embeddings; the graph is propagated once per batch."""
        if isinstance(self.encoder, SASRec):
            return self._next_item_loss(batch)
        users, pos, neg = batch["users"], batch["pos"], batch["neg"]
        user_vec, item_vec = self.encoder(self.info)
        if isinstance(self.encoder, NeuMF):
            ranking = self.encoder.loss(user_vec[users], item_vec[pos], item_vec[neg], self.loss_kind)
        else:  # softplus(-(s_pos - s_neg)) with one product instead of two
            ranking = F.softplus((user_vec[users] * (item_vec[neg] - item_vec[pos])).sum(-1)).mean()
        ego = _squared_rows(self.info.user.weight, users) + _squared_rows(self.info.item.weight, torch.cat([pos, neg]))
        return ranking + self.hparams.reg_weight * ego / (2 * len(users))

    def _next_item_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SASRec's loss at every target of the batch's windows, plus L2 on the target items' rows."""
        items, targets = self.info.item.weight, batch["targets"]
        ranking = self.encoder.loss(items, batch["inputs"], targets, batch["neg"], self.loss_kind)
        present = targets[targets >= 0]
        return ranking + self.hparams.reg_weight * _squared_rows(items, present) / (2 * len(present))

    def freeze_vectors(self) -> None:
        """Propagates once and keeps the result, so evaluation does not repeat it for every user batch."""
        with torch.no_grad():
            self._frozen_vectors = self.encoder(self.info)

    def release_vectors(self) -> None:
        self._frozen_vectors = None

    def scores(self, users: torch.Tensor, sequence: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_items) scores of every item for each user. SASRec reads ``sequence`` (the evaluation
        batch's, B x max_len), or when it is None the users' most recent training items."""
        user_vec, item_vec = self._frozen_vectors or self.encoder(self.info)
        if isinstance(self.encoder, SASRec):
            if sequence is None:
                if self._train_sequences is None:
                    raise RuntimeError("DomainModule.attach_data must run before SASRec can score users")
                sequence = self._train_sequences[users.cpu()]
            return self.encoder.scores(item_vec, sequence.to(item_vec.device))
        if isinstance(self.encoder, NeuMF):
            return self.encoder.scores(user_vec[users], item_vec)
        return user_vec[users] @ item_vec.T

    # ---- Lightning hooks -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.attach_data(self.trainer.datamodule)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        log_training_loss(self, "train/domain_loss", loss, len(batch["users"]), prog_bar=_logs_this_step(self))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.freeze_vectors()

    on_test_epoch_start = on_predict_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluator.update("val", self.scores(batch["users"], batch.get("sequence")), batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.evaluator.update("test", self.scores(batch["users"], batch.get("sequence")), batch)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.evaluator.compute("val", "domain"))
        self.release_vectors()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.evaluator.compute("test", "domain"))
        self.release_vectors()

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return top_k_items(self.scores(batch["users"], batch.get("sequence")), batch, self.predict_top_k)

    def on_predict_epoch_end(self) -> None:
        self.release_vectors()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


def _squared_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table[rows].square().sum()``. When the table is not much larger than the batch, weighting each row's
    squared norm by its count in ``rows`` is the same sum without gathering (and scattering back in backward)
    a (len(rows), dim) copy: about 40% of a LightGCN step's non-propagation time on MovieLens-100K."""
    if table.shape[0] > 2 * rows.numel():
        return table[rows].square().sum()
    counts = torch.bincount(rows, minlength=table.shape[0]).to(table.dtype)
    return counts @ table.square().sum(1)


def _logs_this_step(module: L.LightningModule) -> bool:
    """Whether Lightning writes step metrics after this step (every ``log_every_n_steps``, counted in
    optimizer steps), the only steps whose progress-bar value anyone sees. A per-step ``self.log`` costs about
    a millisecond of Lightning bookkeeping, several percent of a LightGCN step on MovieLens-100K; the
    TensorBoard curve is written by ``TrainingCurves`` (about 3 µs per step to record the value)."""
    trainer = module._trainer
    if trainer is None:  # a bare call of training_step: let self.log decide what to do
        return True
    every, step = trainer.log_every_n_steps, trainer.global_step
    return every <= 1 or step == 0 or (step + 1) % every == 0
