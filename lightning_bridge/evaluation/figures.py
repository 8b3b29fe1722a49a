"""Test NDCG@10 by user activity and by target popularity: a table beside the run and a TensorBoard figure.

The paper's claim is about sparse users and rare items, so one number per model hides what matters. After
every test, the evaluated users are cut into quintiles of their training interactions (activity) and,
separately, into quintiles of their test item's training interactions (popularity; a user with several test
items counts by the rarest); each model's mean NDCG@10 per quintile goes to ``<run>/ndcg_by_bucket.csv`` and,
where matplotlib is installed (``pip install -e ".[plots]"``), to TensorBoard's IMAGES tab as one figure with
the models side by side, drawn once the command's tests are done (``TestFigures.draw_pending``): drawing and
encoding it costs more than ranking ML-100K's test users (``bench/test_time.py``), so ``trainer.test`` does no
figure work. Every user's own figures and groups go to ``<run>/per_user_test.csv``, so that a
benchmark can compare two models user by user (``bench/claim.py``'s bootstrap).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_bridge.evaluation.per_user import PerUserMetrics

log = logging.getLogger(__name__)
BUCKETS = 5
KINDS = {"activity": "users' training interactions", "popularity": "test item's training interactions"}


def quintiles(values: np.ndarray, ndcg: np.ndarray, users: np.ndarray) -> list[dict[str, Any]]:
    """Five equal-size groups of users by ``values`` (ties by user id), each with its value range, size and
    mean NDCG@10."""
    order = np.lexsort((users, values))
    rows = []
    for index, part in enumerate(np.array_split(order, BUCKETS), start=1):
        if len(part):
            rows.append({"quintile": index, "low": int(values[part].min()), "high": int(values[part].max()),
                         "users": len(part), "ndcg@10": float(ndcg[part].mean())})
    return rows


def bucket_table(result: dict[str, torch.Tensor], activity: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """``{"activity": [...], "popularity": [...]}`` quintile rows for one model's test."""
    users = result["users"].cpu().numpy()
    ndcg = result["ndcg"].cpu().numpy()
    return {"activity": quintiles(activity[users], ndcg, users),
            "popularity": quintiles(result["target_popularity"].cpu().numpy(), ndcg, users)}


def evaluators(pl_module: L.LightningModule) -> dict[str, Any]:
    """The RankingEvaluator of each model the module tests, by model name (``domain``, ``lm``)."""
    return {name: evaluator for name, (evaluator, _) in pl_module.active_models().items()}


class TestFigures(Callback):
    """After every test: NDCG@10 per activity and popularity quintile for each tested model, written to
    ``<run>/ndcg_by_bucket.csv`` (one block per test, named by its checkpoint), each user's figures to
    ``<run>/per_user_test.csv``, and the test's figure queued for :meth:`draw_pending` (the CLI calls it after
    its tests), which draws it, with matplotlib, into TensorBoard as the image
    ``test/ndcg@10_by_bucket/<checkpoint>``."""

    def __init__(self) -> None:
        self._metrics: dict[str, PerUserMetrics] = {}
        self._pending: list[tuple[list[TensorBoardLogger], dict[str, dict[str, list[dict[str, Any]]]], str, int]] = []
        self._warned = False

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = trainer.datamodule
        if not hasattr(data, "item_popularity"):
            return
        popularity = data.item_popularity()
        self._metrics = {}
        for model, evaluator in evaluators(pl_module).items():
            metric = PerUserMetrics(data.num_users, popularity).to(pl_module.device)
            evaluator.test_observers[:] = [metric.update]
            self._metrics[model] = metric

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._metrics:
            return
        for evaluator in evaluators(pl_module).values():
            evaluator.test_observers.clear()
        data = trainer.datamodule
        activity = np.bincount(data.interactions.users[data.split.train], minlength=data.num_users)
        results = {model: metric.compute() for model, metric in self._metrics.items()}
        tables = {model: bucket_table(result, activity) for model, result in results.items()}
        self._metrics = {}
        # without a logger there is no run folder to write into (and nothing to show a figure)
        log_dir = trainer.loggers[0].log_dir if trainer.loggers else None
        if not trainer.is_global_zero or not log_dir:
            return
        checkpoint = Path(trainer.ckpt_path).stem if trainer.ckpt_path else "final"
        write_csv(Path(log_dir) / "ndcg_by_bucket.csv", tables, checkpoint)
        write_per_user(Path(log_dir) / "per_user_test.csv", results, activity, checkpoint)
        boards = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if boards:
            self._pending.append((boards, tables, checkpoint, trainer.global_step))

    def draw_pending(self) -> None:
        """Draws the figure of every test since the last call into its TensorBoard run (none without
        matplotlib, which is said once)."""
        pending, self._pending = self._pending, []
        for boards, tables, checkpoint, step in pending:
            figure = draw(tables, checkpoint)
            if figure is None:
                if not self._warned:
                    log.info("matplotlib is not installed: NDCG@10 by bucket is in ndcg_by_bucket.csv only, no "
                             "TensorBoard figure (pip install -e \".[plots]\")")
                    self._warned = True
                return
            for logger in boards:  # the test closed the writer: this opens it again, so flush it
                logger.experiment.add_figure(f"test/ndcg@10_by_bucket/{checkpoint}", figure, step, close=False)
                logger.experiment.flush()


