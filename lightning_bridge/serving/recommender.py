"""Recommendations from an export folder (``artefacts.py``), without Lightning, a config or the dataset.

    from lightning_bridge import load_recommender
    rec = load_recommender("logs/run/version_0/export")
    rec.recommend(user_ids=["196", "186"], k=10)            # known users, by raw id
    rec.recommend(history=["50", "181", "258"], k=10)        # a new user, from the items they liked
    rec.recommend(user_ids=["196"], model="lm")              # the language model instead of the domain model
    rec.recommend(histories={"ann": ["50", "181"], "bob": ["1", "2"]})  # several new users at once

A known user's recommendations leave out everything they are known to have interacted with, as ``predict``
does. A new user is folded in from the history: the domain model scores with the mean of the history items'
vectors, the LM reads a prompt of the history's item texts and ID tokens without a user token. An export without
a language model loads without importing transformers or peft.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_bridge.data.batches import UserHistories
from lightning_bridge.data.requests import NewUser, PredictionRequest, check_k, id_list, request_dataset
from lightning_bridge.evaluation.top_k import top_k_items
from lightning_bridge.modules.domain.recommender import DomainRecommender
from lightning_bridge.serving.checks import (
    check_histories,
    check_id_list,
    check_spec,
    check_tables,
    read_json,
    read_tensors,
)
from lightning_bridge.serving.manifest import ExportIntegrityError, check_manifest
from lightning_bridge.serving.rebuild import Catalogue, rebuild_domain, rebuild_lm

if TYPE_CHECKING:  # imported by rebuild_lm, where an export has a language model
    from lightning_bridge.modules.lm.recommender import LMRecommender

FORMAT = "lightning_bridge.serving.export/1"  # recommender.json's "format": what artefacts.py writes
NEW_USER = "history"  # the label of a new user's recommendations


@dataclass
class Recommendations:
    """One user's top items (raw ids, best first), their scores and their titles (None for an item the data
    has no title for)."""

    user: str
    items: list[str]
    scores: list[float]
    titles: list[str | None]


class Recommender:
    """Both models of an export folder, rebuilt as plain modules in eval mode (see ``load_recommender``)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        spec_file = folder / "recommender.json"
        if not spec_file.is_file():
            raise FileNotFoundError(f"{folder}: not an export folder (no recommender.json); write one with "
                                    "`python -m lightning_bridge.serving.export artefacts <checkpoint>`")
        check_manifest(folder)  # no file changed since export
        self.spec = read_json(spec_file)
        if not isinstance(self.spec, dict) or self.spec.get("format") != FORMAT:
            found = self.spec.get("format") if isinstance(self.spec, dict) else self.spec
            raise ExportIntegrityError(f"{spec_file}: format {found!r}, expected {FORMAT!r}")
        ids_file = folder / "id_maps.json"
        ids = read_json(ids_file)
        ids = ids if isinstance(ids, dict) else {}
        self.user_ids = check_id_list(ids.get("users"), "users", ids_file)
        self.item_ids = check_id_list(ids.get("items"), "items", ids_file)
        num_users, num_items = len(self.user_ids), len(self.item_ids)
        check_spec(self.spec, spec_file, num_users, num_items, ids_file)
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        self._item_index = {u: i for i, u in enumerate(self.item_ids)}
        texts = _texts(folder / "texts.json", num_users, num_items)
        self.item_titles: list[str | None] = texts["item_titles"]
        histories_file = folder / "histories.safetensors"
        histories = read_tensors(histories_file)
        check_histories(histories, num_users, num_items, histories_file)
        self._known = _histories(histories, num_users)
        tables_file = folder / "info_sharing.safetensors"
        tables = read_tensors(tables_file)
        check_tables(tables, self.spec, tables_file)
        self.models: dict[str, DomainRecommender | LMRecommender] = {}
        if "domain" in self.spec:
            self.models["domain"] = rebuild_domain(self.spec, tables, folder / "domain.safetensors")
        if "lm" in self.spec:
            catalogue = Catalogue(num_users, num_items, texts["item_text"], texts["user_text"])
            self.models["lm"] = rebuild_lm(self.spec, tables, folder / "lm", catalogue)

    def scores(self, user_ids: Sequence[str] | None = None, history: Sequence[str] | None = None,
               model: str | None = None, histories: Mapping[str, Sequence[str]] | None = None) -> torch.Tensor:
        """(users, num_items) float32 scores, before known items are masked: one row per ``user_ids`` entry,
        then one for ``history``, then one per entry of ``histories``."""
        return torch.cat([scores for scores, _, _ in self._score(user_ids, history, model, histories)])

    def recommend(self, user_ids: Sequence[str] | None = None, history: Sequence[str] | None = None, k: int = 20,
                  model: str | None = None, histories: Mapping[str, Sequence[str]] | None = None
                  ) -> list[Recommendations]:
        """The top ``k`` unseen items of each user in ``user_ids`` (raw ids), then of a new user whose items
        (raw ids, oldest first) are ``history`` (labelled ``"history"``), then of each new user of
        ``histories`` (label -> items, oldest first). ``model``: ``domain`` or ``lm`` (None: the domain model
        when the folder has one). Each recommendation carries the items' titles."""
        k = check_k(k)
        out = []
        for scores, batch, labels in self._score(user_ids, history, model, histories):
            top = top_k_items(scores, batch, k)
            for user, items, values in zip(top["users"].tolist(), top["items"].tolist(), top["scores"].tolist(),
                                           strict=True):
                kept = [(i, s) for i, s in zip(items, values, strict=True) if s != -np.inf]
                out.append(Recommendations(self.user_ids[user] if user >= 0 else labels[-1 - user],
                                           [self.item_ids[i] for i, _ in kept], [s for _, s in kept],
                                           [self.item_titles[i] for i, _ in kept]))
        return out

    def _score(self, user_ids: Sequence[str] | None, history: Sequence[str] | None, model: str | None,
               histories: Mapping[str, Sequence[str]] | None = None
               ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]]:
        """Per batch: the scores, the batch, and the new users' labels (user -1 - k is ``labels[k]``)."""
        name = model or next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"model={name!r}: this export holds {', '.join(self.models)}")
        recommender = self.models[name]
        if user_ids is None and history is None and histories is None:
            user_ids = self.user_ids
        request = PredictionRequest(users=None if user_ids is None else id_list(user_ids, "user_ids"))
        request.new_users = _new_users(history, histories)
        labels = [user.label for user in request.new_users]
        sequence_len = recommender.sequence_len if isinstance(recommender, DomainRecommender) else None
        dataset = request_dataset(request, self._known, self._user_index, self._item_index,
                                  self.spec["history_len"], 256, sequence_len, ("user_ids", "histories"))
        with torch.no_grad():  # not inference_mode: the scores are masked in place afterwards
            return [(recommender.scores(batch), batch, labels)
                    for batch in (dataset[(0, b)] for b in range(len(dataset)))]


