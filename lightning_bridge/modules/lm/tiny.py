"""Microscopic random backbones (litgpt-style) so tests, example configs and CLI smoke runs need no download.

The tokenizer is byte-level with no merges: every string tokenises (one token per byte), nothing is trained,
so the vocabulary is the same on every machine. The weights are drawn from a fixed seed in a forked RNG, so
every call returns the same model whatever the global seed (and leaves the global RNG untouched): like a
downloaded model, a tiny backbone can be "reloaded from source" and checkpoints need not hold its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModel, BertConfig, PreTrainedModel, PreTrainedTokenizerFast, Qwen2Config

from lightning_bridge.modules.lm.hf_config import set_dropout

TinyKind = Literal["decoder", "encoder"]
TINY_NAMES: dict[str, TinyKind] = {"tiny-decoder": "decoder", "tiny-encoder": "encoder"}
TINY_SEED = 0

_DECODER_SPECIALS = ["<|endoftext|>"]  # no pad token on purpose: load_backbone must reuse eos, as for GPT-2
_ENCODER_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer(kind: TinyKind) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: special tokens first, then the 256 byte symbols."""
    specials = _DECODER_SPECIALS if kind == "decoder" else _ENCODER_SPECIALS
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if kind == "decoder":
        return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                       bos_token="<|endoftext|>")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_backbone(kind: TinyKind, dropout: float | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A 2-layer, 32-wide Qwen2 (decoder) or BERT (encoder) base model, random weights, and its tokenizer.

    The weights are the same on every call (seeded with ``TINY_SEED`` in a forked RNG); ``dropout`` replaces
    the config's dropout probabilities."""
    tokenizer = tiny_tokenizer(kind)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=2048)
    if kind == "decoder":
        config = Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=False,
                             eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    elif kind == "encoder":
        config = BertConfig(**common, pad_token_id=tokenizer.pad_token_id)
    else:
        raise ValueError(f"tiny backbone kind must be 'decoder' or 'encoder', got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModel.from_config(set_dropout(config, dropout))
    return model, tokenizer


def save_tiny_backbone(kind: TinyKind, folder: str | Path) -> Path:
    """Write a tiny backbone as an ordinary Hugging Face folder, to exercise the real loading path."""
    folder = Path(folder)
    model, tokenizer = tiny_backbone(kind)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
