"""A trained run as portable files: ``<run>/export/``, which ``lightning_bridge.load_recommender`` reads back
without Lightning (``serving/recommender.py``), and which other tools read on their own (peft, tokenizers, safetensors).

    export/
      README.md                the model card (model_card.py): data, split, test metrics, files, how to reproduce
      scores_without_lightning_bridge.py   the scores with torch, safetensors, transformers and peft alone
      recommender.json         what to rebuild: each model's settings, the checkpoint it came from (relative to
                               the run folder), dims, the data, the test metrics, the package version
      id_maps.json             raw user and item ids, in the order of the tables' rows
      texts.json               item (and user) texts the LM's prompts are made of; item titles
      histories.safetensors    every user's known items in time order (CSR: indptr, items), for masking
      info_sharing.safetensors each model's InfoSharing tables: domain.user, domain.item, lm.user, lm.item
      domain.safetensors       the domain encoder's weights, and the training graph (graph.users, graph.items)
      lm/adapter/              peft save_pretrained (base_model_name_or_path and its README's base_model: the
                               backbone's hub id or path)
      lm/backbone/             the whole backbone, only when it was fine-tuned in full
      lm/tokenizer/            the tokenizer, with the ID placeholder token
      lm/head.safetensors      the ID-token projections and the output projection

Each model is written from its own checkpoint (a co-training run tests each at its own best epoch), so the
two models' tables may differ: they are kept apart under ``domain.*`` and ``lm.*``. No file names an absolute
path, and every file is readable by all (0644), so the folder can be copied or published as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from jsonargparse import ArgumentParser
from peft import PeftModel
from safetensors.torch import save_file

from lightning_bridge import __version__
from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.data.datamodule import RecDataModule
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lm import LMModule
from lightning_bridge.run.checkpoints import DATA_LINKED, read_checkpoint, saved_model_config
from lightning_bridge.serving import standalone_scores
from lightning_bridge.serving.manifest import write_manifest
from lightning_bridge.serving.model_card import STANDALONE, data_summary, write_model_card
from lightning_bridge.serving.recommender import FORMAT

HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# the settings each encoder is rebuilt from (recommender.py's defaults stand for the others)
ENCODER_SETTINGS = {"lightgcn": ("num_layers", "isolated_nodes"), "mf": (),
                    "ncf": ("mlp_layers", "dropout"),
                    "sasrec": ("max_len", "num_blocks", "num_heads", "dropout")}
LM_SETTINGS = ("backbone", "gguf_file", "local_files_only", "dtype", "finetune", "scoring", "temperature",
               "template", "item_separator", "max_length", "max_item_tokens")


def export_checkpoints(data: RecDataModule, checkpoints: dict[str, str], out: str | Path,
                       read: dict[str, dict[str, Any]] | None = None, metrics: dict[str, float] | None = None
                       ) -> Path:
    """Writes ``out`` from checkpoints: ``{"domain": path, "lm": path}`` for a co-training run (each model from
    its own; one path may serve both), or one of them for a model trained alone. ``read``: path -> the
    checkpoint as the caller already read it (those files are not read again). ``metrics``: the test metrics
    of those checkpoints (``domain/test/ndcg@10``...), for the model card."""
    sides: dict[str, L.LightningModule] = {}
    loaded: dict[str, L.LightningModule] = {}  # a co-training checkpoint that serves both models is built once
    for side, path in checkpoints.items():
        model = loaded[path] = loaded.get(path) or model_from_checkpoint(path, (read or {}).get(path))
        if isinstance(model, BridgeModule):
            model = model.domain if side == "domain" else model.lm
        expected = DomainModule if side == "domain" else LMModule
        if not isinstance(model, expected):
            raise ValueError(f"{path}: a {type(model).__name__} checkpoint has no {side} model to export")
        sides[side] = model
    return write_artefacts(data, sides, out, checkpoints, metrics)


def model_from_checkpoint(path: str, checkpoint: dict[str, Any] | None = None) -> L.LightningModule:
    """The model a checkpoint of ``main.py fit`` holds, rebuilt from the model config it records (a
    co-training checkpoint's hyperparameters leave out its two models' sections) and loaded in eval mode.
    ``checkpoint``: the file as already read (else it is read here)."""
    if checkpoint is None:  # a damaged or foreign file is an error naming it; every class path is registered
        checkpoint = read_checkpoint(path)
    config = saved_model_config(checkpoint)
    if config is None:
        raise ValueError(f"{path}: the checkpoint records no model config (it was not written by main.py fit)")
    sizes = {k: checkpoint["hyper_parameters"][k] for k in DATA_LINKED}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningModule, "model", fail_untyped=False)
    parsed = parser.parse_object({"model": {"class_path": config["class_path"],
                                            "init_args": {**config.get("init_args", {}), **sizes}}})
    model = parser.instantiate_classes(parsed).model
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def write_artefacts(data: RecDataModule, sides: dict[str, L.LightningModule], out: str | Path,
                    sources: dict[str, str] | None = None, metrics: dict[str, float] | None = None) -> Path:
    """Writes the export folder for the trained ``sides`` (``{"domain": DomainModule, "lm": LMModule}``), from
    the checkpoints ``sources`` (side -> path) with the test ``metrics`` they reached."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inter = data.interactions
    known = data.known_histories()
    spec: dict[str, Any] = {"format": FORMAT, "num_users": data.num_users, "num_items": data.num_items,
                            "history_len": data.hparams.history_len, "version": __version__,
                            "data": data_summary(data)}
    _write_json(out / "id_maps.json", {"users": [str(u) for u in inter.user_ids],
                                       "items": [str(i) for i in inter.item_ids]})
    _write_json(out / "texts.json", {"item_text": list(inter.item_text), "user_text": list(inter.user_text),
                                     "item_titles": list(inter.item_titles)})
    save_file({"indptr": torch.from_numpy(known.indptr.astype(np.int64)),
               "items": torch.from_numpy(known.items.astype(np.int64))}, out / "histories.safetensors")
    tables = {}
    for side, model in sides.items():
        info = model.recommender.info
        # the item vectors, text channel included: the exported tables score exactly as the model did
        tables[f"{side}.user"], tables[f"{side}.item"] = info.user.weight, info.item_vectors()
        spec["embedding_dim"] = info.dim
    # copies: both models built from one co-training checkpoint share the very same tables, which safetensors
    # refuses to write twice
    save_file({k: v.detach().clone() for k, v in tables.items()}, out / "info_sharing.safetensors")
    if "domain" in sides:
        spec["domain"] = _write_domain(sides["domain"], data, out)
    if "lm" in sides:
        spec["lm"] = _write_lm(sides["lm"], out / "lm")
    for side, path in (sources or {}).items():  # relative to the run folder, which holds checkpoints/ and export/
        spec[side]["checkpoint"] = os.path.relpath(Path(path).resolve(), out.resolve().parent)
    if metrics:
        spec["metrics"] = {k: float(v) for k, v in sorted(metrics.items())
                           if k.split("/")[0] in sides and "/test/" in k}
    _write_json(out / "recommender.json", spec)
    write_model_card(out, spec, spec["data"])
    shutil.copyfile(Path(standalone_scores.__file__), out / STANDALONE)
    write_manifest(out)  # last: every file's sha256 and shapes, checked by load_recommender
    _readable_by_all(out)
    return out