def _new_users(history: Sequence[str] | None, histories: Mapping[str, Sequence[str]] | None) -> list[NewUser]:
    """``history`` (labelled ``"history"``), then ``histories``' new users, each checked (``id_list``)."""
    if histories is not None and not isinstance(histories, Mapping):
        raise TypeError(f"histories must map each new user's label to their items, got {type(histories).__name__}")
    new = [] if history is None else [NewUser(NEW_USER, id_list(history, "history", repeats=True))]
    labels = id_list(list(histories or {}), "histories' labels") if histories else []  # 1 and "1" are one label
    for label, items in zip(labels, (histories or {}).values(), strict=True):
        if label == NEW_USER and history is not None:
            raise ValueError(f"histories[{label!r}]: the label {NEW_USER!r} is history's; give this user another")
        new.append(NewUser(label, id_list(items, f"histories[{label!r}]", repeats=True)))
    return new


def load_recommender(path: str | Path) -> Recommender:
    """The models of an export folder (``<run>/export``), ready to ``recommend``."""
    return Recommender(path)


def _histories(csr: dict[str, torch.Tensor], num_users: int) -> UserHistories:
    indptr, items = csr["indptr"].numpy(), csr["items"].numpy()
    users = np.repeat(np.arange(num_users), np.diff(indptr))
    return UserHistories(users, items, np.arange(len(items)), num_users)  # already in time order


def _texts(path: Path, num_users: int, num_items: int) -> dict[str, list[str | None]]:
    """``texts.json``, one entry per item (texts, titles) and per user (texts)."""
    texts = read_json(path)
    for key, count in (("item_text", num_items), ("item_titles", num_items), ("user_text", num_users)):
        value = texts.get(key) if isinstance(texts, dict) else None
        if not isinstance(value, list) or len(value) != count:
            found = len(value) if isinstance(value, list) else type(value).__name__
            raise ExportIntegrityError(f"{path}: {key} must list one entry per row of id_maps.json ({count}), "
                                       f"found {found}")
        wrong = next((k for k, entry in enumerate(value) if entry is not None and not isinstance(entry, str)), None)
        if wrong is not None:
            raise ExportIntegrityError(f"{path}: {key}[{wrong}] must be a text or null, found {value[wrong]!r}")
    return texts
