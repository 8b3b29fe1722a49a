"""Callbacks that the CLI adds to every run."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter


class TopKWriter(BasePredictionWriter):
    """Writes ``predict``'s top-K items per user as TSV: user, rank, item (raw ids), score and title.

    Args:
        path: output file; defaults to ``predictions.tsv`` in the run's log folder. Under DDP each rank
            writes ``<stem>.rank<N>.tsv``.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self._file = None
        self._writer = None
        self.written: Path | None = None

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.path or os.path.join(trainer.log_dir or ".", "predictions.tsv"))
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.written = path
        self._file = path.open("w", newline="")
        self._writer = csv.writer(self._file, delimiter="\t", lineterminator="\n")
        self._writer.writerow(["user_id", "rank", "item_id", "score", "title"])

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        data = trainer.datamodule
        for user, items, scores in zip(prediction["users"].tolist(), prediction["items"].tolist(),
                                       prediction["scores"].tolist(), strict=True):
            for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1):
                self._writer.writerow([data.raw_user_id(user), rank, data.raw_item_id(item), f"{score:.6g}",
                                       data.item_title(item) or ""])

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._file.close()
