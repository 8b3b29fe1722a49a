"""The options a run has beside Lightning's model, data and trainer sections, with the project's defaults: the
data's sizes linked into the model, the checkpoint (``last.ckpt`` and the best by validation NDCG@10), the
predictions writer, the progress log, and what ``fit`` does once training stops."""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser

from lightning_bridge.data.requests import PredictionRequest
from lightning_bridge.run.callbacks import RunCheckpoint, TopKWriter
from lightning_bridge.run.console import ProgressLog, Verbosity


def add_run_options(parser: LightningArgumentParser) -> None:
    """Adds them to ``parser`` (``BridgeCLI.add_arguments_to_parser``)."""
    parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
    parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
    parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
    parser.set_defaults({"checkpoint.monitor": "domain/val/ndcg@10", "checkpoint.mode": "max",
                         "checkpoint.save_last": True, "checkpoint.filename": "best-{epoch}-{step}"})
    parser.add_lightning_class_args(TopKWriter, "predictions")
    parser.add_lightning_class_args(ProgressLog, "progress")
    parser.add_argument("--verbosity", type=Verbosity, default="info",
                        help="Which of the project's log messages reach stderr: warning, info (progress, "
                             "the warm start, the export) or debug")
    parser.add_class_arguments(PredictionRequest, "predict_for", help="Whom predict recommends for")
    parser.add_argument("--test_after_fit", type=bool, default=False,
                        help="After fit, test the best checkpoint and print its metrics")
    parser.add_argument("--export_after_fit", type=bool, default=True,
                        help="After fit, write the run's portable artefacts into <run>/export "
                             "(lightning_bridge.serving.artefacts), each model from its best checkpoint")
    parser.add_argument("--allow_config_changes", type=bool, default=False,
                        help="Resume (fit --ckpt_path) with settings that differ from the checkpoint's, "
                             "each applied: optimizer settings (written over the restored optimizer state; "
                             "a learning rate under a scheduler is refused), what the model reads every "
                             "step (regularisation, dropout, the schedule, loss weights), and training-batch "
                             "settings of the data (not inside an epoch). Architecture, initialisation, "
                             "classes, the data and its split are refused (lightning_bridge.run.resume)")
