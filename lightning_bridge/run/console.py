"""What a run prints while it works: the project's log messages on stderr, one progress line per validation
(and a heartbeat between them), and none of the third-party notices that say nothing about this run.

Everything goes through Python logging on stderr, so a program that drives ``lightning_bridge.cli.main``
in-process keeps its stdout for its own output.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping

log = logging.getLogger(__name__)
PACKAGE = "lightning_bridge"
Verbosity = Literal["warning", "info", "debug"]

# Third-party notices that every run printed and that are safe to hide; each says why.
NOISE_WARNINGS = (
    # transformers deprecates the name that peft's LoRA wrapper still reads; nothing here calls it, and the
    # behaviour behind both names is the same.
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    # Lightning's own pytree utility calls a torch API torch has renamed; the result is unchanged.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
    # TrainingCurves (training_log.py) writes every loss at least once per epoch whatever its length, so a
    # short epoch loses no training curve.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", Warning),
    # test_after_fit tests the primary checkpoint with ckpt_path="best" on purpose and each other model at
    # its own best path (cli.BridgeCLI._test_after_fit).
    (r"`\.test\(ckpt_path=\"best\"\)` is called with Trainer configured with multiple `ModelCheckpoint`", Warning),
    # A run resumed from a mid-epoch checkpoint goes on with the batches it had not trained on yet: the
    # sampler skips those done (data.batches.batches_done_this_epoch), so the resume is exact, not unreliable.
    (r"You're resuming from a checkpoint that ended before the epoch ended", Warning),
)
EVALUATION_NOISE = (
    # Only where nothing trains: the fit's callbacks (checkpoint bookkeeping, early stopping) hold training
    # state, which an evaluation neither needs nor changes.
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    # The predictions writer (callbacks.TopKWriter) reads the users from each batch, not batch indices.
    r"Couldn't infer the batch indices fetched from your dataloader",
    # A checkpoint's own folder, which its checkpoint callbacks recorded, is no concern of an evaluation.
    r"The dirpath has changed from",
)
# An advertisement for a hosted logging service, printed by every Trainer built without it.
NOISE_MESSAGES = re.compile(r"^💡 Tip: For seamless cloud logging")
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE_MESSAGES.search(record.getMessage())


class _ProjectHandler(logging.StreamHandler):
    """The one handler the CLI adds to the ``lightning_bridge`` logger (found again on a second call)."""


def configure_console(verbosity: Verbosity = "info") -> None:
    """Shows the project's log messages at ``verbosity`` and above on stderr and filters the known noise.
    Safe to call again (each CLI run does): nothing is added twice. Where the program has configured the
    root logger itself, the project's records go to its handlers instead of a second one."""
    logger = logging.getLogger(PACKAGE)
    logger.setLevel(verbosity.upper())
    has_own = any(isinstance(h, _ProjectHandler) for h in logger.handlers)
    if not has_own and not logging.getLogger().hasHandlers():
        handler = _ProjectHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    lightning_info = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, _DropNoise) for f in lightning_info.filters):
        lightning_info.addFilter(_DropNoise())
    for message, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if verbosity != "debug":
        quiet_weight_loading()


