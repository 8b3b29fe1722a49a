"""RecBole 1.2.1's LightGCN on the identical MovieLens-100K split that lightning_bridge trains on.

Runs in its own virtual environment (RecBole pins old numpy/scipy/pandas; see bench/README.md), so it must
not import lightning_bridge. The split comes from our data module as RecBole benchmark files:

    python -c "from lightning_bridge.data.datasets import MovieLensDataModule as M; \
M(export_split_to='bench/split').split"
    /tmp/recbole-venv/bin/python bench/recbole_lightgcn.py --data_path bench/split

What it measures, the same way as bench/domain_ml100k.py:
- ``train_s_per_epoch``: median wall time of ``Trainer._train_epoch`` (negative sampling, forward, backward,
  optimizer step; no validation);
- ``eval_s``: median wall time of a full-ranking ``Trainer.evaluate`` of every test user with the best
  weights, the graph propagated afresh each time (RecBole caches the propagated vectors after the first
  call, so the cache is cleared before each repeat, as our evaluation propagates once per run too).

Masking: RecBole's samplers keep, per phase, the cumulative set of items a user has seen (train; train +
valid; train + valid + test) and the full-sort loader masks ``used - positives``: the training items at
validation and the training + validation items at test, the same items that lightning_bridge masks. RecBole
also masks its padding item 0, which is not one of the 1682 real items.

The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if not hasattr(np, "float"):  # RecBole 1.2.1 still names a few removed numpy aliases
    np.float, np.int, np.bool = float, int, bool
if not hasattr(np, "float_"):  # numpy 2 removed these too; RecBole's Config re-aliases np.float etc. from them
    np.float_, np.complex_, np.unicode_ = np.float64, np.complex128, np.str_

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.model.general_recommender import LightGCN
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed


def build_parser(description: str | None = __doc__) -> argparse.ArgumentParser:
    """The options every RecBole bench script shares (data, training, evaluation, timing)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", default="bench/split",
                   help="folder holding ml-100k-split/ml-100k-split.{train,valid,test}.inter")
    p.add_argument("--dataset", default="ml-100k-split")
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--embedding_size", type=int, default=64)
    p.add_argument("--train_batch_size", type=int, default=2048)
    p.add_argument("--eval_users_per_batch", type=int, default=1024,
                   help="users per full-ranking batch (RecBole counts eval_batch_size in user x item scores)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--eval_step", type=int, default=5, help="epochs between validations")
    p.add_argument("--stopping_step", type=int, default=10, help="validations without improvement before stopping")
    p.add_argument("--eval_repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--no_test", action="store_true", help="tuning: report validation only, never touch test")
    p.add_argument("--crosscheck", default=None,
                   help="no training: load ego embeddings exported by bench/domain_ml100k.py --export_embeddings "
                        "into RecBole's LightGCN and evaluate them with RecBole's own evaluator")
    p.add_argument("--workdir", default=None, help="where RecBole writes its log/, saved/ (default: a temp dir)")
    p.add_argument("--gpu", action="store_true", help="train and evaluate on the first CUDA device")
    p.add_argument("--max_minutes", type=float, default=None,
                   help="stop training after the first validation past this wall time and test the best epoch so "
                        "far (reported as stopped_by: time_budget, a lower bound on a converged run)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    p.add_argument("--reg_weight", type=float, default=1e-4)
    p.add_argument("--n_layers", type=int, default=3)
    p.add_argument("--eval_default_batch", action="store_true",
                   help="also time evaluation at RecBole's default eval_batch_size (4096 scores: 2 users a batch)")
    return p.parse_args(argv)


def count_items(folder: Path, name: str) -> int:
    items = set()
    for part in ("train", "valid", "test"):
        with (folder / f"{name}.{part}.inter").open() as f:
            column = next(f).rstrip("\n").split("\t").index("item_id:token")
            items.update(line.rstrip("\n").split("\t")[column] for line in f)
    return len(items)


def recbole_config(model: str, args: argparse.Namespace, model_options: dict) -> Config:
    """RecBole's config for ``model`` on the benchmark files under ``args.data_path``: the metrics, cutoffs,
    evaluation batch (in users) and run settings every model of ours is compared under, plus its options."""
    data_path = str(Path(args.data_path).resolve())
    workdir = args.workdir or tempfile.mkdtemp(prefix="recbole_run_")
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    num_items = count_items(Path(data_path) / args.dataset, args.dataset) + 1  # + RecBole's padding id 0
    config_dict = {
        "data_path": data_path,
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
        # the same metrics and cutoffs that lightning_bridge computes at every evaluation
        "metrics": ["Recall", "MRR", "NDCG", "Hit"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
        "metric_decimal_place": 6,
        "train_batch_size": args.train_batch_size,
        "eval_batch_size": args.eval_users_per_batch * num_items,
        "learning_rate": args.learning_rate, "epochs": args.epochs, "eval_step": args.eval_step,
        "stopping_step": args.stopping_step, "seed": args.seed, "reproducibility": True,
        "use_gpu": args.gpu, "show_progress": False, "state": "WARNING",
        "checkpoint_dir": os.path.join(workdir, "saved"),
        **model_options,
    }
    argv_kept, sys.argv = sys.argv, sys.argv[:1]  # RecBole also parses sys.argv; it is ours
    config = Config(model=model, dataset=args.dataset, config_dict=config_dict)
    sys.argv = argv_kept
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logging.getLogger().setLevel(logging.WARNING)
    return config


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = recbole_config("LightGCN", args, {"reg_weight": args.reg_weight, "n_layers": args.n_layers,
                                               "embedding_size": args.embedding_size})
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    assert dataset.item_num * args.eval_users_per_batch == config["eval_batch_size"], dataset.item_num
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = LightGCN(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)

    if args.crosscheck:
        return crosscheck(args, config, dataset, model, trainer, valid_data, test_data)

    result = {"library": "recbole==1.2.1", "model": "LightGCN",
              **fit_timed(trainer, train_data, valid_data, args.max_minutes),
              "learning_rate": args.learning_rate, "reg_weight": args.reg_weight, "n_layers": args.n_layers,
              "embedding_size": args.embedding_size, "train_batch_size": args.train_batch_size,
              "num_users_evaluated": None, "torch_threads": torch.get_num_threads()}
    if not args.no_test:
        test_best(trainer, model, test_data, args.eval_repeats, result)
        if args.eval_default_batch:
            matched, config["eval_batch_size"] = config["eval_batch_size"], 4096
            default_loader = FullSortEvalDataLoader(config, test_data._dataset, test_data._sampler, shuffle=False)
            config["eval_batch_size"] = matched
            times, _, check = timed_evaluations(trainer, model, default_loader, max(1, args.eval_repeats // 2))
            assert abs(check["ndcg@10"] - result["test_ndcg@10"]) < 1e-4
            result["eval_s_default_batch"] = statistics.median(times)
        result["eval_users_per_batch"] = args.eval_users_per_batch
    result["command"] = " ".join([sys.executable, *sys.argv]) if argv is None else None
    result["device"] = str(config["device"])
    print(json.dumps(result))
    return result


class _OutOfTime(Exception):
    """Raised after a validation once ``--max_minutes`` have passed; RecBole has saved the best epoch by then."""


def fit_timed(trainer, train_data, valid_data, max_minutes: float | None = None) -> dict:
    """``trainer.fit`` with early stopping on validation; the best validation metrics, the best epoch, why
    training stopped and the wall and CPU time of every training epoch (``Trainer._train_epoch``: sampling,
    forward, backward, step). Each validation prints one progress line, so a killed run still shows its curve."""
    epoch_times: list[float] = []
    epoch_cpu: list[float] = []
    train_epoch = trainer._train_epoch

    def timed_train_epoch(*a, **kw):
        t, c = time.perf_counter(), time.process_time()
        out = train_epoch(*a, **kw)
        epoch_times.append(time.perf_counter() - t)
        epoch_cpu.append(time.process_time() - c)
        return out

    trainer._train_epoch = timed_train_epoch
    best_epoch = None
    deadline = float("inf") if max_minutes is None else time.perf_counter() + 60 * max_minutes

    def remember_best(epoch_idx: int, valid_score: float) -> None:
        nonlocal best_epoch
        if valid_score == trainer.best_valid_score:
            best_epoch = epoch_idx + 1
        print(f"epoch {epoch_idx + 1}: valid ndcg@10 {valid_score:.6f} (best {trainer.best_valid_score:.6f} at "
              f"epoch {best_epoch})", file=sys.stderr, flush=True)
        if time.perf_counter() > deadline:
            raise _OutOfTime
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False,
                    callback_fn=remember_best)
        stopped_by = "early_stopping" if len(epoch_times) < trainer.epochs else "max_epochs"
    except _OutOfTime:
        stopped_by = "time_budget"
    best_valid_result = trainer.best_valid_result
    return {"valid_ndcg@10": float(best_valid_result["ndcg@10"]), "valid_hr@10": float(best_valid_result["hit@10"]),
            "best_epoch": best_epoch, "epochs": len(epoch_times), "stopped_by": stopped_by,
            "train_s_per_epoch": statistics.median(epoch_times),
            "train_cpu_s_per_epoch": statistics.median(epoch_cpu),
            "train_s_epochs": [round(t, 3) for t in epoch_times]}


def test_best(trainer, model, test_data, eval_repeats: int, result: dict) -> None:
    """Tests the best-validation weights and times ``eval_repeats`` full-ranking evaluations; adds the figures
    to ``result``."""
    # RecBole's own reload calls torch.load with torch>=2.6's weights_only default and fails on its
    # checkpoint (which holds the config); the file is the one this run just wrote.
    checkpoint = torch.load(trainer.saved_model_file, map_location=trainer.device, weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    result["test_ndcg@10"] = float(test_result["ndcg@10"])
    result["test_hr@10"] = float(test_result["hit@10"])
    result["test"] = {k: float(v) for k, v in test_result.items()}
    result["num_users_evaluated"] = len(test_data.uid_list) if hasattr(test_data, "uid_list") else len(
        test_data._dataset)
    times, cpu, _ = timed_evaluations(trainer, model, test_data, eval_repeats)
    result["eval_s"] = statistics.median(times)
    result["eval_cpu_s"] = statistics.median(cpu)


def timed_evaluations(trainer, model, loader, repeats: int) -> tuple[list[float], list[float], dict]:
    """Wall and CPU seconds of ``repeats`` full-ranking evaluations, and the last one's metrics."""
    wall, cpu, result = [], [], {}
    for _ in range(repeats):
        model.restore_user_e = model.restore_item_e = None  # LightGCN: propagate afresh, as a real evaluation does
        t, c = time.perf_counter(), time.process_time()
        result = trainer.evaluate(loader, load_best_model=False, show_progress=False)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu, result


def crosscheck(args, config, dataset, model, trainer, valid_data, test_data) -> dict:
    """RecBole's metrics for lightning_bridge's trained embeddings: with the same split, graph and masking they
    must equal lightning_bridge's own validation and test metrics."""
    saved = np.load(args.crosscheck)
    assert int(saved["num_layers"]) == args.n_layers, "pass --n_layers as trained"
    user_row = {raw: i for i, raw in enumerate(saved["user_ids"].tolist())}
    item_row = {raw: i for i, raw in enumerate(saved["item_ids"].tolist())}
    with torch.no_grad():
        for field, rows, table, emb in (("user_id", user_row, model.user_embedding, saved["user_emb"]),
                                        ("item_id", item_row, model.item_embedding, saved["item_emb"])):
            tokens = dataset.field2id_token[field]
            table.weight.zero_()  # row 0 is RecBole's padding id, masked in evaluation
            for rid in range(1, len(tokens)):
                table.weight[rid] = torch.from_numpy(emb[rows[str(tokens[rid])]])
    out = {"crosscheck": args.crosscheck}
    for name, loader in (("valid", valid_data), ("test", test_data)):
        model.restore_user_e = model.restore_item_e = None
        res = trainer.evaluate(loader, load_best_model=False, show_progress=False)
        out.update({f"{name}_{k}": float(v) for k, v in res.items()})
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
