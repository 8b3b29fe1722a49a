"""SASRec's full-ranking evaluation, this tree's modules/sasrec.py against another commit's, in one process.

    python bench/sasrec_eval_ab.py CHECKPOINT --old_rev <commit> --rounds 7     # --old_rev HEAD: an A/A check

Loads CHECKPOINT with configs/ml100k_sasrec.yaml, then alternates the two implementations round by round (so a
shared machine's load falls on both alike) and prints, per implementation, the median CPU seconds
(``time.process_time``, one thread) of the ranking loop (bench/domain_ml100k.py's ``ranking_loop``) and of a
``trainer.test`` without a logger, with the test NDCG@10 and HR@10 each gave: a change to the evaluation path
must leave them identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from domain_ml100k import ranking_loop

import lightning_bridge.modules.domain.sasrec as current
from lightning_bridge.cli import main as cli_main


def load_old(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:lightning_bridge/modules/domain/sasrec.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "sasrec_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sasrec_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--old_rev", required=True)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--config", default="configs/ml100k_sasrec.yaml")
    opts, overrides = p.parse_known_args()
    torch.set_num_threads(1)
    old = load_old(opts.old_rev)
    cli = cli_main(["test", "--config", opts.config, "--ckpt_path", opts.checkpoint, "--trainer.logger", "false",
                    *overrides])
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    batches = list(data.test_dataloader())
    impls = {name: (m.SASRec.states, m.SASRec.scores, m._Block.forward)
             for name, m in (("new", current), ("old", old))}
    results = {name: {"loop": [], "test": []} for name in impls}
    for _ in range(opts.rounds):
        for name, (states, scores, forward) in impls.items():
            current.SASRec.states, current.SASRec.scores, current._Block.forward = states, scores, forward
            start = time.process_time()
            loop = ranking_loop(model, batches)
            results[name]["loop"].append(time.process_time() - start)
            start = time.process_time()
            test = trainer.test(model, datamodule=data, verbose=False)[0]
            results[name]["test"].append(time.process_time() - start)
            results[name]["metrics"] = {"loop_ndcg@10": float(loop["domain/test/ndcg@10"]),
                                        "ndcg@10": test["domain/test/ndcg@10"], "hr@10": test["domain/test/hr@10"]}
    for name, r in results.items():
        print(json.dumps({"impl": name, "loop_cpu_s": statistics.median(r["loop"]),
                          "test_cpu_s": statistics.median(r["test"]), **r["metrics"]}))


if __name__ == "__main__":
    main()
