"""What a fit leaves behind once training stops: each model tested at its own best checkpoint
(``--test_after_fit``) and the run's portable export (``--export_after_fit``)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.models.lm import LMModule
from lightning_bridge.run.callbacks import RunCheckpoint
from lightning_bridge.run.console import summary_table
from lightning_bridge.serving.artefacts import export_checkpoints

log = logging.getLogger(__name__)


def monitored_side(checkpoint: ModelCheckpoint | None) -> str | None:
    """The model a checkpoint callback monitors ("domain" for ``domain/val/ndcg@10``), if any."""
    return checkpoint.monitor.split("/")[0] if checkpoint is not None and checkpoint.monitor else None


def other_side_checkpoint(model: L.LightningModule, primary: ModelCheckpoint | None) -> RunCheckpoint | None:
    """Co-training keeps one best checkpoint per model: beside ``primary`` (one side's validation NDCG@10), a
    ``best-<other side>-...`` by the other side's, so that each model is tested at its own best epoch."""
    side = monitored_side(primary)
    if not (isinstance(model, BridgeModule) and side and model.hparams.evaluate_lm):
        return None
    other = "lm" if side == "domain" else "domain"
    return RunCheckpoint(dirpath=primary.dirpath, monitor=f"{other}/val/ndcg@10", mode="max", save_top_k=1,
                         filename=f"best-{other}-{{epoch}}-{{step}}", auto_insert_metric_name=True)


def test_each_at_its_best(trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
                          best: dict[str, str]) -> dict[str, float]:
    """Tests each model once, at its own best checkpoint (``best``: side -> path), or else at the primary
    one, prints the summary table and returns the test metrics."""
    primary = trainer.checkpoint_callback
    if primary is not None and not primary.best_model_path:
        last = primary.last_model_path or "last.ckpt"
        raise ValueError(
            f"test_after_fit: fit saved no best checkpoint by {primary.monitor} to test, because no validation "
            f"ran (trainer.max_epochs={trainer.max_epochs}, trainer.check_val_every_n_epoch="
            f"{trainer.check_val_every_n_epoch}). Validate more often, or test the final weights with "
            f"`main.py test --config <run folder>/config.yaml --ckpt_path {last}`.")
    others = {side: path for side, path in best.items() if side != monitored_side(primary)}
    try:
        if others:
            model.evaluate_only(set(model.evaluated_models()) - set(others))
        trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        for side, path in others.items():
            model.evaluate_only({side})
            trainer.test(model, datamodule=datamodule, ckpt_path=path, verbose=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    finally:
        model.evaluate_only(None)
    if trainer.is_global_zero:
        print(summary_table(metrics, best))
    return metrics


def export_sides(model: L.LightningModule, best: dict[str, str], last: str) -> dict[str, str]:
    """The checkpoint each model of ``model`` is exported from: its own best (``best``: side -> path), else the
    other model's best, else ``last``."""
    fallback = best.get("domain") or best.get("lm") or last
    if isinstance(model, BridgeModule):
        sides = {"domain": best.get("domain") or fallback, "lm": best.get("lm") or fallback}
    else:
        sides = {"lm" if isinstance(model, LMModule) else "domain": fallback}
    return {side: path for side, path in sides.items() if path}


def export_run(model: L.LightningModule, datamodule: L.LightningDataModule, best: dict[str, str], last: str,
               folder: Path, metrics: dict[str, float] | None) -> Path | None:
    """Writes ``folder`` from each model's best checkpoint (the last one where none was kept); None where
    nothing could be exported (said in a warning)."""
    sides = export_sides(model, best, last)
    if not sides:
        log.warning("export_after_fit: no checkpoint was written, so there is nothing to export")
        return None
    if any(Path(p).is_dir() for p in sides.values()):
        log.warning("export_after_fit: the checkpoints are sharded folders; consolidate one into a file and "
                    "run `python -m lightning_bridge.serving.export artefacts <checkpoint>`")
        return None
    exported = export_checkpoints(datamodule, sides, folder, metrics=metrics)
    log.info("exported the run's artefacts to %s", exported)
    return exported
