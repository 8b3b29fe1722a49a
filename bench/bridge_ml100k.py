"""The paper's claim, measured: domain-only, LM-only and BDLM co-training on MovieLens-100K over several seeds.

    python bench/bridge_ml100k.py                          # seeds 0 1 2, all three variants
    python bench/bridge_ml100k.py --seeds 0 1 2 3 --variants bdlm

Each run is the real command line (``python main.py fit --config <config> --seed_everything <seed>
--test_after_fit true``), so the figures are those a user gets. Progress lines are printed as runs finish;
the last line is one JSON object: for each variant and metric ``[mean, std]`` over seeds (test split, best
checkpoint on validation), plus wall times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from lightning_bridge.cli import main as cli_main

CONFIGS = {"domain_only": "configs/ml100k_lightgcn.yaml", "lm_only": "configs/ml100k_lm.yaml",
           "bdlm": "configs/ml100k.yaml"}
# which model's metrics each variant reports, under the key used in the JSON
REPORTS = {"domain_only": [("domain_only", "domain")], "lm_only": [("lm_only", "lm")],
           "bdlm": [("bdlm_domain", "domain"), ("bdlm_lm", "lm")]}
METRICS = ("ndcg@10", "hr@10", "recall@20", "sparse_ndcg@10", "sparse_hr@10")


def run(variant: str, seed: int) -> tuple[dict[str, dict[str, float]], float]:
    start = time.perf_counter()
    cli = cli_main(["fit", "--config", CONFIGS[variant], "--seed_everything", str(seed), "--test_after_fit", "true",
                    "--trainer.logger.init_args.name", f"bench_bridge/{variant}_seed{seed}"])
    wall = time.perf_counter() - start
    metrics = cli.trainer.callback_metrics
    return {key: {m: float(metrics[f"{model}/test/{m}"]) for m in METRICS} for key, model in REPORTS[variant]}, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    walls: dict[str, list[float]] = {}
    start = time.perf_counter()
    for seed in args.seeds:
        for variant in args.variants:
            reported, wall = run(variant, seed)
            walls.setdefault(variant, []).append(wall)
            for key, values in reported.items():
                results.setdefault(key, []).append(values)
                print(f"[bench] seed={seed} {key}: " + ", ".join(f"{m}={v:.4f}" for m, v in values.items())
                      + f" ({wall:.0f} s)", flush=True)
    summary: dict = {"seeds": args.seeds}
    for key, runs in results.items():
        summary[key] = {m: [statistics.mean(r[m] for r in runs),
                            statistics.stdev(r[m] for r in runs) if len(runs) > 1 else 0.0] for m in METRICS}
    summary["wall_s_per_run"] = {v: statistics.median(w) for v, w in walls.items()}
    summary["wall_s"] = time.perf_counter() - start
    print("rerun: python bench/bridge_ml100k.py --seeds " + " ".join(map(str, args.seeds))
          + " --variants " + " ".join(args.variants))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
