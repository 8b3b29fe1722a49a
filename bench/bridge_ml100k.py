"""The paper's claim, measured: domain-only, LM-only and BDLM co-training over several seeds, on full
MovieLens-100K and in the sparse settings where the claim says co-training should help most.

    python bench/bridge_ml100k.py                          # full ML-100K, seeds 0 1 2, all three variants
    python bench/bridge_ml100k.py --settings full sparse cold synthetic --jsonl runs.jsonl
    python bench/bridge_ml100k.py --seeds 0 1 2 3 --variants bdlm
    python bench/bridge_ml100k.py --seeds 1 --jsonl runs.jsonl --trainer.accelerator gpu   # overrides pass through
    python bench/bridge_ml100k.py --summarize runs.jsonl    # the summary of runs made in several processes
    python bench/bridge_ml100k.py --seeds 0 --threads 1 & python bench/bridge_ml100k.py --seeds 1 --threads 1  # 2 cores
    python bench/bridge_ml100k.py --domain sasrec --variants domain_only bdlm   # another domain model

Settings (each changes only the data section of every variant's config):
    full       MovieLens-100K as it is
    sparse     MovieLens-100K with each user's last 5 training interactions only (data.max_train_per_user=5)
    cold       MovieLens-100K with 20% of the items never seen in training (data.new_item_fraction=0.2)
    synthetic  SyntheticTopicsDataModule: titles of real words carry the taste, most items have <= 3
               interactions
    synthetic_flat  the same with popularity_exponent 0.5: more targets are rare items

Variants: ``domain_only`` (configs/ml100k_lightgcn.yaml), ``lm_only`` (configs/ml100k_lm.yaml at BDLM's LM
compute), ``bdlm`` (configs/ml100k.yaml, the main job) and ``bdlm_text`` (the main job with
configs/variants/text_teacher.yaml: the knowledge path alone, a frozen LM teaching the shared table from text).

Each run is the real command line (``python main.py fit --config <config> --seed_everything <seed>
--test_after_fit true``), so the figures are those a user gets. Progress lines are printed as runs finish;
the last line is one JSON object: for each setting, variant and metric ``[mean, std]`` over seeds (test split,
each model at its own best validation checkpoint), plus wall times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lightning_bridge.cli import main as cli_main
from lightning_bridge.run.after_fit import monitored_side

CONFIGS = {"domain_only": ["configs/ml100k_lightgcn.yaml"], "lm_only": ["configs/ml100k_lm.yaml"],
           "bdlm": ["configs/ml100k.yaml"],
           # the knowledge path alone: a frozen LM that only teaches the shared table from item text
           "bdlm_text": ["configs/ml100k.yaml", "configs/variants/text_teacher.yaml"]}
SETTINGS = {
    "full": [],
    "sparse": ["--data.init_args.max_train_per_user", "5"],
    "cold": ["--data.init_args.new_item_fraction", "0.2"],
    "synthetic": ["--data.class_path", "lightning_bridge.data.datasets.SyntheticTopicsDataModule"],
    # flatter popularity: more test targets are rare items, whose words only their titles tell
    "synthetic_flat": ["--data.class_path", "lightning_bridge.data.datasets.SyntheticTopicsDataModule",
                       "--data.init_args.popularity_exponent", "0.5"],
}
# LM-only at BDLM's LM compute: configs/ml100k.yaml makes 197 LM steps of 32 examples (2:1 for 10 epochs of 59
# steps); 1 example per user for 7 epochs is about as many (210 steps on ML-100K). The LM-side figures in
# bench/results/lm_vs_lm_only_118_steps.jsonl were measured at 118 steps (2 examples per user for 2 epochs),
# against the main config's earlier 4:1 schedule.
# the domain-only and BDLM configs of each domain model (--domain); LM-only is the same for all
DOMAIN_CONFIGS = {"lightgcn": {},
                  "ncf": {"domain_only": "configs/ml100k_ncf.yaml", "bdlm": "configs/ml100k_bdlm_ncf.yaml"},
                  "sasrec": {"domain_only": "configs/ml100k_sasrec.yaml", "bdlm": "configs/ml100k_bdlm_sasrec.yaml"}}
VARIANT_OVERRIDES = {"lm_only": ["--data.init_args.lm_examples_per_user", "1", "--trainer.max_epochs", "7"]}
# which model's metrics each variant reports, under the key used in the JSON
REPORTS = {"domain_only": [("domain_only", "domain")], "lm_only": [("lm_only", "lm")],
           "bdlm": [("bdlm_domain", "domain"), ("bdlm_lm", "lm")], "bdlm_text": [("bdlm_text_domain", "domain")]}
METRICS = ("ndcg@10", "hr@10", "recall@20", "sparse_ndcg@10", "sparse_hr@10", "rare_ndcg@10", "rare_hr@10",
           "new_item_ndcg@10", "new_item_hr@10", "new_item_catalogue_ndcg@10", "new_item_catalogue_hr@10")


def run(variant: str, setting: str, seed: int, overrides: list[str], warm_start: str | None = None,
        domain: str = "lightgcn") -> tuple[dict, float, float, dict]:
    """Test metrics of each model the variant trains (each at its own best validation checkpoint; the metrics
    the setting has), the best validation score of the run's main checkpoint, the wall time, and the names of
    the best (and the warm-start) checkpoints."""
    start = time.perf_counter()
    paths = list(CONFIGS[variant])
    # bdlm_text layers its variant over the domain model's BDLM config, as bdlm is that config
    paths[0] = DOMAIN_CONFIGS[domain].get("bdlm" if variant.startswith("bdlm") else variant, paths[0])
    configs = [arg for path in paths for arg in ("--config", path)]
    if warm_start:  # co-training starts from the domain-only run's best checkpoint instead of its own warm-up
        overrides = ["--model.init_args.warm_start.auto", "false", "--model.init_args.warm_start.checkpoint",
                     warm_start, *overrides]
    cli = cli_main(["fit", *configs, *SETTINGS[setting], *VARIANT_OVERRIDES.get(variant, []),
                    "--seed_everything", str(seed),
                    "--test_after_fit", "true",
                    "--trainer.logger.init_args.name", f"bench_bridge/{setting}/{variant}_seed{seed}", *overrides])
    wall = time.perf_counter() - start
    metrics = cli.test_metrics
    reported = {key: {m: metrics[f"{model}/test/{m}"] for m in METRICS if f"{model}/test/{m}" in metrics}
                for key, model in REPORTS[variant]}
    side = monitored_side(cli.trainer.checkpoint_callback)  # the model whose best the run reports
    best = cli.best_scores.get(side)
    checkpoints = {"best": cli.best_checkpoints.get(side, "")}
    if cli.warm_start_checkpoint:  # where the automatic warm start stopped, in the domain model's own epochs
        checkpoints["warm_start"] = cli.warm_start_checkpoint
    elif warm_start:
        checkpoints["warm_start"] = warm_start
    return reported, float("nan") if best is None else float(best), wall, checkpoints


def test_warm_start(setting: str, seed: int, checkpoint: str, overrides: list[str], domain: str) -> dict:
    """Test metrics of a co-training run's warm start (a DomainModule checkpoint) under the domain-only config:
    the checkpoint's own architecture wins (``main.py test``), so the figure is the model co-training began from."""
    config = DOMAIN_CONFIGS[domain].get("domain_only", CONFIGS["domain_only"][0])
    cli = cli_main(["test", "--config", config, *SETTINGS[setting], "--seed_everything", str(seed),
                    "--ckpt_path", checkpoint, *options_under(overrides, ("--trainer.", "--data.")),
                    "--trainer.logger", "false"])
    metrics = cli.trainer.callback_metrics
    return {m: float(metrics[f"domain/test/{m}"]) for m in METRICS if f"domain/test/{m}" in metrics}


