"""Recommendations from an export folder (``artefacts.py``), without Lightning, a config or the dataset.

    from lightning_bridge import load_recommender
    rec = load_recommender("logs/run/version_0/export")
    rec.recommend(user_ids=["196", "186"], k=10)            # known users, by raw id
    rec.recommend(history=["50", "181", "258"], k=10)        # a new user, from the items they liked
    rec.recommend(user_ids=["196"], model="lm")              # the language model instead of the domain model

A known user's recommendations leave out everything they are known to have interacted with, as ``predict``
does. A new user is folded in from the history: the domain model scores with the mean of the history items'
vectors, the LM reads a prompt of the history's item texts and ID tokens without a user token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer

from lightning_bridge.data.batches import UserHistories
from lightning_bridge.data.requests import NewUser, PredictionRequest, request_dataset
from lightning_bridge.evaluation.ranking import top_k_items
from lightning_bridge.modules.backbone import ID_TOKEN, load_backbone
from lightning_bridge.modules.domain_recommender import LOSSES, DomainRecommender, build_encoder
from lightning_bridge.modules.id_tokens import IDTokenLM
from lightning_bridge.modules.info_sharing import InfoSharing
from lightning_bridge.modules.lm_recommender import LMRecommender

FORMAT = "lightning_bridge.export/1"  # recommender.json's "format": what artefacts.py writes
NEW_USER = "history"  # the label of a new user's recommendations


@dataclass
class Recommendations:
    """One user's top items (raw ids, best first) and their scores."""

    user: str
    items: list[str]
    scores: list[float]


@dataclass
class Catalogue:
    """What the LM's prompts read of the data (``RecommenderData``'s text part)."""

    num_users: int
    num_items: int
    item_text: list[str | None]
    user_text: list[str | None]