def _readable_by_all(folder: Path) -> None:
    """0644 files and 0755 folders: safetensors writes 0600, which a shared or published folder should not keep."""
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_domain(model: DomainModule, data: RecDataModule, out: Path) -> dict[str, Any]:
    recommender = model.recommender
    tensors = {f"encoder.{k}": v.detach().contiguous() for k, v in recommender.encoder.state_dict().items()}
    users, items = data.train_graph()
    tensors["graph.users"], tensors["graph.items"] = (torch.from_numpy(np.asarray(a, np.int64)) for a in (users, items))
    save_file(tensors, out / "domain.safetensors")
    encoder = model.hparams["encoder"]
    settings = {k: model.hparams[k] for k in ENCODER_SETTINGS.get(encoder, ()) if k in model.hparams}
    return {"encoder": encoder, **settings, "loss": recommender.loss_kind}


def _write_lm(model: LMModule, out: Path) -> dict[str, Any]:
    network, h = model.recommender.network, model.hparams
    out.mkdir(parents=True, exist_ok=True)
    model.recommender.tokenizer.save_pretrained(out / "tokenizer")
    head = {f"{name}.{k}": v.detach().contiguous() for name in ("injector", "out_proj")
            for k, v in getattr(network, name).state_dict().items()}
    save_file(head, out / "head.safetensors")
    backbone = network.backbone
    if isinstance(backbone, PeftModel):
        config = backbone.peft_config["default"]
        given, config.base_model_name_or_path = config.base_model_name_or_path, HUB_IDS.get(h.backbone, h.backbone)
        try:
            # the embeddings are never adapted; "auto" would ask the hub whether the vocabulary was resized
            backbone.save_pretrained(out / "adapter", save_embedding_layers=False)
        finally:
            config.base_model_name_or_path = given
        _write_adapter_card(out / "adapter", HUB_IDS.get(h.backbone, h.backbone))
    elif h.finetune == "full":
        backbone.save_pretrained(out / "backbone")
    return {**{k: h[k] for k in LM_SETTINGS if k in h}, "pooling": network.pooling,
            "base_model": HUB_IDS.get(h.backbone, h.backbone)}


def _write_adapter_card(folder: Path, base_model: str) -> None:
    """Replaces peft's empty model-card stub, whose ``base_model`` is the local path the backbone was read from."""
    (folder / "README.md").write_text(
        f"---\nbase_model: {base_model}\nlibrary_name: peft\ntags:\n- base_model:adapter:{base_model}\n- lora\n"
        f"- lightning_bridge\n---\n\n# LoRA adapter of a lightning_bridge language-model recommender\n\n"
        "The adapter alone does not recommend: it reads prompts whose `[ID]` tokens carry projected item and user "
        "vectors (`../head.safetensors`, `../../info_sharing.safetensors`). `../../README.md` says how.\n")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
