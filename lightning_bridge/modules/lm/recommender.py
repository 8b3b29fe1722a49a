"""LMRecommender: the language model's maths — prompts with ID tokens, its task losses, full-ranking scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_bridge.data.contract import RecommenderData, check_sizes
from lightning_bridge.modules.info_sharing import InfoSharing
from lightning_bridge.modules.lm.id_tokens import ITEM, USER, IDTokenLM
from lightning_bridge.modules.lm.prompts import PromptBuilder

TASKS = ("next_item", "item_text", "user_text")


@dataclass
class LMLoss:
    """One batch's task losses and, when the item_text task ran, its (items, detached queries): the bridge's
    text anchor reuses them instead of encoding the same texts again."""

    tasks: dict[str, torch.Tensor]
    item_text_queries: tuple[torch.Tensor, torch.Tensor] | None = None

    def total(self, weights: dict[str, float]) -> torch.Tensor:
        return sum(weights[task] * loss for task, loss in self.tasks.items())


class LMRecommender(nn.Module):
    """The LM's side of BDLM: ``losses(batch)`` / ``loss(batch)`` for training, ``scores(batch)`` (float32,
    B x num_items) for ranking, and ``encode_texts`` for the text representations the text tasks and the
    bridge's text anchor read. A frozen backbone's pooled text representations are cached: they are a pure
    function of the text."""

    def __init__(self, info: InfoSharing, network: IDTokenLM, tokenizer: PreTrainedTokenizerBase, *,
                 template: str, max_length: int, max_item_tokens: int, item_separator: str,
                 task_weights: dict[str, float], frozen_backbone: bool) -> None:
        """The prompt settings are LMModule's arguments of the same names."""
        super().__init__()
        self.info, self.network, self.tokenizer = info, network, tokenizer
        self.template, self.max_length = template, max_length
        self.max_item_tokens, self.item_separator = max_item_tokens, item_separator
        self.task_weights, self.frozen_backbone = task_weights, frozen_backbone
        self.prompts: PromptBuilder | None = None
        self._text_features: dict[int, torch.Tensor] = {}  # frozen backbones only: see text_queries
        self._texts: tuple[list[str | None], list[str | None]] | None = None  # whose states those are

    @property
    def device(self) -> torch.device:
        return self.info.user.weight.device

    def attach(self, data: RecommenderData | None) -> None:
        """Tokenises the item (and user) texts once for prompt assembly; checks the data fits the tables. The
        same texts attached again (a warm start, then the main fit) keep a frozen backbone's cached states."""
        check_sizes(data, self.info.num_users, self.info.num_items, "LMModule")
        attached = (list(data.item_text), list(data.user_text))
        if attached != self._texts:
            self._texts, self._text_features = attached, {}
        for task, texts, field in (("item_text", data.item_text, "item"), ("user_text", data.user_text, "user")):
            if self.task_weights.get(task) and not any(texts):
                raise ValueError(f"model task_weights.{task} > 0 needs {field} text, but the data has no "
                                 f"{field} text; set task_weights.{task} to 0 or use data with {field} text")
        self.prompts = PromptBuilder(self.tokenizer, self.network.id_token_id, data.item_text, data.user_text,
                                     self.template, self.max_length, self.max_item_tokens, self.item_separator)

    @property
    def text_dim(self) -> int:
        """Width of the LM's pooled states: what ``encode_texts(..., project=False)`` returns."""
        return self.network.out_proj.in_features

    def items_with_text(self) -> torch.Tensor:
        """Ids of the attached data's items that have text (none before ``attach``)."""
        texts = self.prompts.item_texts if self.prompts else []
        return torch.tensor([i for i, text in enumerate(texts) if text], dtype=torch.long, device=self.device)

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """Pooled states into InfoSharing's space, as ``encode_texts`` projects them."""
        return self.network.out_proj(states)

    def _built_prompts(self) -> PromptBuilder:
        if self.prompts is None:
            raise RuntimeError("LMRecommender.attach must run before prompts can be built")
        return self.prompts

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Prompt tensors for a batch's users and histories, on the model's device."""
        prompts = self._built_prompts().build(batch["users"], batch["history"])
        return {k: v.to(self.device, non_blocking=True) for k, v in prompts.items()}

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, num_items) float32 scores of every item after each prompt."""
        return self.network.scores(**self.encode(batch), info=self.info).float()

    def _text_prompt(self, kind: int, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        prompts = self._built_prompts().build_texts(kind, ids)
        return {k: v.to(self.device, non_blocking=True) for k, v in prompts.items()}

    def text_queries(self, kind: int, ids: torch.Tensor) -> torch.Tensor:
        """(B, info_dim) pooled, projected representations of prompts made of these items' (or users') text."""
        self._built_prompts()
        if self.frozen_backbone:
            return self.network.out_proj(self._frozen_states(kind)[ids.to(self.device)])
        return self.network(**self._text_prompt(kind, ids), info=self.info)

    def _frozen_states(self, kind: int) -> torch.Tensor:
        """A frozen backbone's pooled states of every item's (or user's) text, encoded once."""
        if kind not in self._text_features:
            count = self.info.num_items if kind == ITEM else self.info.num_users
            self._text_features[kind] = self._encode_in_batches(kind, torch.arange(count), False, 256)
        return self._text_features[kind]

    def encode_texts(self, kind: int, ids: torch.Tensor, project: bool = True,
                     batch_size: int = 256) -> torch.Tensor:
        """(len(ids), dim) text representations in eval mode (no dropout), without gradients, ``batch_size``
        texts at a time: projected into InfoSharing's space, or the backbone's pooled states (a frozen
        backbone's from its cache)."""
        if self.frozen_backbone and not project:
            return self._frozen_states(kind)[ids.to(self.device)]
        return self._encode_in_batches(kind, ids, project, batch_size)

    def _encode_in_batches(self, kind: int, ids: torch.Tensor, project: bool, batch_size: int) -> torch.Tensor:
        was_training, parts = self.training, []
        self.eval()
        with torch.no_grad():
            for start in range(0, len(ids), batch_size):
                chunk = ids[start: start + batch_size]
                parts.append(self.text_queries(kind, chunk) if project
                             else self.network(**self._text_prompt(kind, chunk), info=self.info, project=False))
        self.train(was_training)
        return torch.cat(parts)

    def losses(self, batch: dict[str, torch.Tensor]) -> LMLoss:
        """Each weighted task's cross-entropy over the whole catalogue (or all users, for ``user_text``)."""
        out, item_text_queries = {}, None
        if self.task_weights.get("next_item"):
            out["next_item"] = F.cross_entropy(self.scores(batch), batch["targets"][:, 0])
        for task, key, kind, table in (("item_text", "text_items", ITEM, self.info.item_vectors),
                                       ("user_text", "text_users", USER, lambda: self.info.user.weight)):
            if not self.task_weights.get(task):
                continue
            if key not in batch:
                raise ValueError(f"model task_weights.{task} > 0 needs LM batches with {key}: set "
                                 "data.text_batch_size > 0")
            ids = batch[key].to(self.device)
            queries = self.text_queries(kind, ids)
            if kind == ITEM:
                item_text_queries = (ids, queries.detach())
            out[task] = F.cross_entropy(self.network.score_queries(queries, table()).float(), ids)
        return LMLoss(out, item_text_queries)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the tasks' losses."""
        return self.losses(batch).total(self.task_weights)


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
