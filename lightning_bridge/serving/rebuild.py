"""Each model of an export folder rebuilt from its files (``artefacts.py`` wrote them) as a plain module in eval
mode: the domain model from its encoder settings and weights, the LM from its backbone, adapter, tokenizer and
head. A domain-only export never imports peft or transformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_bridge.modules.domain.recommender import DomainRecommender, build_encoder
from lightning_bridge.modules.info_sharing import InfoSharing
from lightning_bridge.serving.checks import check_graph, read_tensors
from lightning_bridge.serving.manifest import ExportIntegrityError

if TYPE_CHECKING:  # imported by rebuild_lm, where an export has a language model
    from lightning_bridge.modules.lm.recommender import LMRecommender


@dataclass
class Catalogue:
    """What the LM's prompts read of the data (``RecommenderData``'s text part)."""

    num_users: int
    num_items: int
    item_text: list[str | None]
    user_text: list[str | None]


def _tables(spec: dict[str, Any], tables: dict[str, torch.Tensor], side: str) -> InfoSharing:
    info = InfoSharing(spec["num_users"], spec["num_items"], spec["embedding_dim"])
    info.load_state_dict({"user.weight": tables[f"{side}.user"], "item.weight": tables[f"{side}.item"]})
    return info


def rebuild_domain(spec: dict[str, Any], tables: dict[str, torch.Tensor], path: Path) -> DomainRecommender:
    """The domain model of ``spec`` (recommender.json), its weights read from ``path``."""
    s = spec["domain"]
    weights = read_tensors(path)
    info = _tables(spec, tables, "domain")
    # an export holds only its encoder's settings (artefacts.ENCODER_SETTINGS); the others are never read
    try:
        encoder = build_encoder(s["encoder"], info.dim, s.get("num_layers", 0), s.get("mlp_layers"),
                                s.get("max_len", 0), s.get("num_blocks", 0), s.get("num_heads", 1),
                                s.get("dropout", 0.0), s.get("isolated_nodes", "layer_mean"),
                                s.get("dropped_items", "propagated"))
    except (ValueError, TypeError) as err:
        raise ExportIntegrityError(f"{path.parent / 'recommender.json'}: its domain settings do not build a "
                                   f"{s['encoder']} encoder: {err}") from err
    try:
        encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items()
                                 if k.startswith("encoder.")})
    except RuntimeError as err:
        raise ExportIntegrityError(f"{path}: the encoder's weights do not fit recommender.json's domain settings "
                                   f"({str(err).splitlines()[-1].strip()[:300]})") from err
    if hasattr(encoder, "set_graph"):
        check_graph(weights, info.num_users, info.num_items, path)
        encoder.set_graph(weights["graph.users"].numpy(), weights["graph.items"].numpy(), info.num_users,
                          info.num_items)
    recommender = DomainRecommender(info, encoder, s["loss"], reg_weight=0.0).eval()  # a training-only setting
    recommender.freeze_vectors()  # propagated once: every request reads the same vectors
    return recommender


def rebuild_lm(spec: dict[str, Any], tables: dict[str, torch.Tensor], folder: Path, catalogue: Catalogue
               ) -> LMRecommender:
    """The language model of ``spec`` (recommender.json) from ``folder``, attached to ``catalogue``."""
    from peft import PeftModel  # here, not at the top: a domain-only export needs neither peft nor transformers
    from transformers import AutoTokenizer

    from lightning_bridge.modules.lm.backbone import ID_TOKEN, load_backbone
    from lightning_bridge.modules.lm.id_tokens import IDTokenLM
    from lightning_bridge.modules.lm.recommender import LMRecommender

    s = spec["lm"]
    full = (folder / "backbone").is_dir()
    backbone, _, is_decoder = load_backbone(str(folder / "backbone") if full else s["backbone"],
                                            gguf_file=None if full else s["gguf_file"],
                                            local_files_only=s["local_files_only"], dtype=s["dtype"],
                                            finetune="frozen")
    if (folder / "adapter").is_dir():
        backbone = PeftModel.from_pretrained(backbone, str(folder / "adapter"))
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", trust_remote_code=False)
    info = _tables(spec, tables, "lm")
    network = IDTokenLM(backbone, info.dim, tokenizer.convert_tokens_to_ids(ID_TOKEN), is_decoder=is_decoder,
                        pooling=s["pooling"], scoring=s["scoring"], temperature=s["temperature"])
    head = read_tensors(folder / "head.safetensors")
    for name in ("injector", "out_proj"):
        getattr(network, name).load_state_dict({k.removeprefix(f"{name}."): v for k, v in head.items()
                                                if k.startswith(f"{name}.")})
    recommender = LMRecommender(info, network, tokenizer, template=s["template"], max_length=s["max_length"],
                                max_item_tokens=s["max_item_tokens"], item_separator=s["item_separator"],
                                task_weights={"next_item": 1.0}, frozen_backbone=True).eval()
    recommender.attach(catalogue)
    return recommender
