"""Runs the CLI (possibly as one of several DDP processes) and writes rank 0's metrics to a JSON file.

    python tests/ddp_run.py OUT.json fit --config ... --trainer.devices 2
"""

import json
import sys

from lightning_bridge.cli import main

if __name__ == "__main__":
    out, args = sys.argv[1], sys.argv[2:]
    cli = main(args)
    if cli.trainer.global_rank == 0:
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        metrics["world_size"] = cli.trainer.world_size
        with open(out, "w") as f:
            json.dump(metrics, f)
