"""Where an LM training step's time goes: prompt assembly, forward, backward, optimizer, and the top operators.

    python bench/lm_step_profile.py                    # configs/ml100k_lm.yaml's model and batches, 1 thread
    python bench/lm_step_profile.py --compile          # also the same steps with torch.compile(backbone)
    python bench/lm_step_profile.py --steps 12 --threads 2

Each phase is timed in CPU seconds of this process (``time.process_time``, which a crowded machine does not
inflate), median over the steps, on the real LM batches of the config (the first ``--steps`` batches of epoch
0). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F

from lightning_bridge.cli import BridgeCLI
from lightning_bridge.data.datamodule import RecDataModule

CONFIG = "configs/ml100k_lm.yaml"


def build(config: str):
    """The config's LMModule and data module, attached, without a Trainer."""
    cli = BridgeCLI(L.LightningModule, RecDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    args=["--config", config, "--trainer.logger", "false"], run=False)
    model, data = cli.model, cli.datamodule
    model.recommender.attach(data)
    return model, data


def timed_step(model, optimizer, batch: dict, phases: dict[str, list[float]]) -> None:
    recommender = model.recommender
    clock = time.process_time
    t0 = clock()
    prompts = recommender.encode(batch)
    t1 = clock()
    scores = recommender.network.scores(**prompts, info=recommender.info).float()
    loss = F.cross_entropy(scores, batch["targets"][:, 0].to(scores.device))
    t2 = clock()
    loss.backward()
    t3 = clock()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t4 = clock()
    for name, value in (("prompts", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
        phases.setdefault(name, []).append(value)
    phases.setdefault("tokens", []).append(float(prompts["attention_mask"].sum()))
    phases.setdefault("padded", []).append(float(prompts["attention_mask"].numel()))


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(backbone), side by side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data = build(args.config)
    model.train()
    dataset = data._train_dataset("lm")
    batches = [dataset[(0, b)] for b in range(min(args.steps + 1, len(dataset)))]
    optimizer = torch.optim.AdamW(model.param_groups(), lr=1e-3)
    timed_step(model, optimizer, batches[0], {})  # warm-up
    phases: dict[str, list[float]] = {}
    for batch in batches[1:]:
        timed_step(model, optimizer, batch, phases)
    step = [sum(v) for v in zip(*(phases[p] for p in ("prompts", "forward", "backward", "optimizer")), strict=True)]
    result = {p: statistics.median(phases[p]) for p in ("prompts", "forward", "backward", "optimizer")}
    result.update(step_cpu_s=statistics.median(step), tokens_per_cpu_s=sum(phases["tokens"]) / sum(step),
                  real_token_share=sum(phases["tokens"]) / sum(phases["padded"]), threads=args.threads,
                  steps=len(step))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        timed_step(model, optimizer, batches[1], {})
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    if args.compile:
        network = model.recommender.network
        eager = network.backbone
        start = time.perf_counter()
        network.backbone = torch.compile(eager)
        timed_step(model, optimizer, batches[0], {})
        result["compile_first_step_s"] = time.perf_counter() - start
        compiled: dict[str, list[float]] = {}
        for batch in batches[1:]:
            timed_step(model, optimizer, batch, compiled)
        compiled_step = [sum(v) for v in zip(*(compiled[p] for p in ("forward", "backward")), strict=True)]
        eager_step = [sum(v) for v in zip(*(phases[p] for p in ("forward", "backward")), strict=True)]
        result["compiled_vs_eager_forward_backward"] = statistics.median(eager_step) / statistics.median(compiled_step)
        network.backbone = eager
    for name in ("prompts", "forward", "backward", "optimizer"):
        print(f"{name:10s} {result[name]:.3f} CPU s  ({result[name] / result['step_cpu_s']:.0%} of a step)")
    print(f"rerun: python bench/lm_step_profile.py --config {args.config} --steps {args.steps} "
          f"--threads {args.threads}" + (" --compile" if args.compile else ""))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
