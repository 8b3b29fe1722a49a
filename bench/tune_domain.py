"""Grid search for a domain config (default configs/ml100k_lightgcn.yaml) on VALIDATION NDCG@10 only (the test
split is never run).

    python bench/tune_domain.py --lr 1e-3 2e-3 5e-3 --reg 1e-4 1e-3 --layers 2 3 --batch 2048

Each point is ``python main.py fit --config configs/ml100k_lightgcn.yaml`` with overrides; one JSON line per
point: the best validation NDCG@10 (what the checkpoint callback kept) and the epochs run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from lightning_bridge.cli import main as cli_main


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/ml100k_lightgcn.yaml")
    p.add_argument("--lr", type=float, nargs="+", default=[2e-3])
    p.add_argument("--reg", type=float, nargs="+", default=[1e-4])
    p.add_argument("--layers", type=int, nargs="+", default=[3])
    p.add_argument("--batch", type=int, nargs="+", default=[2048])
    p.add_argument("--dim", type=int, nargs="+", default=[64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("extra", nargs="*", help="further CLI overrides, after --")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for lr, reg, layers, batch, dim in itertools.product(args.lr, args.reg, args.layers, args.batch, args.dim):
        t = time.perf_counter()
        cli = cli_main(["fit", "--config", args.config, "--model.init_args.optimizer.init_args.lr", str(lr),
                        "--model.init_args.reg_weight", str(reg), "--model.init_args.num_layers", str(layers),
                        "--model.init_args.embedding_dim", str(dim), "--data.init_args.batch_size", str(batch),
                        "--trainer.logger.init_args.name", f"tune_{Path(args.config).stem}", *args.extra])
        ckpt = cli.trainer.checkpoint_callback
        print(json.dumps({"lr": lr, "reg_weight": reg, "num_layers": layers, "batch_size": batch,
                          "embedding_dim": dim, "valid_ndcg@10": float(ckpt.best_model_score),
                          "best": ckpt.best_model_path, "epochs": cli.trainer.current_epoch,
                          "seconds": round(time.perf_counter() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
