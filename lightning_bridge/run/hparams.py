"""TensorBoard's HPARAMS tab: every run's whole resolved config beside its final metrics, so runs compare.

Lightning records the module's own arguments only (nested model sections and the data, trainer and seed are
lost) and, as the only metric, a placeholder ``hp_metric = -1``. :class:`RunHparams` writes the full config
instead and declares the test metrics (both models') and the validation NDCG@10 as the metrics; their values
are the scalars the run logs under those names, so the table fills in as the run is tested.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

from lightning_bridge.run.lightning_internals import tensorboard_file_writer

log = logging.getLogger(__name__)

# the metrics the HPARAMS tab shows for each model (beside <model>/val/ndcg@10)
TEST_METRICS = ("ndcg@10", "hr@10", "recall@20", "mrr@10", "sparse_ndcg@10", "rare_ndcg@10",
                "new_item_ndcg@10")
# keys of the config that say nothing about the run's results
LEFT_OUT = ("config", "print_config", "ckpt_path", "trainer.logger", "trainer.callbacks",
            "trainer.enable_progress_bar", "trainer.enable_model_summary")


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model.lm.backbone": "minilm", "data.batch_size": 2048, ...}``: nested sections joined by dots,
    ``init_args`` levels dropped, values TensorBoard can show (numbers, strings, booleans; others as text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        if any(name == skip or name.startswith(f"{skip}.") for skip in LEFT_OUT):
            continue
        if isinstance(value, Mapping):
            out.update(flat_config(value, name))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = "None" if value is None else str(value)
    return out


def metric_names(models: Iterable[str]) -> list[str]:
    """The tags the HPARAMS tab shows as metrics for these models (``domain``, ``lm``)."""
    return [f"{m}/{tag}" for m in models for tag in ("val/ndcg@10", *(f"test/{t}" for t in TEST_METRICS))]


class RunHparams(Callback):
    """Writes the run's resolved config and its metric names to TensorBoard's HPARAMS tab, once per run
    folder, when fit, validate or test starts.

    Args:
        config: the resolved config of the subcommand as a nested dict (what ``config.yaml`` holds).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.params = flat_config(config)
        self._written: set[str] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "predict" or not trainer.is_global_zero:
            return
        models = getattr(pl_module, "train_batch_kinds", ("domain",))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and logger.log_dir not in self._written:
                self._written.add(logger.log_dir)
                write_hparams(logger, self.params, metric_names(models))


def write_hparams(logger: TensorBoardLogger, params: dict[str, Any], metrics: list[str]) -> None:
    """The HPARAMS plugin's three summaries; the metrics' values are read from the run's scalars."""
    writer = tensorboard_file_writer(logger)
    for summary in hparams(params, dict.fromkeys(metrics, 0.0)):
        writer.add_summary(summary)


def keep_data_hparams_apart(model: L.LightningModule, data: L.LightningDataModule | None) -> None:
    """A setting both the model and the data have with different values (``cache_dir`` of an LM run and
    of its data) makes Lightning refuse to merge their hyperparameters for the logger; the data's then stay
    out of that merge (``config.yaml`` and the HPARAMS tab hold them all the same)."""
    if data is None or not hasattr(data, "hparams_initial") or not hasattr(model, "hparams_initial"):
        return
    clash = sorted(k for k in model.hparams_initial.keys() & data.hparams_initial.keys()
                   if k != "_class_path" and model.hparams_initial[k] != data.hparams_initial[k])
    if clash:
        data.save_hyperparameters(dict(data.hparams), logger=False)
        log.debug("the model's and the data's %s differ: the data's settings are left out of hparams.yaml",
                  ", ".join(clash))
