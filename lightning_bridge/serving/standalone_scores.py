"""Scores of known users from an export folder with torch, safetensors, transformers and peft alone.

Every export holds a copy of this file as ``scores_without_lightning_bridge.py``; it imports nothing of
lightning_bridge, so it documents in runnable form what ``load_recommender(folder).scores(user_ids)`` computes:

    python scores_without_lightning_bridge.py <export folder> --model lm --users 196 186

prints one JSON list of scores per user, equal to ``load_recommender`` (``tests/test_model_card.py`` checks it
to 1e-5). The domain part covers LightGCN and MF; SASRec and NeuMF need ``load_recommender``.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import torch
from safetensors.torch import load_file

ID_TOKEN = "[ID]"


def domain_scores(folder: Path, users: list[int]) -> torch.Tensor:
    """LightGCN: the mean of K propagations over the normalised user-item graph; MF: the rows themselves."""
    spec = json.loads((folder / "recommender.json").read_text())
    settings, tables = spec["domain"], load_file(folder / "info_sharing.safetensors")
    user, item = tables["domain.user"], tables["domain.item"]
    if settings["encoder"] == "lightgcn":
        graph, n_users, n_items = load_file(folder / "domain.safetensors"), len(user), len(item)
        pairs = torch.unique(graph["graph.users"] * n_items + graph["graph.items"])  # a repeated pair counts once
        u, i = pairs // n_items, pairs % n_items
        du = torch.bincount(u, minlength=n_users).double()
        di = torch.bincount(i, minlength=n_items).double()
        r = torch.sparse_coo_tensor(torch.stack([u, i]), (1 / torch.sqrt(du[u] * di[i])).float(), (n_users, n_items))
        layers, x_u, x_i = [(user, item)], user, item
        for _ in range(settings["num_layers"]):
            x_u, x_i = r @ x_i, r.t() @ x_u
            layers.append((x_u, x_i))
        user = torch.stack([lu for lu, _ in layers]).mean(0)
        item = torch.stack([li for _, li in layers]).mean(0)
        if settings.get("isolated_nodes") == "ego":  # a node without edges keeps its ego row whole
            k = settings["num_layers"] + 1
            user = torch.where((du == 0)[:, None], user * k, user)
            item = torch.where((di == 0)[:, None], item * k, item)
    elif settings["encoder"] != "mf":
        raise SystemExit(f"{settings['encoder']}: this file covers lightgcn and mf; use load_recommender")
    return user[users] @ item.T


def lm_scores(folder: Path, users: list[int]) -> torch.Tensor:
    """The LM reads a prompt whose ``[ID]`` tokens carry projected InfoSharing rows (the token itself is outside
    the base vocabulary: its id is replaced by 0 before embedding and its vector overwritten)."""
    from transformers import AutoModel, AutoTokenizer

    spec = json.loads((folder / "recommender.json").read_text())
    s, lm = spec["lm"], folder / "lm"
    tokenizer = AutoTokenizer.from_pretrained(lm / "tokenizer")
    if (lm / "backbone").is_dir():  # fine-tuned in full
        model = AutoModel.from_pretrained(lm / "backbone")
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModel.from_pretrained(s["base_model"]), str(lm / "adapter"))
    model.eval()
    tables, head = load_file(folder / "info_sharing.safetensors"), load_file(lm / "head.safetensors")
    histories, texts = load_file(folder / "histories.safetensors"), json.loads((folder / "texts.json").read_text())
    out = []
    for user in users:
        known = histories["items"][histories["indptr"][user]: histories["indptr"][user + 1]].tolist()
        ids, rows = _prompt(tokenizer, s, texts, user, known[-spec["history_len"]:])
        with torch.no_grad():
            where = torch.tensor([r is not None for r in rows])
            embeds = model.get_input_embeddings()(torch.tensor(ids).masked_fill(where, 0))
            for position, row in enumerate(rows):
                if row is not None:
                    kind, index = row
                    table, proj = tables[f"lm.{kind}"], f"injector.{kind}_proj"
                    embeds[position] = head[f"{proj}.weight"] @ table[index] + head[f"{proj}.bias"]
            hidden = model(inputs_embeds=embeds[None], attention_mask=torch.ones(1, len(ids))).last_hidden_state[0]
            pooled = {"last": hidden[-1], "first": hidden[0], "mean": hidden.mean(0)}[s["pooling"]]
            query, items = head["out_proj.weight"] @ pooled + head["out_proj.bias"], tables["lm.item"]
            if s["scoring"] == "cosine":
                query, items = query / query.norm(), items / items.norm(dim=1, keepdim=True)
            out.append(items @ query / s["temperature"])
    return torch.stack(out)


def _prompt(tokenizer, s: dict, texts: dict, user: int, history: list[int]) -> tuple[list[int], list]:
    """Token ids and, per position, ``(table, row)`` for an ``[ID]`` token: the template's literals as they
    are, ``{user}`` the user's ``[ID]``, ``{user_text}`` their text, ``{history}`` the most recent items that fit
    ``max_length`` (oldest dropped whole), oldest first, separated by ``item_separator``, each as its ``[ID]`` and
    its text cut to ``max_item_tokens``; all between the tokenizer's own special tokens. Every piece is
    tokenised on its own."""
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    bare, full = encode("x"), tokenizer("x")["input_ids"]
    start = next((k for k in range(len(full)) if full[k: k + len(bare)] == bare), 0)
    prefix, suffix = full[:start], full[start + len(bare):]
    space = " " if tokenizer.decode(encode("a") + encode("b")).strip() == "ab" else ""  # byte-level BPE
    cut = s["max_item_tokens"]
    item_tokens = {i: encode(space + texts["item_text"][i] if texts["item_text"][i] else "")[:cut] for i in history}
    user_tokens = encode(texts["user_text"][user] or "")[:cut]
    parts = [(lit, field) for lit, field, _, _ in string.Formatter().parse(s["template"])]
    fields = {field for _, field in parts if field}
    sep, id_token = encode(s["item_separator"]), tokenizer.convert_tokens_to_ids(ID_TOKEN)
    budget = s["max_length"] - len(prefix) - len(suffix) - sum(len(encode(lit)) for lit, _ in parts)
    budget -= ("user" in fields) + ("user_text" in fields) * len(user_tokens)
    kept, cost = [], -len(sep)  # separators go between items
    for item in reversed(history):
        cost += 1 + len(item_tokens[item]) + len(sep)
        if cost > budget:
            break
        kept.insert(0, item)
    ids, rows = list(prefix), [None] * len(prefix)

    def add(tokens: list[int], row=None) -> None:
        ids.extend(tokens)
        rows.extend([row] * len(tokens))

    for literal, field in parts:
        add(encode(literal))
        if field == "user":
            add([id_token], ("user", user))
        elif field == "user_text":
            add(user_tokens)
        elif field == "history":
            for position, item in enumerate(kept):
                add(sep if position else [])
                add([id_token], ("item", item))
                add(item_tokens[item])
    add(suffix)
    return ids, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the export folder")
    parser.add_argument("--model", choices=("domain", "lm"), default="domain")
    parser.add_argument("--users", nargs="+", required=True, help="raw user ids")
    args = parser.parse_args()
    ids = json.loads((args.folder / "id_maps.json").read_text())["users"]
    users = [ids.index(u) for u in args.users]
    scores = (domain_scores if args.model == "domain" else lm_scores)(args.folder, users)
    for row in scores.tolist():
        print(json.dumps(row))


if __name__ == "__main__":
    main()