class Recommender:
    """Both models of an export folder, rebuilt as plain modules in eval mode (see ``load_recommender``)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        spec_file = folder / "recommender.json"
        if not spec_file.is_file():
            raise FileNotFoundError(f"{folder}: not an export folder (no recommender.json); write one with "
                                    "`python -m lightning_bridge.export artefacts <checkpoint>`")
        self.spec = json.loads(spec_file.read_text())
        if self.spec.get("format") != FORMAT:
            raise ValueError(f"{spec_file}: format {self.spec.get('format')!r}, expected {FORMAT!r}")
        encoder = self.spec.get("domain", {}).get("encoder", "lightgcn")
        if encoder not in LOSSES:  # named, never looked up as code
            raise ValueError(f"{spec_file}: domain.encoder: {encoder!r}, expected one of {sorted(LOSSES)}")
        ids = json.loads((folder / "id_maps.json").read_text())
        self.user_ids, self.item_ids = ids["users"], ids["items"]
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        self._item_index = {u: i for i, u in enumerate(self.item_ids)}
        texts = json.loads((folder / "texts.json").read_text())
        self.item_titles: list[str | None] = texts["item_titles"]
        self._known = _histories(load_file(folder / "histories.safetensors"), len(self.user_ids))
        tables = load_file(folder / "info_sharing.safetensors")
        self.models: dict[str, DomainRecommender | LMRecommender] = {}
        if "domain" in self.spec:
            self.models["domain"] = _domain(self.spec, tables, load_file(folder / "domain.safetensors"))
        if "lm" in self.spec:
            catalogue = Catalogue(len(self.user_ids), len(self.item_ids), texts["item_text"], texts["user_text"])
            self.models["lm"] = _lm(self.spec, tables, folder / "lm", catalogue)

    def scores(self, user_ids: Sequence[str] | None = None, history: Sequence[str] | None = None,
               model: str | None = None) -> torch.Tensor:
        """(users, num_items) float32 scores, before known items are masked: one row per ``user_ids`` entry,
        then one for ``history``."""
        return torch.cat([scores for scores, _ in self._score(user_ids, history, model)])

    def recommend(self, user_ids: Sequence[str] | None = None, history: Sequence[str] | None = None, k: int = 20,
                  model: str | None = None) -> list[Recommendations]:
        """The top ``k`` unseen items of each user in ``user_ids`` (raw ids), then of a new user whose items
        (raw ids, oldest first) are ``history``. ``model``: ``domain`` or ``lm`` (None: the domain model
        when the folder has one)."""
        out = []
        for scores, batch in self._score(user_ids, history, model):
            top = top_k_items(scores, batch, k)
            for user, items, values in zip(top["users"].tolist(), top["items"].tolist(), top["scores"].tolist(),
                                           strict=True):
                kept = [(self.item_ids[i], s) for i, s in zip(items, values, strict=True) if s != -np.inf]
                out.append(Recommendations(self.user_ids[user] if user >= 0 else NEW_USER,
                                           [i for i, _ in kept], [s for _, s in kept]))
        return out

    def _score(self, user_ids: Sequence[str] | None, history: Sequence[str] | None,
               model: str | None) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        name = model or next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"model={name!r}: this export holds {', '.join(self.models)}")
        recommender = self.models[name]
        if user_ids is None and history is None:
            user_ids = self.user_ids
        request = PredictionRequest(users=[str(u) for u in user_ids or []])
        request.new_users = [] if history is None else [NewUser(NEW_USER, [str(i) for i in history])]
        sequence_len = recommender.sequence_len if isinstance(recommender, DomainRecommender) else None
        dataset = request_dataset(request, self._known, self._user_index, self._item_index,
                                  self.spec["history_len"], 256, sequence_len)
        with torch.no_grad():  # not inference_mode: the scores are masked in place afterwards
            return [(recommender.scores(batch), batch) for batch in (dataset[(0, b)] for b in range(len(dataset)))]


def load_recommender(path: str | Path) -> Recommender:
    """The models of an export folder (``<run>/export``), ready to ``recommend``."""
    return Recommender(path)


def _histories(csr: dict[str, torch.Tensor], num_users: int) -> UserHistories:
    indptr, items = csr["indptr"].numpy(), csr["items"].numpy()
    users = np.repeat(np.arange(num_users), np.diff(indptr))
    return UserHistories(users, items, np.arange(len(items)), num_users)  # already in time order


def _tables(spec: dict[str, Any], tables: dict[str, torch.Tensor], side: str) -> InfoSharing:
    info = InfoSharing(spec["num_users"], spec["num_items"], spec["embedding_dim"])
    info.load_state_dict({"user.weight": tables[f"{side}.user"], "item.weight": tables[f"{side}.item"]})
    return info


def _domain(spec: dict[str, Any], tables: dict[str, torch.Tensor],
            weights: dict[str, torch.Tensor]) -> DomainRecommender:
    s = spec["domain"]
    info = _tables(spec, tables, "domain")
    # an export holds only its encoder's settings (artefacts.ENCODER_SETTINGS); the others are never read
    encoder = build_encoder(s["encoder"], info.dim, s.get("num_layers", 0), s.get("mlp_layers"), s.get("max_len", 0),
                            s.get("num_blocks", 0), s.get("num_heads", 1), s.get("dropout", 0.0),
                            s.get("isolated_nodes", "layer_mean"), s.get("mlp_tower_input", "shared"))
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")})
    if hasattr(encoder, "set_graph"):
        encoder.set_graph(weights["graph.users"].numpy(), weights["graph.items"].numpy(), info.num_users,
                          info.num_items)
    recommender = DomainRecommender(info, encoder, s["loss"], reg_weight=0.0).eval()  # a training-only setting
    recommender.freeze_vectors()  # propagated once: every request reads the same vectors
    return recommender


def _lm(spec: dict[str, Any], tables: dict[str, torch.Tensor], folder: Path, catalogue: Catalogue) -> LMRecommender:
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
    head = load_file(folder / "head.safetensors")
    for name in ("injector", "out_proj"):
        getattr(network, name).load_state_dict({k.removeprefix(f"{name}."): v for k, v in head.items()
                                                if k.startswith(f"{name}.")})
    recommender = LMRecommender(info, network, tokenizer, template=s["template"], max_length=s["max_length"],
                                max_item_tokens=s["max_item_tokens"], item_separator=s["item_separator"],
                                task_weights={"next_item": 1.0}, frozen_backbone=True).eval()
    recommender.attach(catalogue)
    return recommender
