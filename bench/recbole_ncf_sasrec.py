"""RecBole 1.2.1's NeuMF and SASRec on the identical MovieLens-100K split that lightning_bridge trains on.

Runs in RecBole's own virtual environment, like its sibling bench/recbole_lightgcn.py, whose config, fit,
test and timing functions it uses. The split files are the ones bench/domain_ml100k.py writes:

    /tmp/recbole-venv/bin/python bench/recbole_ncf_sasrec.py --model NeuMF --data_path logs/benchmark_split --threads 1
    /tmp/recbole-venv/bin/python bench/recbole_ncf_sasrec.py --model SASRec --data_path logs/benchmark_split \
        --threads 1 --time_batches 6

SASRec: RecBole reads sequential benchmark files already cut into (history, next item) rows, so this script
writes them from the split, exactly as RecBole's own augmentation + leave-one-out split would: one training
row per training item after a user's first (its up to ``max_len`` previous training items), the validation
row reads the last ``max_len`` training items, the test row the last ``max_len`` of training + validation.
Those are the inputs lightning_bridge's SASRec reads at evaluation. RecBole's full-sort evaluation of a
sequential model masks no history, while ours masks the user's training items (and the validation item at
test); the script masks the same items in RecBole's scores, so both rank the same candidates.

``--time_batches N``: no training run; the wall time of N training batches (after one warm-up batch) is
extrapolated to an epoch, and evaluation is timed on the untrained model (its cost does not depend on the
weights). The last printed line is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from recbole.data import create_dataset, data_preparation
from recbole.model.general_recommender import NeuMF
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole_lightgcn import build_parser, fit_timed, recbole_config, test_best, timed_evaluations


def parse_args(argv: list[str] | None = None):
    p = build_parser(__doc__)
    p.add_argument("--model", choices=["NeuMF", "SASRec"], required=True)
    p.add_argument("--dropout", type=float, default=None, help="NeuMF dropout_prob; SASRec hidden and attention "
                                                                 "dropout (default: RecBole's)")
    p.add_argument("--mlp_hidden_size", type=int, nargs="+", default=None, help="NeuMF (default: RecBole's)")
    p.add_argument("--max_len", type=int, default=50, help="SASRec MAX_ITEM_LIST_LENGTH")
    p.add_argument("--time_batches", type=int, default=None, help="time this many training batches, no fit")
    return p.parse_args(argv)


def read_split(folder: Path, name: str) -> dict[str, dict[str, list[str]]]:
    """{part: {raw user: raw items in time order}} from the benchmark files (written sorted by user, time)."""
    parts = {}
    for part in ("train", "valid", "test"):
        items = defaultdict(list)
        with (folder / f"{name}.{part}.inter").open() as f:
            next(f)
            for line in f:
                user, item = line.split("\t", 2)[:2]
                items[user].append(item)
        parts[part] = items
    return parts


def write_sequence_files(split: dict[str, dict[str, list[str]]], folder: Path, name: str, max_len: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    rows = {"train": [], "valid": [], "test": []}
    for user, train in split["train"].items():
        rows["train"] += [(user, train[max(0, i - max_len):i], train[i]) for i in range(1, len(train))]
        known = train + split["valid"][user]
        rows["valid"].append((user, train[-max_len:], split["valid"][user][0]))
        rows["test"].append((user, known[-max_len:], split["test"][user][0]))
    for part, lines in rows.items():
        with (folder / f"{name}.{part}.inter").open("w") as f:
            f.write(header)
            f.writelines(f"{u}\t{' '.join(h)}\t{t}\n" for u, h, t in lines)


def mask_known_items(model, dataset, split: dict[str, dict[str, list[str]]]) -> dict[str, torch.Tensor]:
    """Wraps ``model.full_sort_predict`` to mask what our evaluation masks; returns the phase switch."""
    token = dataset.field2token_id
    masks = {}
    for phase, parts in (("valid", ("train",)), ("test", ("train", "valid"))):
        mask = torch.zeros(dataset.user_num, dataset.item_num, dtype=torch.bool)
        for part in parts:
            for user, items in split[part].items():
                mask[token["user_id"][user], [token["item_id"][i] for i in items]] = True
        masks[phase] = mask.to(next(model.parameters()).device)
    state = {"mask": masks["valid"]}
    predict, user_field = model.full_sort_predict, model.USER_ID

    def masked(interaction):
        return predict(interaction).view(len(interaction), -1).masked_fill(state["mask"][interaction[user_field]],
                                                                           -np.inf)
    model.full_sort_predict = masked
    state["masks"] = masks
    return state


def time_batches(trainer, train_data, n: int) -> dict:
    """Seconds per training batch over ``n`` batches after a warm-up one, and the epoch it extrapolates to."""
    stamps: list[float] = []
    cpu: list[float] = []

    class FirstBatches:
        def __iter__(self):
            for i, batch in enumerate(train_data):
                stamps.append(time.perf_counter())
                cpu.append(time.process_time())
                if i > n:
                    return
                yield batch

    trainer._train_epoch(FirstBatches(), 0)
    per_batch = [b - a for a, b in pairwise(stamps[1:])]
    per_batch_cpu = [b - a for a, b in pairwise(cpu[1:])]
    return {"train_batches_timed": len(per_batch), "train_batches_per_epoch": len(train_data),
            "train_s_per_batch": statistics.median(per_batch),
            "train_s_per_epoch_extrapolated": statistics.median(per_batch) * len(train_data),
            "train_cpu_s_per_epoch_extrapolated": statistics.median(per_batch_cpu) * len(train_data)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    split_folder = Path(args.data_path).resolve() / args.dataset
    split = read_split(split_folder, args.dataset)
    if args.model == "NeuMF":
        options = {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
        if args.dropout is not None:
            options["dropout_prob"] = args.dropout
        if args.mlp_hidden_size:
            options["mlp_hidden_size"] = args.mlp_hidden_size
        model_class = NeuMF
    else:
        sequences = split_folder.parent.parent / f"{split_folder.parent.name}_sequences_{args.max_len}"
        write_sequence_files(split, sequences / args.dataset, args.dataset, args.max_len)
        args.data_path = str(sequences)
        options = {"load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "alias_of_item_id": ["item_id_list"],
                   "MAX_ITEM_LIST_LENGTH": args.max_len, "train_neg_sample_args": None, "loss_type": "CE",
                   # a sequential full-sort loader counts its batch in users, not in user x item scores
                   "eval_batch_size": args.eval_users_per_batch}
        if args.dropout is not None:
            options.update(hidden_dropout_prob=args.dropout, attn_dropout_prob=args.dropout)
        model_class = SASRec
    config = recbole_config(args.model, args, {"embedding_size": args.embedding_size, **options})
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = model_class(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    state = mask_known_items(model, dataset, split) if args.model == "SASRec" else None
    result = {"library": "recbole==1.2.1", "model": args.model, "learning_rate": args.learning_rate,
              "options": {k: v for k, v in options.items() if k not in ("load_col", "alias_of_item_id")},
              "train_batch_size": args.train_batch_size, "torch_threads": torch.get_num_threads()}
    if args.time_batches:
        result.update(time_batches(trainer, train_data, args.time_batches))
        if state is not None:
            state["mask"] = state["masks"]["test"]
        times, cpu, _ = timed_evaluations(trainer, model, test_data, args.eval_repeats)
        result.update(eval_s=statistics.median(times), eval_cpu_s=statistics.median(cpu))
    else:
        result.update(fit_timed(trainer, train_data, valid_data, args.max_minutes))
        if not args.no_test:
            if state is not None:
                state["mask"] = state["masks"]["test"]
            test_best(trainer, model, test_data, args.eval_repeats, result)
    result["command"] = " ".join([sys.executable, *sys.argv]) if argv is None else None
    result["device"] = str(config["device"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
