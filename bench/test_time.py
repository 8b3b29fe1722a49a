"""What the test-time extras cost: ``trainer.test`` of LightGCN on MovieLens-100K with and without them, beside
RecBole's default-batch full-ranking evaluation of the same model on the same split, in one process.

    python bench/test_time.py --threads 1 [--repeats 5]

Three evaluations of all 943 test users, run in turn ``--repeats`` times after one warm-up round (medians, so
that a noisy moment hits each alike); every one ranks the whole catalogue with an untrained model of
configs/ml100k_lightgcn.yaml's shape (2 layers, 64 dimensions: the cost does not depend on the weights):

- ``recbole_s``: RecBole 1.2.1's ``Trainer.evaluate`` of its LightGCN at its default ``eval_batch_size``
  (4,096 scores: 2 users a batch), the propagated vectors cleared first, on the split this data module exports
  (as ``bench/recbole_lightgcn.py --eval_default_batch``); left out, with the reason, where RecBole does not
  import;
- ``test_bare_s``: ``trainer.test`` with a TensorBoard logger and nothing else;
- ``test_extras_s``: ``trainer.test`` with what the CLI adds to every test: the HPARAMS tab (``RunHparams``)
  and ``TestFigures`` (the per-user figures, ``ndcg_by_bucket.csv``, ``per_user_test.csv``);
- ``figure_s``: the TensorBoard figure of that test, which the CLI draws after its tests
  (``figures.draw_test_figures``), timed apart.

Each variant keeps one Trainer and run folder across its repeats, as ``bench/domain_ml100k.py``'s ``eval_s``
does; the first call of each (imports, the HPARAMS tab, the CSV headers: what a run pays once) is the warm-up,
reported apart as ``*_first_call_s``. Reports the medians of wall and CPU seconds (``*_cpu_s``: a busy
neighbour inflates wall time, not CPU time) and their ratios to RecBole's. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_bridge.data.datasets import MovieLensDataModule
from lightning_bridge.evaluation.figures import TestFigures, draw_test_figures
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.run.hparams import RunHparams

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ml100k_lightgcn.yaml"
RECBOLE_DEFAULT_EVAL_BATCH = 4096  # RecBole 1.2.1's eval_batch_size: scores per batch


def recbole_evaluation(split: Path, workdir: Path) -> Callable[[], None] | str:
    """One RecBole default-batch full-ranking evaluation of an untrained LightGCN as a callable, or why not."""
    try:
        import recbole_lightgcn as rb
    except ImportError as err:  # RecBole is not installed here
        return f"recbole does not import: {err}"
    args = rb.parse_args(["--data_path", str(split), "--workdir", str(workdir), "--n_layers", "2"])
    config = rb.recbole_config("LightGCN", args, {"reg_weight": args.reg_weight, "n_layers": args.n_layers,
                                                  "embedding_size": args.embedding_size})
    try:
        dataset = rb.create_dataset(config)
        train_data, _, test_data = rb.data_preparation(config, dataset)
        model = rb.LightGCN(config, train_data._dataset).to(config["device"])
    except Exception as err:  # e.g. scipy >= 1.13 or pandas 3 under RecBole 1.2.1: see bench/README.md
        return f"RecBole 1.2.1 does not run in this environment: {type(err).__name__}: {err}"
    trainer = rb.Trainer(config, model)
    config["eval_batch_size"] = RECBOLE_DEFAULT_EVAL_BATCH
    loader = rb.FullSortEvalDataLoader(config, test_data._dataset, test_data._sampler, shuffle=False)
    return lambda: rb.timed_evaluations(trainer, model, loader, 1)


def lightning_trainer(model: DomainModule, logs: Path, extras: bool) -> L.Trainer:
    """One Trainer and run folder, with the CLI's test-time callbacks or without them."""
    config = {"model": dict(model.hparams), "data": {"variant": "ml-100k"}}
    callbacks = [RunHparams(config), TestFigures()] if extras else []
    return L.Trainer(accelerator="cpu", devices=1, logger=TensorBoardLogger(logs, name="extras" if extras else "bare"),
                     callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval_batch_size", type=int, default=256, help="users per batch (the config's)")
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = MovieLensDataModule(variant="ml-100k", eval_batch_size=opts.eval_batch_size,
                                   export_split_to=str(tmp / "split"))
        data.prepare_data()
        data.setup("test")
        data.split  # noqa: B018 (the split writes the export RecBole reads)
        model = DomainModule(num_users=data.num_users, num_items=data.num_items, encoder="lightgcn", num_layers=2,
                             embedding_dim=64)
        bare, extras = (lightning_trainer(model, tmp / "logs", with_extras) for with_extras in (False, True))
        runs: dict[str, Callable[[], object]] = {
            "test_bare": lambda: bare.test(model, datamodule=data, verbose=False),
            "test_extras": lambda: extras.test(model, datamodule=data, verbose=False),
            "figure": lambda: draw_test_figures(extras)}
        recbole = recbole_evaluation(tmp / "split", tmp / "recbole")
        if callable(recbole):
            runs = {"recbole": recbole, **runs}
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(opts.repeats + 1):  # the first round is the cold call, reported apart
            for name, run in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    result = {f"{name}_s": statistics.median(t[1:]) for name, t in times.items()}
    result.update({f"{name}_cpu_s": statistics.median(t[1:]) for name, t in cpu.items()})
    result.update({f"{name}_first_call_s": t[0] for name, t in times.items()})
    if callable(recbole):
        for name in ("test_bare", "test_extras", "figure"):
            result[f"{name}_over_recbole"] = result[f"{name}_s"] / result["recbole_s"]
            result[f"{name}_cpu_over_recbole"] = result[f"{name}_cpu_s"] / result["recbole_cpu_s"]
    else:
        result["recbole"] = recbole
    result.update(repeats=opts.repeats, threads=torch.get_num_threads(), eval_batch_size=opts.eval_batch_size,
                  users=data.num_users, items=data.num_items)
    print("rerun with: python bench/test_time.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
