"""Edits of Hugging Face model configs shared by the pretrained and the tiny backbones."""

from __future__ import annotations

from transformers import PretrainedConfig


def set_dropout(config: PretrainedConfig, p: float | None) -> PretrainedConfig:
    """Sets every dropout probability of a Hugging Face config (``hidden_dropout_prob``,
    ``attention_dropout``, ``resid_pdrop``...) to ``p``; None leaves the config as it is."""
    if p is not None:
        for key, value in config.to_dict().items():
            if isinstance(value, float) and ("dropout" in key or key.endswith("pdrop")):
                setattr(config, key, p)
    return config
