"""LoRA training tokens/s: our LMModule under a Lightning Trainer against a plain Hugging Face ``Trainer``.

Same backbone, same LoRA, same optimizer groups, same prompts (batch and length) and the same maths: the HF
side trains a twin LMModule through ``transformers.Trainer`` with ``compute_loss`` = ``LMModule.loss``. The
rounds alternate (ours, HF, ours, HF, ...) in one process; medians of per-step times, first steps dropped.

    python bench/lora_throughput.py --backbone tiny-decoder --steps 8 --rounds 2        # CPU smoke
    python bench/lora_throughput.py --backbone minilm --precision 32 --threads 2          # CPU, MiniLM
    python bench/lora_throughput.py --backbone PATH --random_weights --precision bf16-mixed   # GPU

``--random_weights``: ``PATH`` holds only a config and a tokenizer (e.g. SmolLM2's, copied without its
weights); the weights are drawn at random, which changes nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch import Callback
from transformers import AutoConfig, AutoModel, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from lightning_bridge.data.datasets import SyntheticTopicsDataModule
from lightning_bridge.models.lm import LMModule

UNTIMED_STEPS = 3  # each round's first steps (allocation, autotuning) are run but not timed


class StepStarts(Callback, TrainerCallback):
    """perf_counter at the start of every step (Lightning and HF hooks alike) and at the end of training."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args, **kwargs) -> None:  # Lightning
        self._tick()

    def on_step_begin(self, *args, **kwargs) -> None:  # transformers
        self._tick()

    def on_train_end(self, *args, **kwargs) -> None:  # both
        self._tick()

    def _tick(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def step_times(self, skip: int) -> list[float]:
        return [b - a for a, b in zip(self.times[skip:-1], self.times[skip + 1:], strict=True)]


def random_weights_folder(source: str, out: Path) -> str:
    """A loadable Hugging Face folder: ``source``'s config and tokenizer, weights drawn at random."""
    config = AutoConfig.from_pretrained(source)
    AutoModel.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return str(out)


def make_model(backbone: str, data: SyntheticTopicsDataModule, max_length: int) -> LMModule:
    torch.manual_seed(0)
    model = LMModule(data.num_users, data.num_items, backbone=backbone, finetune="lora", lora_dropout=0.0,
                     backbone_dropout=0.0, max_length=max_length, task_weights={"next_item": 1.0})
    model.recommender.attach(data)
    return model


class HFTwin(torch.nn.Module):
    """An LMModule seen by ``transformers.Trainer``: ``forward(**batch)`` returns ``{"loss": ...}``."""

    def __init__(self, model: LMModule) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.model.recommender.loss(batch)}


def lightning_round(model: LMModule, batches: list[dict], precision: str, skip: int) -> list[float]:
    timer = StepStarts()
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(max_steps=len(batches), accelerator="auto", devices=1, precision=precision,
                            callbacks=[timer], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                            default_root_dir=logs)
        trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return timer.step_times(skip)


def hf_round(model: LMModule, batches: list[dict], precision: str, skip: int) -> list[float]:
    timer = StepStarts()
    model.to("cuda" if torch.cuda.is_available() else "cpu")  # so LMModule.device follows (HF moves the twin)
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, max_steps=len(batches), per_device_train_batch_size=1, report_to="none",
                                 save_strategy="no", logging_strategy="no", disable_tqdm=True,
                                 dataloader_num_workers=0, remove_unused_columns=False,
                                 use_cpu=not torch.cuda.is_available(),
                                 bf16=precision.startswith("bf16"), lr_scheduler_type="constant",
                                 max_grad_norm=0.0)
        trainer = Trainer(model=HFTwin(model), args=args, train_dataset=batches, data_collator=lambda xs: xs[0],
                          optimizers=(optimizer, None), callbacks=[timer])
        trainer.train()
    return timer.step_times(skip)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny-decoder")
    parser.add_argument("--random_weights", action="store_true")
    parser.add_argument("--precision", default="32", help="Lightning precision; HF gets bf16=True for bf16-*")
    parser.add_argument("--steps", type=int, default=20,
                        help=f"steps per round (the first {UNTIMED_STEPS} are not timed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.steps <= UNTIMED_STEPS:
        parser.error(f"--steps {args.steps} leaves no step to time: the first {UNTIMED_STEPS} are not timed")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python bench/lora_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    tmp = Path(tempfile.mkdtemp())
    backbone = random_weights_folder(args.backbone, tmp / "backbone") if args.random_weights else args.backbone

    data = SyntheticTopicsDataModule(generated_users=600, generated_items=1200, history_len=20,
                                     lm_batch_size=args.batch_size, lm_examples_per_user=4)
    data.prepare_data()
    data.setup("fit")
    ours, twin = make_model(backbone, data, args.max_length), make_model(backbone, data, args.max_length)
    dataset = data._train_dataset("lm")
    batches = [dataset[(0, b)] for b in range(min(args.steps, len(dataset)))]
    tokens = statistics.mean(int(ours.recommender.prompts.build(b["users"], b["history"])["attention_mask"].sum())
                             for b in batches)
    lightning_s, hf_s = [], []
    for _ in range(args.rounds):
        lightning_s += lightning_round(ours, batches, args.precision, UNTIMED_STEPS)
        hf_s += hf_round(twin, batches, args.precision, UNTIMED_STEPS)
    shutil.rmtree(tmp, ignore_errors=True)
    ours_s, theirs_s = statistics.median(lightning_s), statistics.median(hf_s)
    result = {
        "backbone": args.backbone, "random_weights": args.random_weights, "precision": args.precision,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
        "batch_size": args.batch_size, "mean_prompt_tokens_per_batch": tokens,
        "lightning_bridge_tokens_per_s": tokens / ours_s, "hf_trainer_tokens_per_s": tokens / theirs_s,
        "ratio_ours_over_hf": theirs_s / ours_s, "steps_timed_each": len(hf_s),
        "trainable_parameters": sum(p.numel() for p in ours.parameters() if p.requires_grad),
        "command": command,
    }
    print(f"rerun: {command}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
