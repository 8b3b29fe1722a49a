"""``export/README.md``: the export folder explains itself (data and split, test metrics and the checkpoint each
model came from, what each file is, the package version, how to load it and how to reproduce the run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STANDALONE = "scores_without_lightning_bridge.py"  # a copy of standalone_scores.py
CARD_METRICS = ("ndcg@10", "hr@10", "recall@20", "mrr@10", "sparse_ndcg@10", "rare_ndcg@10")
FILES = {
    "recommender.json": "what to rebuild: each model's settings, the checkpoint it came from, the data, the test "
                        "metrics, the package version",
    "id_maps.json": "raw user and item ids, in the order of the tables' rows",
    "texts.json": "item (and user) texts the LM's prompts are made of; item titles",
    "histories.safetensors": "every user's known items in time order (CSR: `indptr`, `items`), masked when "
                             "recommending",
    "info_sharing.safetensors": "each model's user and item tables (`domain.user`, `domain.item`, `lm.user`, "
                                "`lm.item`)",
    "domain.safetensors": "the domain encoder's weights (`encoder.*`) and the training graph (`graph.users`, "
                          "`graph.items`)",
    "lm/adapter": "the LoRA adapter (peft `save_pretrained`; `base_model_name_or_path` is the backbone's hub id)",
    "lm/backbone": "the whole backbone (written when it was fine-tuned in full)",
    "lm/tokenizer": "the tokenizer, with the `[ID]` placeholder token",
    STANDALONE: "the scores of known users with torch, safetensors, transformers and peft alone (LightGCN, MF "
                "and the LM): `python scores_without_lightning_bridge.py . --model lm --users <ids>`",
    "lm/head.safetensors": "the ID-token projections (`injector.user_proj`, `injector.item_proj`: InfoSharing row "
                           "-> the input vector of an `[ID]` token) and the output projection (`out_proj`: pooled "
                           "hidden state -> InfoSharing space, scored against `lm.item`)",
}


def data_summary(data: Any) -> dict[str, Any]:
    """The data and split of a ``RecDataModule``, in words and counts."""
    h, split, inter = data.hparams, data.split, data.interactions
    protocol = ("per user by time, leave-one-out: the last interaction tests, the one before validates"
                if h.split == "leave_one_out" else f"per user, {h.ratio_order} order, ratios {list(h.ratios)}")
    filters = [f"{name}={h[name]}" for name in ("rating_threshold", "min_user_interactions", "min_item_interactions",
                                                "max_train_per_user", "new_item_fraction") if h.get(name)]
    return {"name": data.name(), "data module": type(data).__name__, "users": data.num_users,
            "items": data.num_items, "interactions": len(inter.users), "split": protocol,
            "train / validation / test interactions": f"{len(split.train)} / {len(split.valid)} / {len(split.test)}",
            "filters": ", ".join(filters) or "none (every rating is an interaction)", "seed": data.seed}


def write_model_card(out: Path, spec: dict[str, Any], data_card: dict[str, Any]) -> Path:
    """Writes ``out/README.md`` from the export's ``spec`` (recommender.json) and ``data_card``
    (``data_summary``)."""
    models = [m for m in ("domain", "lm") if m in spec]
    lines = [f"# {' and '.join(_describe(m, spec[m]) for m in models)} on {data_card['name']}", "",
             f"Exported by lightning_bridge {spec.get('version', 'unknown')} from the run whose folder holds this "
             "one. Nothing here names a path outside this folder.", "", "## Data and split", ""]
    lines += [f"- {key}: {value}" for key, value in data_card.items()]
    lines += ["", "## Test metrics", ""]
    metrics = spec.get("metrics") or {}
    if metrics:
        lines += ["| model | checkpoint | " + " | ".join(CARD_METRICS) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in CARD_METRICS) + " |"]
        for model in models:
            values = [f"{metrics[k]:.4f}" if (k := f"{model}/test/{c}") in metrics else "-" for c in CARD_METRICS]
            lines.append(f"| {model} | {spec[model].get('checkpoint', '-')} | " + " | ".join(values) + " |")
        lines += ["", "Full ranking over the whole catalogue, the user's training and validation items masked; "
                      "each model tested at the checkpoint it was exported from."]
    else:
        lines.append("Not tested when exported: `python main.py test --config <run>/config.yaml --ckpt_path best` "
                     "prints them.")
    lines += ["", "## Files", "", "| file | what it is |", "| --- | --- |"]
    lines += [f"| `{name}` | {what} |" for name, what in FILES.items() if (out / name).exists()]
    lines += ["", "## Use", "", "```python", "from lightning_bridge import load_recommender", "",
              'rec = load_recommender("path/to/this/folder")',
              'rec.recommend(user_ids=["<raw user id>"], k=10)  # known users',
              "rec.recommend(history=[<raw item ids, oldest first>], k=10)  # a new user", "```"]
    lines += ["", f"Without lightning_bridge: `{STANDALONE}` computes the same scores with torch, safetensors, "
                  "transformers and peft alone (what `load_recommender(...).scores(...)` returns, to 1e-5)."]
    if "lm" in models:
        lines += ["", "The `[ID]` token is outside the base model's vocabulary, so a plain transformers model cannot "
                      "embed it: embed the prompt with its `[ID]` ids replaced by 0, then overwrite each `[ID]` "
                      "position with `injector.item_proj(lm.item[row])` (a user's: "
                      "`injector.user_proj(lm.user[row])`) from `lm/head.safetensors` and "
                      "`info_sharing.safetensors`, and pass `inputs_embeds`; pool the last hidden state "
                      f"(`pooling` in recommender.json), apply `out_proj` and score against `lm.item`. `{STANDALONE}` "
                      "does exactly this, prompt assembly included."]
    lines += ["", "## Reproduce", "", "```bash", "python main.py fit --config <run>/config.yaml",
              "```", "", "`<run>` is the folder that holds this one; its `config.yaml` is the run's resolved config "
              f"(seed {data_card.get('seed', '?')})."]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _describe(model: str, settings: dict[str, Any]) -> str:
    if model == "domain":
        return f"{settings.get('encoder', 'domain')} (domain model)"
    return f"{settings.get('base_model', 'LM')} + {settings.get('finetune', 'lora')} (language model)"
