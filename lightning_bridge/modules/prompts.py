"""Prompt assembly from pre-tokenised pieces: item texts are tokenised once, prompts are concatenations."""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from lightning_bridge.modules.id_tokens import ITEM, USER

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "User {user} {user_text}. Recently interacted with: {history}. Next:"
FIELDS = {"user", "user_text", "history"}
REQUIRED = {"history"}


class PromptBuilder:
    """Builds (input_ids, attention_mask, id_kind, id_index) for a batch of (user, history) pairs.

    ``{user}`` becomes the user's ID token, ``{user_text}`` the user's features (empty when the data has
    none) and ``{history}`` the most recent items, oldest first, each as its ID token followed by its text.
    When a prompt exceeds ``max_length`` the oldest items are dropped whole; an item is never split.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, id_token_id: int, item_text: Sequence[str | None],
                 user_text: Sequence[str | None] | None = None, template: str = DEFAULT_TEMPLATE,
                 max_length: int = 128, max_item_tokens: int = 24, item_separator: str = ";") -> None:
        self.parts = _parse_template(template)
        self.id_token_id, self.max_length = id_token_id, max_length
        self.pad_id = tokenizer.pad_token_id
        encode = _encoder(tokenizer)
        self.literals = [encode([p])[0] if kind == "text" else None for kind, p in self.parts]
        self.separator = encode([item_separator])[0]
        self.item_tokens = [t[:max_item_tokens] for t in encode([t or "" for t in item_text])]
        missing = sum(1 for t in item_text if not t)
        if missing:
            log.info("%d of %d items have no text; the prompt shows their ID token alone", missing,
                     len(item_text))
        self.user_tokens = [t[:max_item_tokens] for t in encode([t or "" for t in user_text])] \
            if user_text is not None else None
        self.prefix, self.suffix = _special_tokens_around(tokenizer)
        fixed = len(self.prefix) + len(self.suffix) + sum(len(t) for t in self.literals if t)
        if fixed + 2 + max_item_tokens > max_length:
            raise ValueError(f"max_length={max_length} leaves no room for one item after the template's "
                             f"{fixed} fixed tokens; raise max_length or shorten the template")

    def _one(self, user: int, history: list[int]) -> tuple[list[int], list[int], list[int]]:
        ids, kinds, index = list(self.prefix), [-1] * len(self.prefix), [0] * len(self.prefix)

        def put(tokens: list[int], kind: int = -1, row: int = 0) -> None:
            ids.extend(tokens)
            kinds.extend([kind] * len(tokens))
            index.extend([row] * len(tokens))

        user_text = self.user_tokens[user] if self.user_tokens is not None else []
        budget = self.max_length - len(self.prefix) - len(self.suffix) - sum(
            len(t) for t in self.literals if t)
        budget -= sum(1 if f == "user" else len(user_text) if f == "user_text" else 0
                      for kind, f in self.parts if kind == "field")
        chosen: list[int] = []
        for item in reversed(history):  # most recent first, so truncation drops the oldest
            cost = 1 + len(self.item_tokens[item]) + (len(self.separator) if chosen else 0)
            if cost > budget:
                break
            budget -= cost
            chosen.append(item)
        for (kind, part), literal in zip(self.parts, self.literals, strict=True):
            if kind == "text":
                put(literal)
            elif part == "user":
                put([self.id_token_id], USER, user)
            elif part == "user_text":
                put(user_text)
            else:
                for n, item in enumerate(reversed(chosen)):
                    if n:
                        put(self.separator)
                    put([self.id_token_id], ITEM, item)
                    put(self.item_tokens[item])
        put(self.suffix)
        return ids, kinds, index

    def build(self, users: torch.Tensor, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """Right-padded tensors for a batch; ``history`` is (B, N), most recent last, -1 for padding."""
        rows = [self._one(u, [i for i in h if i >= 0]) for u, h in zip(users.tolist(), history.tolist(),
                                                                          strict=True)]
        width = max(len(r[0]) for r in rows)
        out = {name: torch.full((len(rows), width), fill, dtype=torch.long)
               for name, fill in (("input_ids", self.pad_id), ("attention_mask", 0), ("id_kind", -1),
                                  ("id_index", 0))}
        for b, (ids, kinds, index) in enumerate(rows):
            n = len(ids)
            out["input_ids"][b, :n] = torch.tensor(ids)
            out["attention_mask"][b, :n] = 1
            out["id_kind"][b, :n] = torch.tensor(kinds)
            out["id_index"][b, :n] = torch.tensor(index)
        return out


def _parse_template(template: str) -> list[tuple[str, str]]:
    parts, seen = [], set()
    for literal, field, spec, conv in string.Formatter().parse(template):
        if literal:
            parts.append(("text", literal))
        if field is None:
            continue
        if field not in FIELDS or spec or conv:
            raise ValueError(f"prompt template field {{{field}}} is not one of "
                             f"{', '.join('{' + f + '}' for f in sorted(FIELDS))}: {template!r}")
        parts.append(("field", field))
        seen.add(field)
    missing = REQUIRED - seen
    if missing:
        raise ValueError(f"prompt template is missing the required field {{{missing.pop()}}}: {template!r}")
    return parts


def _special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] ... [SEP], <s> ..., or none)."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start: start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []


def _encoder(tokenizer: PreTrainedTokenizerBase):
    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return encode
