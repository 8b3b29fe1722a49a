"""Domain-only LightGCN on MovieLens-100K: train to early stopping, test the best checkpoint, time it.

    python bench/domain_ml100k.py                       # configs/ml100k_lightgcn.yaml
    python bench/domain_ml100k.py --trainer.max_epochs 20   # any further CLI override is passed through

It drives the real command line (``lightning_bridge.cli.main``), so the numbers are those of
``python main.py fit --config configs/ml100k_lightgcn.yaml --test_after_fit true``. It also writes the split
as RecBole benchmark files (``logs/benchmark_split/ml-100k-split/``) for bench/recbole_lightgcn.py.

Reported (last line, JSON):
- ``test_ndcg@10`` / ``test_hr@10``: the best-on-validation checkpoint on the test items;
- ``train_s_per_epoch``: median wall time of a training epoch (negative sampling, forward, backward,
  optimizer step and Lightning's per-step work; validation time is subtracted);
- ``eval_s``: median wall time of ``trainer.test`` over every ML-100K user (graph propagation, full ranking
  of all 1682 items, masking, metrics, and Lightning's loop overhead);
- ``val_in_fit_s``: median wall time of one validation of every user inside ``fit`` (the same work on the
  validation items, with Lightning's evaluation loop but not ``trainer.test``'s setup and teardown);
- ``eval_loop_s``: the same ranking without the Trainer, over batches built beforehand (as RecBole's
  evaluation loader is): propagation, scores, masking, metrics;
- ``*_cpu_s``: the same as CPU time of this process (steadier than wall time on a shared machine);
- ``epochs``: training epochs run before early stopping.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time

import numpy as np
import torch
from lightning.pytorch import Callback

from lightning_bridge.cli import main as cli_main

CONFIG = "configs/ml100k_lightgcn.yaml"
SPLIT_DIR = "logs/benchmark_split"


class EpochTimer(Callback):
    """Wall and CPU time of each training epoch, without the validation that runs inside it."""

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.train_cpu_s: list[float] = []
        self.val_s: list[float] = []  # each validation inside fit: the loop a training run pays for
        self._start = self._val_start = self._val = (0.0, 0.0)

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._val = self._now(), (0.0, 0.0)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = self._now()

    def on_validation_end(self, trainer, pl_module) -> None:
        now = self._now()
        self._val = tuple(v + n - s for v, n, s in zip(self._val, now, self._val_start, strict=True))
        if not trainer.sanity_checking:
            self.val_s.append(now[0] - self._val_start[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = self._now()
        self.train_s.append(now[0] - self._start[0] - self._val[0])
        self.train_cpu_s.append(now[1] - self._start[1] - self._val[1])


def ranking_loop(model, batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Full ranking of every test user without the Trainer, over batches built beforehand (as RecBole's
    evaluation loader is): propagation, scores, masking, top-K metrics."""
    model.eval()
    with torch.inference_mode():  # as Trainer.test runs it (the metric states are inference tensors)
        model.freeze_vectors()
        for batch in batches:
            model.evaluator.update("test", model.recommender.scores(batch), batch)
        out = model.evaluator.compute("test", "domain")
        model.release_vectors()
    return out


def timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--eval_repeats", type=int, default=7)
    parser.add_argument("--export_embeddings", default=None,
                        help="write the best model's ego embeddings with raw ids (.npz) for "
                             "bench/recbole_lightgcn.py --crosscheck")
    argv = list(sys.argv[1:] if argv is None else argv)
    opts, overrides = parser.parse_known_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    config, eval_repeats = opts.config, opts.eval_repeats
    args = ["fit", "--config", config, "--test_after_fit", "true", "--data.init_args.export_split_to", SPLIT_DIR,
            "--trainer.callbacks+=__main__.EpochTimer", *overrides]

    t0 = time.perf_counter()
    cli = cli_main(args)
    total_s = time.perf_counter() - t0
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("domain/test/")}
    timer = next(c for c in trainer.callbacks if isinstance(c, EpochTimer))
    stopper = trainer.early_stopping_callback

    # the best checkpoint is loaded (trainer.test(ckpt_path="best") restored it into the model)
    eval_s, eval_cpu, again = timed(lambda: trainer.test(model, datamodule=data, verbose=False)[0], eval_repeats)
    batches = list(data.test_dataloader())
    loop_s, loop_cpu, loop = timed(lambda: ranking_loop(model, batches), eval_repeats)
    assert abs(again["domain/test/ndcg@10"] - metrics["domain/test/ndcg@10"]) < 1e-6, (again, metrics)
    assert abs(float(loop["domain/test/ndcg@10"]) - metrics["domain/test/ndcg@10"]) < 1e-6

    result = {
        "library": "lightning_bridge", "model": model.hparams.encoder, "config": config,
        "test_ndcg@10": metrics["domain/test/ndcg@10"], "test_hr@10": metrics["domain/test/hr@10"],
        "test_sparse_ndcg@10": metrics["domain/test/sparse_ndcg@10"],
        "valid_ndcg@10": float(trainer.checkpoint_callback.best_model_score),
        "epochs": len(timer.train_s), "stopped_epoch": stopper.stopped_epoch if stopper else None,
        "train_s_per_epoch": statistics.median(timer.train_s),
        "train_cpu_s_per_epoch": statistics.median(timer.train_cpu_s),
        "eval_s": statistics.median(eval_s), "eval_cpu_s": statistics.median(eval_cpu),
        "eval_loop_s": statistics.median(loop_s), "eval_loop_cpu_s": statistics.median(loop_cpu),
        "val_in_fit_s": statistics.median(timer.val_s),
        "eval_users": data.num_users, "num_items": data.num_items,
        "train_batch_size": data.hparams.batch_size, "eval_batch_size": data.hparams.eval_batch_size,
        "total_s": total_s, "torch_threads": torch.get_num_threads(),
        "best_checkpoint": trainer.checkpoint_callback.best_model_path, "split_files": SPLIT_DIR,
        "test": {k.removeprefix("domain/test/"): v for k, v in sorted(metrics.items())},
    }
    if opts.export_embeddings:
        np.savez(opts.export_embeddings, user_ids=data.interactions.user_ids, item_ids=data.interactions.item_ids,
                 user_emb=model.info.user.weight.detach().cpu().numpy(),
                 item_emb=model.info.item.weight.detach().cpu().numpy(), num_layers=model.hparams.num_layers)
        result["exported_embeddings"] = opts.export_embeddings
    print("rerun: python bench/domain_ml100k.py " + shlex.join(argv))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
