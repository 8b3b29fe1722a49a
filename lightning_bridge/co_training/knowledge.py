"""The knowledge path of co-training (settings: ``Knowledge``), kept apart from the schedule: how the LM's
reading of item texts reaches the shared item table, through the text channel (each item vector gets a learned
map of the LM's representation of its text, re-encoded every epoch) and the text anchor (on domain steps, the
item-text task replayed against held text representations, so item rows keep following their texts)."""

from __future__ import annotations

import torch

from lightning_bridge.co_training.text_anchor import TextAnchor
from lightning_bridge.data.contract import RecommenderData
from lightning_bridge.modules.lm.id_tokens import ITEM
from lightning_bridge.run.training_log import log_training_loss


class KnowledgePath:
    """Mixed into BridgeModule (first): reads its ``knowledge`` settings, ``info`` and ``lm``, and keeps the state
    BridgeModule checkpoints (``_text_channel_epoch``, ``_text_anchor``)."""

    def prepare_text_channel(self, data: RecommenderData) -> None:
        """Checks that the data has item text, and tells the text channel which items have training
        interactions (the others read their text alone)."""
        if not any(data.item_text):
            raise ValueError("model.knowledge.text_channel=true needs item text, but the data has none: set it to "
                             "false or use data with item text")
        self.info.set_seen_items(torch.from_numpy(data.item_popularity() > 0))

    def on_train_epoch_start(self) -> None:
        k, epoch = self.knowledge, self.current_epoch
        pooled = None
        if k.text_channel and self._text_channel_epoch != epoch:  # a run resumed mid-epoch keeps its features
            pooled = self.encode_item_texts(epoch)
        if k.text_anchor_weight == 0:
            return
        refresh = k.text_anchor_refresh_epochs
        if self._text_anchor is None or (refresh and epoch - self._text_anchor.epoch >= refresh):
            # the channel's pooled states of this same LM serve the anchor too: one pass over the catalogue
            self._text_anchor = TextAnchor.from_lm(self.lm.recommender, epoch, pooled)

    def encode_item_texts(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The text channel's features: the LM's pooled representation of every item's text, now (the LM must
        be attached to the data). Returns the items that have text and their pooled states."""
        lm = self.lm.recommender
        items = lm.items_with_text()
        states = lm.encode_texts(ITEM, items, project=False)
        self.info.set_item_text_features(states, items, refit=self.knowledge.text_channel_refit)
        self._text_channel_epoch = epoch
        return items, states

    def _anchor_term(self, lm_part: dict[str, torch.Tensor]) -> torch.Tensor:
        """The text anchor's loss on the LM batch's ``text_items``, weighted (zero before the anchor exists)."""
        if self._text_anchor is None:
            return torch.zeros((), device=self.device)
        if "text_items" not in lm_part:
            raise ValueError("model.knowledge.text_anchor_weight > 0 needs LM batches with text_items: set "
                             "data.text_batch_size > 0 (and use data with item text)")
        items = lm_part["text_items"].to(self.device)
        loss = self._text_anchor.loss(items, self.lm.recommender)
        log_training_loss(self, "train/text_anchor_loss", loss, len(items))
        return self.knowledge.text_anchor_weight * loss
