"""RecBole 1.2.1's LightGCN and BPR (MF) on bench/scale.py's synthetic splits: the ratio the issue asks for.

Runs in RecBole's own virtual environment, like bench/recbole_lightgcn.py, whose config and timing functions it
uses. The splits are written by our side first:

    python bench/scale.py --sizes 1e5 1e6 --export_recbole logs/scale_recbole
    /tmp/recbole-venv/bin/python bench/recbole_scale.py --size 1e5 --model LightGCN --data_path logs/scale_recbole

What it measures, as bench/scale.py does (batch 4,096, dim 64, 2 LightGCN layers, one thread by default):
- ``train_s_per_batch``: median wall time of one training batch (RecBole's negative sampling, forward,
  backward, Adam) over ``--time_batches`` batches after a warm-up one, and the epoch it extrapolates to;
- ``eval_s_per_1000_users``: full ranking of the first ``--eval_users`` test users in batches of 250
  (``Trainer._full_sort_batch_eval``: scores over the catalogue, training and validation items masked, and
  the collector's top-k), LightGCN propagating afresh first, as our evaluation does once per run.
Untrained weights: neither time depends on their values. The last printed line is one JSON object.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch
from recbole.data import create_dataset, data_preparation
from recbole.model.general_recommender import BPR, LightGCN
from recbole.trainer import Trainer
from recbole_lightgcn import build_parser, recbole_config
from recbole_ncf_sasrec import time_batches


def parse_args(argv: list[str] | None = None):
    p = build_parser(__doc__)
    p.add_argument("--size", type=float, required=True, help="interactions of the scale.py dataset, e.g. 1e5")
    p.add_argument("--model", choices=["LightGCN", "BPR"], required=True)
    p.add_argument("--n_layers", type=int, default=2)
    p.add_argument("--time_batches", type=int, default=20)
    p.add_argument("--eval_users", type=int, default=1000)
    p.set_defaults(train_batch_size=4096, eval_users_per_batch=250, threads=1)
    return p.parse_args(argv)


def time_evaluation(trainer, model, test_data, users: int) -> tuple[float, int]:
    """Wall seconds to rank the first ``users`` test users (whole batches) and how many that was."""
    trainer.model.eval()
    trainer.tot_item_num = test_data._dataset.item_num
    if isinstance(model, LightGCN):
        model.restore_user_e = model.restore_item_e = None
    done, start = 0, time.perf_counter()
    with torch.no_grad():
        for batch in test_data:
            interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
            trainer.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
            done += len(interaction)
            if done >= users:
                break
    return time.perf_counter() - start, done


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size = int(args.size)
    args.dataset = f"scale-{size}-split"
    options = {"embedding_size": args.embedding_size, "reg_weight": 1e-4}
    if args.model == "LightGCN":
        options["n_layers"] = args.n_layers
    t = time.perf_counter()
    config = recbole_config(args.model, args, options)
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    model = (LightGCN if args.model == "LightGCN" else BPR)(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    setup_s = time.perf_counter() - t
    result = {"library": "recbole==1.2.1", "interactions": size, "model": args.model, "setup_s": setup_s,
              "users": dataset.user_num - 1, "items": dataset.item_num - 1,
              "train_batch_size": args.train_batch_size,
              "n_layers": args.n_layers if args.model == "LightGCN" else None,
              **time_batches(trainer, train_data, args.time_batches)}
    eval_s, evaluated = time_evaluation(trainer, model, test_data, args.eval_users)
    result.update(eval_s_per_1000_users=eval_s / evaluated * 1000, eval_users=evaluated,
                  torch_threads=torch.get_num_threads(),
                  peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  command=" ".join([sys.executable, *sys.argv]) if argv is None else None)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
