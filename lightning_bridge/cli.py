"""The command line: ``python main.py {fit,validate,test,predict} --config configs/<run>.yaml``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_bridge.callbacks import TopKWriter
from lightning_bridge.data.datamodule import RecDataModule
from lightning_bridge.models.bridge import BridgeModule
from lightning_bridge.warm_start import warm_start_domain


class BridgeCLI(LightningCLI):
    """LightningCLI with the project's defaults: dataset sizes linked into the model, a checkpoint that keeps
    ``last.ckpt`` and the best by validation NDCG@10, a predictions writer, and optional test after fit.

    Co-training keeps one best checkpoint per model: ``checkpoint`` monitors one side (by default the domain
    model) and a second checkpoint, ``best-<other side>-...``, the other side's validation NDCG@10, so that
    each model is tested (and can be exported) at its own best epoch rather than at the other's.
    """

    test_metrics: dict[str, float]
    """After ``fit --test_after_fit true``: the reported test metrics, each model's from its own best."""
    warm_start_checkpoint: str | None = None
    """After a fit with ``model.warm_start_auto``: the domain model's best checkpoint that co-training began from."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "domain/val/ndcg@10", "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}-{step}"})
        parser.add_lightning_class_args(TopKWriter, "predictions")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="After fit, test the best checkpoint and print its metrics")

    def before_fit(self) -> None:
        if isinstance(self.model, BridgeModule) and self.model.hparams.warm_start_auto \
                and not self.config.fit.ckpt_path:
            if self.trainer.world_size > 1:
                raise ValueError("model.warm_start_auto runs on one process; under several devices warm-start "
                                 "from a domain-only run with model.warm_start_checkpoint instead")
            self.warm_start_checkpoint = warm_start_domain(
                self.model, self.datamodule, self.trainer.log_dir or ".",
                accelerator=type(self.trainer.accelerator).__name__.removesuffix("Accelerator").lower())
        primary = self.trainer.checkpoint_callback
        if isinstance(self.model, BridgeModule) and _side(primary):
            other = "lm" if _side(primary) == "domain" else "domain"
            self.trainer.callbacks.append(ModelCheckpoint(
                dirpath=primary.dirpath, monitor=f"{other}/val/ndcg@10", mode="max", save_top_k=1,
                filename=f"best-{other}-{{epoch}}-{{step}}", auto_insert_metric_name=True))

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit:
            return
        # read before testing: loading a checkpoint restores the callbacks' states as they were saved in it
        best = {_side(c): c.best_model_path for c in self.trainer.checkpoint_callbacks
                if _side(c) and c.best_model_path}
        primary, trainer = self.trainer.checkpoint_callback, self.trainer
        if primary is not None and not primary.best_model_path:
            last = primary.last_model_path or "last.ckpt"
            raise ValueError(
                f"test_after_fit: fit saved no best checkpoint by {primary.monitor} to test, because no validation "
                f"ran (trainer.max_epochs={trainer.max_epochs}, trainer.check_val_every_n_epoch="
                f"{trainer.check_val_every_n_epoch}). Validate more often, or test the final weights with "
                f"`main.py test --config <run folder>/config.yaml --ckpt_path {last}`.")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best")
        self.test_metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        tested = _side(self.trainer.checkpoint_callback)
        for side, path in best.items():
            if side != tested:
                self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=path)
                self.test_metrics.update({k: float(v) for k, v in self.trainer.callback_metrics.items()
                                          if k.startswith(f"{side}/")})
        if self.trainer.is_global_zero:
            print(summary_table(self.test_metrics, best))


def _side(checkpoint: ModelCheckpoint | None) -> str | None:
    """The model a checkpoint callback monitors ("domain" for ``domain/val/ndcg@10``), if any."""
    return checkpoint.monitor.split("/")[0] if checkpoint is not None and checkpoint.monitor else None


SUMMARY_COLUMNS = ("ndcg@10", "hr@10", "recall@20", "mrr@10", "sparse_ndcg@10", "sparse_hr@10", "rare_ndcg@10",
                   "new_item_ndcg@10", "new_item_catalogue_hr@10")


def summary_table(metrics: dict, tested_at: dict[str, str]) -> str:
    """The headline test metrics, one row per model that was tested, with the checkpoint it was tested at
    (``tested_at``: model name -> checkpoint path; a model without its own is tested at the first one).
    Group columns the data does not have (e.g. new items without the cold-start protocol) are left out."""
    fallback = next(iter(tested_at.values()), "")
    models = [m for m in ("domain", "lm") if f"{m}/test/ndcg@10" in metrics]
    columns = [c for c in SUMMARY_COLUMNS if all(f"{m}/test/{c}" in metrics for m in models)]
    widths = [max(16, len(c) + 2) for c in columns]
    rows = [f"{'model':<8}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)) + "  checkpoint"]
    for model in models:
        rows.append(f"{model:<8}" + "".join(f"{float(metrics[f'{model}/test/{c}']):>{w}.4f}"
                                             for c, w in zip(columns, widths, strict=True))
                    + f"  {Path(tested_at.get(model, fallback)).name}")
    return "\n".join(rows)


def main(args: list[str] | None = None) -> BridgeCLI:
    """Runs the CLI; ``args`` lets tests drive it exactly as the shell does."""
    return BridgeCLI(
        L.LightningModule, RecDataModule, subclass_mode_model=True, subclass_mode_data=True,
        seed_everything_default=42, save_config_kwargs={"overwrite": True}, args=args,
        trainer_defaults={"logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                     "init_args": {"save_dir": "logs", "name": "run"}}},
    )