def draw_test_figures(trainer: L.Trainer) -> None:
    """Draws the figures of the tests ``trainer`` ran since the last call (``TestFigures.draw_pending``)."""
    for callback in trainer.callbacks:
        if isinstance(callback, TestFigures):
            callback.draw_pending()


def write_csv(path: Path, tables: dict[str, dict[str, list[dict[str, Any]]]], checkpoint: str) -> None:
    """Appends one row per (model, bucket kind, quintile) to ``path``."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["checkpoint", "model", "bucket", "quintile", "low", "high", "users", "ndcg@10"])
        for model, table in tables.items():
            for kind, rows in table.items():
                for r in rows:
                    writer.writerow([checkpoint, model, kind, r["quintile"], r["low"], r["high"], r["users"],
                                     f"{r['ndcg@10']:.6f}"])


PER_USER_FIELDS = ("checkpoint", "model", "user", "train_interactions", "target_popularity", "sparse", "rare",
                   "new_item", "ndcg@10", "hr@10", "new_item_ndcg@10", "new_item_hr@10")


def write_per_user(path: Path, results: dict[str, dict[str, torch.Tensor]], activity: np.ndarray,
                   checkpoint: str) -> None:
    """Appends one row per (model, evaluated user) to ``path``: the per-user figures behind every test metric,
    so that subgroups can be compared user by user (paired bootstraps) without re-running the test. The
    new-item columns (ranking among new items only) are empty for users whose target is not a new item."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(PER_USER_FIELDS)
        for model, r in results.items():
            columns = {name: value.cpu().numpy() for name, value in r.items()}
            for i, user in enumerate(columns["users"]):
                is_new = bool(columns["new_item"][i])
                writer.writerow([checkpoint, model, int(user), int(activity[user]),
                                 int(columns["target_popularity"][i]), int(columns["sparse"][i]),
                                 int(columns["rare"][i]), int(is_new), f"{columns['ndcg'][i]:.6f}",
                                 int(columns["hr"][i]),
                                 f"{columns['new_item_ndcg'][i]:.6f}" if is_new else "",
                                 int(columns["new_item_hr"][i]) if is_new else ""])


def draw(tables: dict[str, dict[str, list[dict[str, Any]]]], title: str) -> Any:
    """The matplotlib figure (None without matplotlib): one panel per bucket kind, one bar per model. A bare
    ``Figure``, outside pyplot's registry of open figures, which is nothing to close."""
    try:
        import matplotlib.figure
    except ImportError:
        return None
    figure = matplotlib.figure.Figure(figsize=(11, 4))
    axes = figure.subplots(1, len(KINDS), sharey=True)
    width = 0.8 / max(1, len(tables))
    for ax, (kind, meaning) in zip(axes, KINDS.items(), strict=True):
        labels = []
        for offset, (model, table) in enumerate(tables.items()):
            rows = table[kind]
            ax.bar([r["quintile"] + (offset - (len(tables) - 1) / 2) * width for r in rows],
                   [r["ndcg@10"] for r in rows], width, label=model)
            labels = [f"Q{r['quintile']}\n{r['low']}–{r['high']}" for r in rows]
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_xlabel(f"quintile of {meaning}")
        ax.set_title(f"by {kind}")
    axes[0].set_ylabel("test NDCG@10")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="upper right", ncols=len(tables))  # above the bars
    figure.suptitle(f"test NDCG@10 by bucket ({title})")
    figure.subplots_adjust(left=0.07, right=0.99, bottom=0.2, top=0.86, wspace=0.05)  # tight_layout's cost twice
    return figure
