"""The command line: ``python main.py {fit,validate,test,predict} --config configs/<run>.yaml``."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_bridge.callbacks import TopKWriter
from lightning_bridge.data.datamodule import RecDataModule


class BridgeCLI(LightningCLI):
    """LightningCLI with the project's defaults: dataset sizes linked into the model, a checkpoint that keeps
    ``last.ckpt`` and the best by validation NDCG@10, a predictions writer, and optional test after fit."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "domain/val/ndcg@10", "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}-{step}"})
        parser.add_lightning_class_args(TopKWriter, "predictions")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="After fit, test the best checkpoint and print its metrics")

    def after_fit(self) -> None:
        if self.config.fit.test_after_fit:
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best")
            if self.trainer.is_global_zero:
                print(summary_table(self.trainer.callback_metrics))


SUMMARY_COLUMNS = ("ndcg@10", "hr@10", "recall@20", "mrr@10", "sparse_ndcg@10", "sparse_hr@10")


def summary_table(metrics: dict) -> str:
    """The headline test metrics, one row per model that was tested."""
    rows = [f"{'model':<8}" + "".join(f"{c:>16}" for c in SUMMARY_COLUMNS)]
    for model in ("domain", "lm"):
        if f"{model}/test/ndcg@10" in metrics:
            rows.append(f"{model:<8}" + "".join(f"{float(metrics[f'{model}/test/{c}']):>16.4f}"
                                                 for c in SUMMARY_COLUMNS))
    return "\n".join(rows)


def main(args: list[str] | None = None) -> BridgeCLI:
    """Runs the CLI; ``args`` lets tests drive it exactly as the shell does."""
    return BridgeCLI(
        L.LightningModule, RecDataModule, subclass_mode_model=True, subclass_mode_data=True,
        seed_everything_default=42, save_config_kwargs={"overwrite": True}, args=args,
        trainer_defaults={"logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                     "init_args": {"save_dir": "logs", "name": "run"}}},
    )
