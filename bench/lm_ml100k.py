"""LM-only (MiniLM + LoRA) on MovieLens-100K: train, test the best checkpoint, time it, and measure what the
Lightning Trainer costs over a bare PyTorch loop.

    python bench/lm_ml100k.py                          # configs/ml100k_lm.yaml
    python bench/lm_ml100k.py --trainer.max_epochs 1   # any further CLI override is passed through
    python bench/lm_ml100k.py --threads 1              # torch.set_num_threads(1) (a crowded CPU)
    python bench/lm_ml100k.py --overhead_steps 6 --overhead_rounds 3   # the side-by-side measurement (0: skip)

It drives the real command line (``lightning_bridge.cli.main``), so the quality numbers are those of
``python main.py fit --config configs/ml100k_lm.yaml --test_after_fit true``.

Reported (last line, JSON):
- ``test_ndcg@10`` / ``test_hr@10`` (and the sparsest fifth of users): the best-on-validation checkpoint;
- ``train_tokens_per_s`` / ``train_examples_per_s``: prompt tokens (padding excluded) and examples over the
  time spent inside training batches (prompt building, forward, backward, optimizer step) during the fit;
- ``test_tokens_per_s``: prompt tokens over the time inside test batches (inference: prompts, forward,
  full ranking);
- ``..._per_cpu_s``: the same over the process's CPU time, which a crowded machine does not inflate (with
  ``--threads 1`` it is what one dedicated core gives);
- ``eval_s``: wall time of ``trainer.test`` over every user (prompts, forward, full ranking, masking,
  metrics); ``val_s``: total validation time during the fit;
- ``overhead_vs_bare_loop``: median step time of LMModule trained by a Lightning Trainer divided by the
  median step time of a bare loop (``zero_grad``, ``model.loss``, ``backward``, ``step``) on the same batches,
  same model and same optimizer groups, measured in alternating rounds in this process. A step is timed from
  one batch's start to the next one's, so per-step framework work (hooks, logging, loader) counts.
"""

from __future__ import annotations

import itertools
import json
import shlex
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_bridge.cli import main as cli_main

CONFIG = "configs/ml100k_lm.yaml"


class LMThroughput(Callback):
    """Time inside training and test batches and the prompt tokens they held; validation time."""

    def __init__(self) -> None:
        self.train_s = self.val_s = self.test_s = self.train_cpu_s = self.test_cpu_s = 0.0
        self.tokens = self.examples = self.steps = self.test_tokens = 0
        self._t = self._cpu = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t, self._cpu = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_s += time.perf_counter() - self._t
        self.train_cpu_s += time.process_time() - self._cpu
        prompts = pl_module.recommender.prompts.build(batch["users"], batch["history"])  # outside the timed window
        self.tokens += int(prompts["attention_mask"].sum())
        self.examples += len(batch["users"])
        self.steps += 1

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._t, self._cpu = time.perf_counter(), time.process_time()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.test_s += time.perf_counter() - self._t
        self.test_cpu_s += time.process_time() - self._cpu
        prompts = pl_module.recommender.prompts.build(batch["users"], batch["history"])
        self.test_tokens += int(prompts["attention_mask"].sum())

    def on_validation_start(self, trainer, pl_module) -> None:
        self._v = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val_s += time.perf_counter() - self._v


class StepStarts(Callback):
    """perf_counter at the start of every training batch, and at the end of the last one."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.times.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter())


def _step_times(starts: list[float]) -> list[float]:
    """Per-step durations without the first (optimizer state creation, allocator warm-up)."""
    return [b - a for a, b in itertools.pairwise(starts[1:])]


def lightning_round(model, batches: list[dict], log_every: int) -> list[float]:
    timer = StepStarts()
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, callbacks=[timer],
                            logger=TensorBoardLogger(logs, name="overhead"), log_every_n_steps=log_every,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return _step_times(timer.times)


def bare_round(model, batches: list[dict]) -> list[float]:
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    model.train()
    starts = []
    for batch in torch.utils.data.DataLoader(batches, batch_size=None):
        starts.append(time.perf_counter())
        optimizer.zero_grad()
        loss = model.recommender.loss(batch)
        loss.backward()
        optimizer.step()
    starts.append(time.perf_counter())
    return _step_times(starts)


def measure_overhead(model, datamodule, steps: int, rounds: int, log_every: int) -> dict:
    """Alternating Lightning / bare rounds over the same training batches; medians of per-step times."""
    dataset = datamodule._train_dataset("lm")
    batches = [dataset[(10_000, b)] for b in range(min(steps + 1, len(dataset)))]  # an epoch fit never saw
    lightning_s, bare_s = [], []
    for _ in range(rounds):
        lightning_s += lightning_round(model, batches, log_every)
        bare_s += bare_round(model, batches)
    return {"overhead_vs_bare_loop": statistics.median(lightning_s) / statistics.median(bare_s),
            "lightning_step_s": statistics.median(lightning_s), "bare_step_s": statistics.median(bare_s),
            "overhead_steps_timed": len(bare_s)}


def _pop(argv: list[str], flag: str, default):
    if flag not in argv:
        return default
    i = argv.index(flag)
    value = argv[i + 1]
    del argv[i: i + 2]
    return type(default)(value) if default is not None else value


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python bench/lm_ml100k.py " + shlex.join(argv)
    threads = _pop(argv, "--threads", None)
    if threads is not None:
        torch.set_num_threads(int(threads))
    steps = _pop(argv, "--overhead_steps", 6)
    rounds = _pop(argv, "--overhead_rounds", 3)
    config = _pop(argv, "--config", CONFIG)

    t0 = time.perf_counter()
    cli = cli_main(["fit", "--config", config, "--trainer.callbacks+=__main__.LMThroughput", *argv])
    fit_s = time.perf_counter() - t0
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    meter = next(c for c in trainer.callbacks if isinstance(c, LMThroughput))

    t = time.perf_counter()
    trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)
    eval_s = time.perf_counter() - t
    metrics = {k.removeprefix("lm/"): float(v) for k, v in trainer.callback_metrics.items()
               if k.startswith("lm/test/")}

    overhead = measure_overhead(model, data, steps, rounds, trainer.log_every_n_steps) if rounds else {}

    result = {
        "library": "lightning_bridge", "model": "LMModule", "backbone": model.hparams.backbone, "config": config,
        "test_ndcg@10": metrics["test/ndcg@10"], "test_hr@10": metrics["test/hr@10"],
        "test_sparse_ndcg@10": metrics["test/sparse_ndcg@10"], "test_ndcg@20": metrics["test/ndcg@20"],
        "valid_ndcg@10": float(trainer.checkpoint_callback.best_model_score),
        "train_tokens_per_s": meter.tokens / meter.train_s, "train_examples_per_s": meter.examples / meter.train_s,
        "train_steps": meter.steps, "train_tokens": meter.tokens, "train_s": meter.train_s,
        "mean_prompt_tokens": meter.tokens / max(meter.examples, 1), "val_s": meter.val_s, "eval_s": eval_s,
        "test_tokens_per_s": meter.test_tokens / meter.test_s if meter.test_s else None,
        "train_tokens_per_cpu_s": meter.tokens / meter.train_cpu_s,
        "test_tokens_per_cpu_s": meter.test_tokens / meter.test_cpu_s if meter.test_cpu_s else None,
        "test_tokens": meter.test_tokens,
        "fit_s": fit_s, "eval_users": data.num_users, "num_items": data.num_items, **overhead,
        "torch_threads": torch.get_num_threads(), "command": command,
    }
    print(f"rerun: {command}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
