"""Where ``trainer.test``'s time goes on MovieLens-100K: the ranking work against Lightning's own costs.

    python bench/eval_overhead.py --threads 1

One LightGCN (configs/ml100k_lightgcn.yaml's shape, untrained: the cost of a full ranking does not depend on
the weights) evaluates all 943 users in five ways, run in turn ``--repeats`` times (medians, so that a noisy
moment hits every variant alike):

- ``ranking_loop_s``: propagation, scores, masking and metrics, no Trainer (bench/domain_ml100k.py's loop);
- ``test_s``: ``trainer.test`` as a user runs it (TensorBoard logger, 24 metrics logged);
- ``test_unlogged_s``: the same, the metrics computed but not handed to ``self.log``;
- ``test_no_work_s``: the same module doing no evaluation work: Lightning's fixed cost of a call;
- ``test_empty_module_s``: ``trainer.test`` of a one-parameter LightningModule over one batch.

Derived: ``logging_s`` (test - unlogged) and ``logging_ms_per_key``; ``lightning_fixed_s`` (no_work).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
from domain_ml100k import ranking_loop
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_bridge.data.datasets import MovieLensDataModule
from lightning_bridge.models.domain import DomainModule


class UnloggedDomainModule(DomainModule):
    """Computes the test metrics and drops them instead of logging them."""

    def on_test_epoch_end(self) -> None:
        self.evaluator.compute("test", "domain")
        self.release_vectors()


class IdleDomainModule(DomainModule):
    """Runs through trainer.test doing no evaluation work at all."""

    def on_test_epoch_start(self) -> None:
        pass

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pass

    def on_test_epoch_end(self) -> None:
        pass


class EmptyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        pass

    def test_dataloader(self) -> list[torch.Tensor]:
        return [torch.zeros(1)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--eval_batch_size", type=int, default=256,
                        help="users per full-ranking batch (configs/ml100k_lightgcn.yaml's)")
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    L.seed_everything(0, verbose=False)
    data = MovieLensDataModule(variant="ml-100k", eval_batch_size=opts.eval_batch_size)
    data.prepare_data()
    shape = dict(num_users=data.num_users, num_items=data.num_items, num_layers=2, embedding_dim=64)
    models = {name: cls(**shape) for name, cls in (("test", DomainModule), ("test_unlogged", UnloggedDomainModule),
                                                   ("test_no_work", IdleDomainModule))}
    for model in models.values():
        model.load_state_dict(models["test"].state_dict())
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=TensorBoardLogger(logs, name="eval_overhead"),
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        runs = {name: (lambda m=model: trainer.test(m, datamodule=data, verbose=False))
                for name, model in models.items()}
        runs["test_empty_module"] = lambda: trainer.test(EmptyModule(), verbose=False)
        batches = list(data.test_dataloader())
        runs["ranking_loop"] = lambda: ranking_loop(models["test"], batches)
        logged_keys = len(runs["test"]()[0])
        times = {name: [] for name in runs}
        for repeat in range(opts.repeats + 1):  # the first round warms up and is not counted
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if repeat:
                    times[name].append(time.perf_counter() - start)
    medians = {f"{name}_s": statistics.median(t) for name, t in times.items()}
    result = {
        **medians,
        "logging_s": medians["test_s"] - medians["test_unlogged_s"],
        "logging_ms_per_key": 1e3 * (medians["test_s"] - medians["test_unlogged_s"]) / logged_keys,
        "lightning_fixed_s": medians["test_no_work_s"],
        "logged_keys": logged_keys, "users": data.num_users, "items": data.num_items,
        "eval_batch_size": opts.eval_batch_size, "repeats": opts.repeats, "threads": torch.get_num_threads(),
    }
    print("rerun with: python bench/eval_overhead.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
