"""What a RecDataModule serves each stage: the training batches the model it serves asked for (``connect``) and
the users validation, test and predict rank (predict: a request's users where one was made), each evaluation's
dataset built once and reused."""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch.utils.data import DataLoader

from lightning_bridge.data.batches import EvalUsers, ShardedBatches, batches_done_this_epoch
from lightning_bridge.data.contract import DataNeeds, Side
from lightning_bridge.data.groups import report_groups
from lightning_bridge.data.requests import PredictionRequest, request_dataset
from lightning_bridge.data.training_batches import BPRTriples, LMExamples, SequenceWindows, text_samplers


class StageLoaders:
    """Mixed into RecDataModule (before LightningDataModule): its loaders, read from its split and histories, and
    the state its ``__init__`` sets for them (``needs``, ``_request``, ``_eval_datasets``)."""

    def connect(self, needs: DataNeeds) -> None:
        """Told by the model it serves (at its ``setup``) which batches to build: its training batch kinds and
        whether its domain model reads histories."""
        self.needs = needs

    def _loader(self, dataset, num_batches: int, even: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, sampler=ShardedBatches(num_batches, even=even), batch_size=None,
                          num_workers=workers, persistent_workers=workers > 0)

    def _train_dataset(self, kind: Side):
        h, inter, rows = self.hparams, self.interactions, self.split.train
        if kind == "domain" and self.needs.sequence_len is not None:
            return SequenceWindows(self._histories(rows), self.needs.sequence_len, self.num_items,
                                   h.sequence_batch_size, self.seed)
        if kind == "domain":
            candidates = np.unique(inter.items[rows]) if h.negatives == "interacted" else None
            return BPRTriples(inter.users[rows], inter.items[rows], self.num_items, h.batch_size, self.seed,
                              candidates)
        if kind == "lm":
            text = text_samplers(self.item_text, self.user_text, self.item_popularity(), h.text_batch_size,
                                 h.text_sampling_power, self.seed)
            return LMExamples(self._histories(rows), h.history_len, h.lm_examples_per_user, h.lm_batch_size,
                              self.seed, text)
        raise ValueError(f"unknown training batch kind {kind!r}; expected 'domain' or 'lm'")

    def train_dataloader(self):
        kinds = self.needs.train_batch_kinds
        loaders = {}
        for kind in kinds:
            dataset = self._train_dataset(kind)
            loaders[kind] = self._loader(dataset, len(dataset), even=True)
            loaders[kind].sampler.skip = batches_done_this_epoch(self.trainer)
        return loaders[kinds[0]] if len(kinds) == 1 else loaders

    def _eval_loader(self, stage: Literal["val", "test", "predict"]) -> DataLoader:
        key = (stage, self.needs.sequence_len)
        if key not in self._eval_datasets:
            self._eval_datasets[key] = self._eval_dataset(stage, key[1])
        dataset = self._eval_datasets[key]
        return self._loader(dataset, len(dataset), even=False)

    def _eval_dataset(self, stage: Literal["val", "test", "predict"], sequence_len: int | None) -> EvalUsers:
        s, inter = self.split, self.interactions
        if stage == "predict" and self._request is not None:
            return request_dataset(self._request, self.known_histories(), self._user_index,
                                   self._item_index, self.hparams.history_len, self.hparams.eval_batch_size,
                                   sequence_len)
        if stage == "predict":
            known = self.known_histories()
            users = np.arange(self.num_users)
            targets = [np.zeros(0, np.int64)] * self.num_users
        else:
            known = self._histories(s.train) if stage == "val" else self._histories(s.train, s.valid)
            rows = s.valid if stage == "val" else s.test
            order = np.argsort(inter.users[rows], kind="stable")
            target_users, target_items = inter.users[rows][order], inter.items[rows][order]
            users, starts = np.unique(target_users, return_index=True)
            targets = np.split(target_items, starts[1:])
        groups = report_groups(users, targets, self.sparse_users, self.item_popularity(), self.new_items)
        return EvalUsers(users, targets, known, self.hparams.history_len, groups, self.hparams.eval_batch_size,
                         self.new_items if self.new_items.any() else None, sequence_len)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")

    def request_predictions(self, request: PredictionRequest | None) -> None:
        """``predict`` then serves only the request's users and new users (None: every user again)."""
        self._request = None if request is None or request.is_empty else request
        self._eval_datasets = {k: v for k, v in self._eval_datasets.items() if k[0] != "predict"}
