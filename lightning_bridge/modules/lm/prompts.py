"""Prompt assembly from pre-tokenised pieces: item texts are tokenised once, a batch of prompts is gathered
from them with a few vectorised numpy operations (no Python loop over examples or items).

A prompt is a sequence of *segments*: the template's literal texts, the user's ID token and features, and for
each history item a separator, its ID token and its text. Every segment is a slice of one flat token pool, so
building a batch is: choose the segments of every row, then gather their tokens.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from lightning_bridge.modules.lm.id_tokens import ITEM, USER

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "User {user} {user_text}. Recently interacted with: {history}. Next:"
FIELDS = {"user", "user_text", "history"}
REQUIRED = {"history"}
NO_KIND = -1  # id_kind of every token that is not an ID placeholder


class PromptBuilder:
    """Builds (input_ids, attention_mask, id_kind, id_index) for a batch of (user, history) pairs.

    ``{user}`` becomes the user's ID token, ``{user_text}`` the user's features (both empty for a new user,
    whose id is negative; features empty when the data has none) and ``{history}`` the most recent items,
    oldest first, each as its ID token followed by its text.
    When a prompt would exceed ``max_length`` the oldest items are dropped whole; an item is never split.
    Prompts are right-padded and wrapped in the tokenizer's own special tokens ([CLS] ... [SEP], <s> ...).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, id_token_id: int, item_text: Sequence[str | None],
                 user_text: Sequence[str | None] | None = None, template: str = DEFAULT_TEMPLATE,
                 max_length: int = 128, max_item_tokens: int = 24, item_separator: str = ";") -> None:
        if max_item_tokens < 0:
            raise ValueError(f"max_item_tokens must be >= 0, got {max_item_tokens}")
        self.parts = _parse_template(template)
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        encode = _encoder(tokenizer)
        # Byte-level BPE (GPT-2, Qwen) glues separately encoded pieces together, so an item's text, which
        # follows its ID token, needs its own leading space; WordPiece and SentencePiece add that themselves.
        # (The template's literals carry their own spaces.)
        space = " " if _glues_pieces(tokenizer) else ""
        self.item_texts = list(item_text)
        missing = sum(1 for t in item_text if not t)
        if missing:
            log.info("%d of %d items have no text; their prompts show the ID token alone", missing,
                     len(item_text))
        users = list(user_text) if user_text is not None else []
        prefix, suffix = _special_tokens_around(tokenizer)
        literals = [p for kind, p in self.parts if kind == "text"]
        pieces = ([t[:max_item_tokens] for t in encode([space + t if t else "" for t in item_text])]
                  + [t[:max_item_tokens] for t in encode([t or "" for t in users])]
                  + encode(literals) + [encode([item_separator])[0], prefix, suffix, [id_token_id], []])

        # Segment ids: items, then users, then the named pieces below.
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        self.pool = np.array([tok for p in pieces for tok in p], dtype=np.int64)
        self.seg_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.seg_len = lengths
        self.user_base = len(item_text)
        self.has_user_text = user_text is not None
        base = self.user_base + len(users)
        self._literal_ids = [base + k for k in range(len(literals))]
        named = base + len(literals)
        self.sep_seg, self.prefix_seg, self.suffix_seg, self.id_seg, self.empty_seg = range(named, named + 5)
        self.sep_len = int(lengths[self.sep_seg])

        user_text_len = int(lengths[self.user_base: base].max(initial=0))
        fixed = self._fixed_length() + ("user_text" in self.fields) * user_text_len
        if fixed + 1 + max_item_tokens > max_length:
            raise ValueError(f"max_length={max_length} leaves no room for one item after the template's "
                             f"{fixed} fixed tokens (special tokens, literal text, user ID and features); "
                             "raise max_length or shorten the template")

    @property
    def fields(self) -> set[str]:
        return {p for kind, p in self.parts if kind == "field"}

    def _fixed_length(self) -> int:
        """Tokens every prompt has whatever its history: special tokens, literals and the user's ID token."""
        n = self.seg_len[self.prefix_seg] + self.seg_len[self.suffix_seg] + sum(
            self.seg_len[s] for s in self._literal_ids)
        return int(n) + ("user" in self.fields)

    def item_lengths(self) -> np.ndarray:
        """Tokens of each item's (truncated) text, without its ID token."""
        return self.seg_len[: self.user_base]

    def build(self, users: torch.Tensor, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """Right-padded (B, L) tensors for a batch; ``history`` is (B, N), most recent last, -1 for padding."""
        users_np = users.cpu().numpy().astype(np.int64)
        hist = history.cpu().numpy().astype(np.int64)
        b, n = hist.shape
        valid = hist >= 0
        safe = np.where(valid, hist, 0)

        # A new user (negative id: a prediction request's history) has no ID token and no features.
        known = users_np >= 0
        user_seg = np.where(known, self.id_seg, self.empty_seg)
        user_text_seg = np.where(known & self.has_user_text, self.user_base + users_np, self.empty_seg)
        # Budget left for history items in each row, then which items fit, newest first.
        budget = np.full(b, self.max_length - self._fixed_length())
        if "user_text" in self.fields:
            budget -= self.seg_len[user_text_seg]
        cost = np.where(valid, 1 + self.seg_len[safe] + self.sep_len, 0)
        # cost of keeping item j and every newer one; the newest kept item has no separator after it
        # (separators go between items), hence the one separator subtracted.
        suffix_cost = np.cumsum(cost[:, ::-1], axis=1)[:, ::-1] - self.sep_len
        chosen = valid & (suffix_cost <= budget[:, None])
        oldest = chosen & (np.cumsum(chosen, axis=1) == 1)

        # Segment table: (B, S) segment ids, with the kind and table row of the ID-token segments.
        segs, kinds, index = [], [], []

        def add(seg, kind=NO_KIND, row=0) -> None:
            """Appends columns; each argument is a scalar, a (B,) array (one column) or a (B, k) array."""
            seg = np.asarray(seg)
            width = seg.shape[1] if seg.ndim == 2 else 1
            for out, value in ((segs, seg), (kinds, kind), (index, row)):
                value = np.asarray(value)
                out.append(np.broadcast_to(value.reshape(b, -1) if value.ndim else value, (b, width)))

        add(self.prefix_seg)
        literal = iter(self._literal_ids)
        for kind, part in self.parts:
            if kind == "text":
                add(next(literal))
            elif part == "user":
                add(user_seg, USER, np.maximum(users_np, 0))
            elif part == "user_text":
                add(user_text_seg)
            else:  # per item, oldest first: separator (not before the first), ID token, text
                zeros = np.zeros_like(safe)
                sep = np.where(chosen & ~oldest, self.sep_seg, self.empty_seg)
                add(np.stack([sep, np.where(chosen, self.id_seg, self.empty_seg),
                              np.where(chosen, safe, self.empty_seg)], 2).reshape(b, 3 * n),
                    np.tile([NO_KIND, ITEM, NO_KIND], (b, n)), np.stack([zeros, safe, zeros], 2).reshape(b, 3 * n))
        add(self.suffix_seg)
        return self._gather(np.hstack(segs), np.hstack(kinds), np.hstack(index))

    def build_texts(self, kind: int, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prompts made of an item's (``kind=ITEM``) or user's (``USER``) text alone, no ID token: the input of
        the LM's text tasks, which must find that item or user from what its text says."""
        rows = ids.cpu().numpy().astype(np.int64)
        text_seg = rows if kind == ITEM else self.user_base + rows
        if kind == USER and not self.has_user_text:
            raise ValueError("the data has no user text to build prompts from")
        b = len(rows)
        segs = np.stack([np.full(b, self.prefix_seg), text_seg, np.full(b, self.suffix_seg)], 1)
        return self._gather(segs, np.full(segs.shape, NO_KIND), np.zeros(segs.shape, dtype=np.int64))

    def _gather(self, segs: np.ndarray, kinds: np.ndarray, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Right-padded prompt tensors from a (B, S) table of segment ids with each segment's ID kind and row."""
        b = segs.shape[0]
        # Gather: one output token per (segment, offset in segment).
        seg_len = self.seg_len[segs].ravel()
        total = int(seg_len.sum())
        which = np.repeat(np.arange(seg_len.size), seg_len)  # flat segment of every output token
        offset = np.arange(total) - np.repeat(np.cumsum(seg_len) - seg_len, seg_len)
        tokens = self.pool[self.seg_start[segs.ravel()][which] + offset]
        row_len = self.seg_len[segs].sum(1)
        rows = which // segs.shape[1]
        cols = np.arange(total) - np.repeat(np.cumsum(row_len) - row_len, row_len)

        width = max(int(row_len.max(initial=0)), 1)
        out = {name: np.full((b, width), fill, dtype=np.int64)
               for name, fill in (("input_ids", self.pad_id), ("attention_mask", 0), ("id_kind", NO_KIND),
                                  ("id_index", 0))}
        out["input_ids"][rows, cols] = tokens
        out["attention_mask"][rows, cols] = 1
        out["id_kind"][rows, cols] = kinds.ravel()[which]
        out["id_index"][rows, cols] = index.ravel()[which]
        return {k: torch.from_numpy(v) for k, v in out.items()}


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
        if field in seen:
            raise ValueError(f"prompt template field {{{field}}} appears more than once: {template!r}")
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


def _glues_pieces(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether two separately encoded words decode without a space between them (byte-level BPE)."""
    pieces = tokenizer(["a", "b"], add_special_tokens=False)["input_ids"]
    return tokenizer.decode(pieces[0] + pieces[1]).strip() == "ab"


def _encoder(tokenizer: PreTrainedTokenizerBase):
    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return encode
