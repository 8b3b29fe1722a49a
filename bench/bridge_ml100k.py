"""The paper's claim, measured: domain-only, LM-only and BDLM co-training on MovieLens-100K over several seeds.

    python bench/bridge_ml100k.py                          # seeds 0 1 2, all three variants
    python bench/bridge_ml100k.py --seeds 0 1 2 3 --variants bdlm
    python bench/bridge_ml100k.py --seeds 1 --jsonl runs.jsonl --trainer.accelerator gpu   # overrides pass through
    python bench/bridge_ml100k.py --summarize runs.jsonl    # the summary of runs made in several processes
    python bench/bridge_ml100k.py --domain sasrec --variants domain_only bdlm   # another domain model

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
# the domain-only and BDLM configs of each domain model (--domain); LM-only is the same for all
DOMAIN_CONFIGS = {"lightgcn": {},
                  "ncf": {"domain_only": "configs/ml100k_ncf.yaml", "bdlm": "configs/ml100k_bdlm_ncf.yaml"},
                  "sasrec": {"domain_only": "configs/ml100k_sasrec.yaml", "bdlm": "configs/ml100k_bdlm_sasrec.yaml"}}
# which model's metrics each variant reports, under the key used in the JSON
REPORTS = {"domain_only": [("domain_only", "domain")], "lm_only": [("lm_only", "lm")],
           "bdlm": [("bdlm_domain", "domain"), ("bdlm_lm", "lm")]}
METRICS = ("ndcg@10", "hr@10", "recall@20", "sparse_ndcg@10", "sparse_hr@10")


def run(variant: str, seed: int, overrides: list[str], domain: str = "lightgcn"
        ) -> tuple[dict[str, dict[str, float]], float, float]:
    """Test metrics of each model the variant trains (each at its own best validation checkpoint), the best
    validation score of the run's main checkpoint, and the wall time."""
    start = time.perf_counter()
    config = {**CONFIGS, **DOMAIN_CONFIGS[domain]}[variant]
    cli = cli_main(["fit", "--config", config, "--seed_everything", str(seed), "--test_after_fit", "true",
                    "--trainer.logger.init_args.name", f"bench_bridge/{variant}_seed{seed}", *overrides])
    wall = time.perf_counter() - start
    metrics = cli.test_metrics  # each model's test metrics at its own best validation checkpoint
    reported = {key: {m: metrics[f"{model}/test/{m}"] for m in METRICS} for key, model in REPORTS[variant]}
    best = cli.trainer.checkpoint_callback.best_model_score
    return reported, float("nan") if best is None else float(best), wall


def summarize(records: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every reported metric, and the median wall time per variant."""
    summary: dict = {"seeds": sorted({r["seed"] for r in records})}
    for key in dict.fromkeys(k for r in records for k in r["metrics"]):
        runs = [r["metrics"][key] for r in records if key in r["metrics"]]
        summary[key] = {m: [statistics.mean(r[m] for r in runs),
                            statistics.stdev(r[m] for r in runs) if len(runs) > 1 else 0.0]
                        for m in METRICS}
        summary[key]["runs"] = len(runs)
    variants = dict.fromkeys(r["variant"] for r in records)
    summary["best_val"] = {v: [r["best_val"] for r in records if r["variant"] == v] for v in variants}
    summary["wall_s"] = sum(r["wall_s"] for r in records)  # total run time; less when runs went in parallel
    summary["wall_s_per_run"] = {v: statistics.median(r["wall_s"] for r in records if r["variant"] == v)
                                 for v in variants}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--jsonl", help="append one JSON line per finished run to this file")
    parser.add_argument("--domain", choices=list(DOMAIN_CONFIGS), default="lightgcn",
                        help="the domain model of the domain-only and BDLM variants")
    parser.add_argument("--tag", default="", help="prefix of the reported keys (an ablation beside the defaults)")
    parser.add_argument("--summarize", metavar="JSONL", help="print the summary of the runs in this file; run nothing")
    args, overrides = parser.parse_known_args()
    if args.summarize:
        with open(args.summarize) as lines:
            print(json.dumps(summarize([json.loads(line) for line in lines if line.strip()])))
        return
    records = []
    start = time.perf_counter()
    for seed in args.seeds:
        for variant in args.variants:
            reported, best_val, wall = run(variant, seed, overrides, args.domain)
            reported = {f"{args.tag}{key}": values for key, values in reported.items()}
            records.append({"seed": seed, "variant": args.tag + variant, "wall_s": wall, "metrics": reported,
                            "best_val": best_val, "overrides": overrides})
            if args.jsonl:
                with open(args.jsonl, "a") as out:
                    out.write(json.dumps(records[-1]) + "\n")
            for key, values in reported.items():
                print(f"[bench] seed={seed} {key}: " + ", ".join(f"{m}={v:.4f}" for m, v in values.items())
                      + f" ({wall:.0f} s)", flush=True)
    summary = summarize(records)
    summary["wall_s"] = time.perf_counter() - start
    print("rerun: python bench/bridge_ml100k.py --domain " + args.domain + " --seeds " + " ".join(map(str, args.seeds))
          + " --variants " + " ".join(args.variants) + (f" --tag {args.tag}" if args.tag else "")
          + "".join(f" {o}" for o in overrides))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