def options_under(overrides: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The ``--name value`` / ``--name=value`` overrides whose name starts with one of ``prefixes``."""
    kept, keep = [], False
    for arg in overrides:
        if arg.startswith("--"):
            keep = arg.startswith(prefixes)
        if keep:
            kept.append(arg)
    return kept


def domain_options(variant: str, options: list[list[str]]) -> list[str]:
    """``--domain_option NAME VALUE`` pairs as this variant's CLI overrides (none for LM-only)."""
    prefix = {"domain_only": "--model.init_args."}.get(variant, "--model.init_args.domain.init_args.")
    return [] if variant == "lm_only" else [arg for name, value in options for arg in (prefix + name, value)]


def bridge_options(variant: str, options: list[list[str]]) -> list[str]:
    """``--bridge_option NAME VALUE`` pairs as CLI overrides of the co-training variants (none for the rest)."""
    return [arg for name, value in options for arg in ("--model.init_args." + name, value)] \
        if variant.startswith("bdlm") else []


def summarize(records: list[dict]) -> dict:
    """Per setting: mean and standard deviation over seeds of every reported metric, and the median wall
    time per variant (records without a setting are the full dataset's)."""
    summary: dict = {"seeds": sorted({r["seed"] for r in records})}
    for setting in dict.fromkeys(r.get("setting", "full") for r in records):
        mine = [r for r in records if r.get("setting", "full") == setting]
        out: dict = {}
        for key in dict.fromkeys(k for r in mine for k in r["metrics"]):
            runs = [r["metrics"][key] for r in mine if key in r["metrics"]]
            out[key] = {m: [statistics.mean(r[m] for r in runs),
                            statistics.stdev(r[m] for r in runs) if len(runs) > 1 else 0.0]
                        for m in METRICS if all(m in r for r in runs)}
            out[key]["runs"] = len(runs)
        variants = dict.fromkeys(r["variant"] for r in mine)
        out["best_val"] = {v: [r["best_val"] for r in mine if r["variant"] == v] for v in variants}
        out["wall_s_per_run"] = {v: statistics.median(r["wall_s"] for r in mine if r["variant"] == v)
                                 for v in variants}
        summary[setting] = out
    summary["wall_s"] = sum(r["wall_s"] for r in records)  # total run time; less when runs went in parallel
    return summary


TABLE_METRICS = ("ndcg@10", "hr@10", "sparse_ndcg@10", "rare_ndcg@10", "new_item_ndcg@10", "new_item_hr@10",
                 "new_item_catalogue_hr@10")


def markdown_table(summary: dict) -> str:
    """One row per setting and reported model: mean ± std over seeds of the headline metrics."""
    lines = ["| setting | model | runs | " + " | ".join(TABLE_METRICS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in TABLE_METRICS) + " |"]
    for setting, out in summary.items():
        if not isinstance(out, dict) or "wall_s_per_run" not in out:
            continue
        for key, values in out.items():
            if isinstance(values, dict) and "runs" in values:
                cells = [f"{values[m][0]:.4f} ± {values[m][1]:.4f}" if m in values else "–" for m in TABLE_METRICS]
                lines.append(f"| {setting} | {key} | {values['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["full"])
    parser.add_argument("--jsonl", help="append one JSON line per finished run to this file")
    parser.add_argument("--domain", choices=list(DOMAIN_CONFIGS), default="lightgcn",
                        help="the domain model of the domain-only and BDLM variants")
    parser.add_argument("--tag", default="", help="prefix of the reported keys (an ablation beside the defaults)")
    parser.add_argument("--domain_option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a DomainModule option for every variant with a domain model, wherever its config "
                             "puts it (model.init_args.NAME alone, model.init_args.domain.init_args.NAME in "
                             "co-training), e.g. --domain_option isolated_nodes ego")
    parser.add_argument("--bridge_option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a BridgeModule option (model.init_args.NAME) for the co-training variants only, "
                             "e.g. --bridge_option knowledge.text_anchor_weight 3.0")
    parser.add_argument("--summarize", metavar="JSONL", help="print the summary of the runs in this file; run nothing")
    parser.add_argument("--reuse_domain_only", action="store_true",
                        help="co-training variants start from the same seed's domain-only best checkpoint (run "
                             "domain_only first) instead of their own automatic warm start, which is the same "
                             "computation: half the CPU time")
    parser.add_argument("--test_warm_start", action="store_true",
                        help="also test each co-training run's warm start (the domain model it began from) and "
                             "report it as <tag>warm_start_domain: the paired baseline of that run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's, one per core). Give each of several runs "
                             "sharing a machine cores / runs: oversubscribed threads slowed LightGCN's epochs "
                             "18x on 2 cores")
    args, overrides = parser.parse_known_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.summarize:
        with open(args.summarize) as lines:
            summary = summarize([json.loads(line) for line in lines if line.strip()])
        print(markdown_table(summary))
        print(json.dumps(summary))
        return
    records, domain_best = [], {}
    for setting in args.settings:
        for seed in args.seeds:
            for variant in args.variants:
                warm_start = domain_best.get((setting, seed)) if variant.startswith("bdlm") else None
                own = (overrides + domain_options(variant, args.domain_option)
                       + bridge_options(variant, args.bridge_option))
                reported, best_val, wall, checkpoints = run(variant, setting, seed, own, warm_start, args.domain)
                if variant == "domain_only" and args.reuse_domain_only:
                    domain_best[(setting, seed)] = checkpoints["best"]
                if args.test_warm_start and "warm_start" in checkpoints:
                    reported["warm_start_domain"] = test_warm_start(setting, seed, checkpoints["warm_start"],
                                                                    overrides, args.domain)
                reported = {f"{args.tag}{key}": values for key, values in reported.items()}
                records.append({"setting": setting, "domain": args.domain, "seed": seed,
                                "variant": args.tag + variant, "wall_s": wall,
                                "metrics": reported, "best_val": best_val, "checkpoints": checkpoints,
                                "overrides": own})
                if args.jsonl:
                    with open(args.jsonl, "a") as out:
                        out.write(json.dumps(records[-1]) + "\n")
                for key, values in reported.items():
                    print(f"[bench] {setting} seed={seed} {key}: "
                          + ", ".join(f"{m}={v:.4f}" for m, v in values.items()) + f" ({wall:.0f} s)", flush=True)
    print("rerun: python bench/bridge_ml100k.py --domain " + args.domain + " --settings " + " ".join(args.settings)
          + " --seeds "
          + " ".join(map(str, args.seeds)) + " --variants " + " ".join(args.variants)
          + (f" --tag {args.tag}" if args.tag else "") + (" --reuse_domain_only" if args.reuse_domain_only else "")
          + (" --test_warm_start" if args.test_warm_start else "")
          + (f" --threads {args.threads}" if args.threads else "")
          + "".join(f" --domain_option {name} {value}" for name, value in args.domain_option)
          + "".join(f" --bridge_option {name} {value}" for name, value in args.bridge_option)
          + "".join(f" {o}" for o in overrides))
    print(json.dumps(summarize(records)))


if __name__ == "__main__":
    main()