def quiet_weight_loading() -> None:
    """No "Loading weights" progress bar from transformers each time an LM is built (a run builds several:
    the model, each tested checkpoint, the export), which would fill a log with carriage returns. Set before
    transformers is imported, its hub's switch does it; afterwards transformers' own, without importing it
    here (a domain-only run never needs it)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def ignore_evaluation_noise() -> None:
    """For ``test``, ``validate`` and ``predict`` (inside a ``warnings.catch_warnings`` block)."""
    for message in EVALUATION_NOISE:
        warnings.filterwarnings("ignore", message=message)


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLog(Callback):
    """One log line per validation, with each model's validation NDCG@10 (and its best so far), the time
    since training began and an estimate of the time left; between validations, and within a long one (an LM
    ranking the catalogue), a heartbeat line at least every ``heartbeat_seconds``. Meant for logs, where a
    progress bar would write thousands of lines.

    The estimate extrapolates the time per optimizer step so far to ``trainer.estimated_stepping_batches``;
    with early stopping it is an upper bound ("at most").

    Args:
        heartbeat_seconds: longest silence during training and its validations (0: validation lines only).
        name: what the lines call this training (``fit``, ``warm start``).
    """

    MONITORED = "val/ndcg@10"

    def __init__(self, heartbeat_seconds: float = 30.0, name: str = "fit") -> None:
        if heartbeat_seconds < 0:
            raise ValueError(f"progress.heartbeat_seconds must be >= 0, got {heartbeat_seconds}")
        self.heartbeat_seconds = heartbeat_seconds
        self.name = name
        self._start = self._last_line = 0.0
        self._first_step = 0
        self._best: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_line = time.monotonic()
        self._first_step = trainer.global_step  # a resumed run estimates from its own steps
        self._best = {}
        if trainer.is_global_zero:  # one line per run, not one per process
            log.info("%s: starting at %s", self.name, self._position(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._heartbeat_due():
            self._line(trainer, "training")

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self._heartbeat_due():
            return
        # counted over all validation loaders (co-training validates each model on its own)
        done = sum(trainer.num_val_batches[:dataloader_idx]) + batch_idx + 1
        total = sum(trainer.num_val_batches)
        of_total = f"/{int(total)}" if total != float("inf") else ""
        self._line(trainer, f"validating, batch {int(done)}{of_total}")

    def _heartbeat_due(self) -> bool:
        return bool(self.heartbeat_seconds) and time.monotonic() - self._last_line >= self.heartbeat_seconds

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        scores = []
        for key, value in sorted(trainer.callback_metrics.items()):
            if not key.endswith(self.MONITORED):
                continue
            model, score = key.split("/")[0], float(value)
            best = self._best_before(trainer, key, model)
            self._best[model] = score if best is None else max(best, score)
            mark = " (best)" if best is None or score > best else f" (best {best:.4f})"
            scores.append(f"{model} val ndcg@10 {score:.4f}{mark}")
        self._line(trainer, ", ".join(scores) or "validated")

    def _best_before(self, trainer: L.Trainer, key: str, model: str) -> float | None:
        """The best score before this validation. The checkpoint callback that keeps this model's best knows
        more than this log: the warm start's candidate and, in a resumed run, the validations before the
        resume. Checkpoint callbacks run after every other callback, so its best does not count this one yet."""
        kept = [float(c.best_model_score) for c in trainer.checkpoint_callbacks
                if c.monitor == key and c.best_model_score is not None]
        known = kept + ([self._best[model]] if model in self._best else [])
        return max(known) if known else None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("%s: done: %d steps in %s", self.name, trainer.global_step - self._first_step,
                     duration(time.monotonic() - self._start))

    def _line(self, trainer: L.Trainer, what: str) -> None:
        self._last_line = time.monotonic()
        if trainer.is_global_zero:
            log.info("%s: %s: %s | %s", self.name, self._position(trainer), what, self._timing(trainer))

    @staticmethod
    def _position(trainer: L.Trainer) -> str:
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        total = trainer.estimated_stepping_batches
        steps = f"/{int(total)}" if total != float("inf") else ""
        return f"epoch {trainer.current_epoch + 1}{epochs}, step {trainer.global_step}{steps}"

    def _timing(self, trainer: L.Trainer) -> str:
        elapsed = time.monotonic() - self._start
        done, total = trainer.global_step - self._first_step, trainer.estimated_stepping_batches
        text = f"{duration(elapsed)} elapsed"
        if done > 0 and total != float("inf"):
            left = elapsed / done * max(total - trainer.global_step, 0)
            early = any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
            text += f", {'at most ' if early else ''}~{duration(left)} left"
        return text


SUMMARY_COLUMNS = ("ndcg@10", "hr@10", "recall@20", "mrr@10", "sparse_ndcg@10", "sparse_hr@10", "rare_ndcg@10",
                   "new_item_ndcg@10", "new_item_catalogue_hr@10")


def summary_table(metrics: dict, tested_at: dict[str, str], stage: str = "test") -> str:
    """The headline ``stage`` metrics (``test`` or ``val``), one row per model that was evaluated, with the
    checkpoint it was evaluated at (``tested_at``: model name -> checkpoint path; a model without its own is
    evaluated at the first one). Group columns the data does not have (e.g. new items without the cold-start
    protocol) are left out."""
    fallback = next(iter(tested_at.values()), "")
    evaluated = [key.split("/")[0] for key in metrics if key.endswith(f"/{stage}/ndcg@10")]
    models = sorted(set(evaluated), key=lambda m: (("domain", "lm").index(m) if m in ("domain", "lm") else 2, m))
    columns = [c for c in SUMMARY_COLUMNS if all(f"{m}/{stage}/{c}" in metrics for m in models)]
    widths = [max(16, len(c) + 2) for c in columns]
    rows = [f"{'model':<8}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)) + "  checkpoint"]
    for model in models:
        rows.append(f"{model:<8}" + "".join(f"{float(metrics[f'{model}/{stage}/{c}']):>{w}.4f}"
                                             for c, w in zip(columns, widths, strict=True))
                    + f"  {Path(tested_at.get(model, fallback)).name}")
    return "\n".join(rows)
