"""The claim benchmark: does co-training with the LM make the recommender better, where, and by how much?

One command runs every (setting, arm, seed) of the pre-registered plan that has no result yet, resumes where
it stopped, and renders the results page from the result files alone:

    python bench/claim.py --plan bench/claim_plan.yaml --jobs 2      # run what is missing, then render
    python bench/claim.py --plan bench/claim_plan.yaml --render      # render bench/RESULTS.md only
    python bench/claim.py --plan bench/claim_plan.yaml --pending     # list what is still to run, with its cost

Each run is the real command line (``main.py fit --config ... --seed_everything S --test_after_fit true``) in
its own process with one thread (``--threads``), so runs can go side by side. When it ends, its result is one
JSON line in the plan's ``results`` file (each reported model's test metrics at its own best validation
checkpoint, its best validation score, steps, CPU time) and its per-user test figures (NDCG@10 and HR@10 per
user, with the sparse / rare / new groups) in ``per_user/<setting>/<arm>/seed<S>.csv.gz`` beside it. A run
killed half-way leaves nothing and is run again. What the arms are, which comparisons decide the claim and
by which rule is the plan's business (``bench/claim_plan.yaml``); ``claim_report.py`` renders the page.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PER_USER_COLUMNS = ("user", "train_interactions", "target_popularity", "sparse", "rare", "new_item", "ndcg@10",
                    "hr@10", "new_item_ndcg@10", "new_item_hr@10")


def load_plan(path: str) -> dict[str, Any]:
    """The plan, with every arm of the queue checked against the arms and settings it defines."""
    with open(path) as f:
        plan = yaml.safe_load(f)
    for block in plan["queue"]:
        for name, known in (("settings", plan["settings"]), ("arms", plan["arms"])):
            unknown = set(block[name]) - set(known)
            if unknown:
                raise ValueError(f"{path}: queue block {block} names unknown {name} {sorted(unknown)}")
    return plan


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every finished run's record (a missing file: none yet)."""
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def pending_runs(plan: dict[str, Any], done: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(setting, arm, seed) of the queue without a result, in the queue's order (its priority)."""
    finished = {(r["setting"], r["arm"], r["seed"]) for r in done}
    order = []
    for block in plan["queue"]:
        for seed in block["seeds"]:
            for setting in block["settings"]:
                for arm in block["arms"]:
                    key = (setting, arm, seed)
                    if key not in finished and key not in order:
                        order.append(key)
    return order


def command_line(plan: dict[str, Any], setting: str, arm: str, seed: int, run_dir: Path) -> list[str]:
    """The ``main.py fit`` arguments of one run."""
    spec, place = plan["arms"][arm], plan["settings"][setting]
    configs = list(spec["configs"]) + (list(place.get("channel_configs", [])) if spec.get("text_channel") else [])
    args = [arg for config in configs for arg in ("--config", config)]
    return ["fit", *args, *map(str, place.get("args", [])), *map(str, spec.get("args", [])),
            "--seed_everything", str(seed), "--test_after_fit", "true",
            "--trainer.logger.init_args.save_dir", str(run_dir.parent.parent),
            "--trainer.logger.init_args.name", run_dir.parent.name,
            "--trainer.logger.init_args.version", run_dir.name]


def per_user_rows(csv_path: Path, model: str, checkpoint: str | None, skip: int = 0) -> list[dict[str, str]]:
    """The rows of ``per_user_test.csv`` for one model (and, given, one checkpoint's test), after ``skip``."""
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))[skip:]
    return [r for r in rows if r["model"] == model and (checkpoint is None or r["checkpoint"] == checkpoint)]


def run_one(plan: dict[str, Any], setting: str, arm: str, seed: int, runs: Path, per_user: Path) -> dict:
    """Trains and tests one run in this process; writes its per-user file; returns its JSON record."""
    import torch

    from lightning_bridge.cli import main as cli_main
    from lightning_bridge.models.bridge import BridgeModule
    from lightning_bridge.models.domain import DomainModule

    run_dir = runs / setting / arm / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a killed attempt's leftovers
    start, cpu_start = time.perf_counter(), time.process_time()
    cli = cli_main(command_line(plan, setting, arm, seed, run_dir))
    reports, rows = {}, []
    for name, source in plan["arms"][arm]["reports"].items():
        if source == "warm_start":
            # the domain model co-training began from, tested on the same trainer and data
            path = cli.warm_start_checkpoint
            skip = sum(1 for _ in (run_dir / "per_user_test.csv").open()) - 1
            metrics = cli.trainer.test(DomainModule.load_from_checkpoint(path), datamodule=cli.datamodule,
                                       ckpt_path=path, verbose=False)[0]
            metrics = {k.removeprefix("domain/test/"): float(v) for k, v in metrics.items()}
            found = per_user_rows(run_dir / "per_user_test.csv", "domain", Path(path).stem, skip)
            best_val = cli.warm_start_score
        else:
            metrics = {k.removeprefix(f"{source}/test/"): v for k, v in cli.test_metrics.items()
                       if k.startswith(f"{source}/test/")}
            path = cli.best_checkpoints.get(source, "")
            found = per_user_rows(run_dir / "per_user_test.csv", source, Path(path).stem if path else None)
            best_val = cli.best_scores.get(source)
        if len({r["user"] for r in found}) != len(found):
            raise RuntimeError(f"{run_dir}: {name}'s per-user rows name a user twice")
        reports[name] = {"test": metrics, "best_val": best_val, "checkpoint": str(Path(path).relative_to(runs))
                         if path else ""}
        rows += [{"report": name, **{c: r[c] for c in PER_USER_COLUMNS}} for r in found]
    out = per_user / setting / arm / f"seed{seed}.csv.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("report", *PER_USER_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    steps = {"global": int(last["global_step"])}
    if isinstance(cli.model, BridgeModule):  # the schedule is a function of the step: count each side's
        sides = [cli.model.side_for_step(step, 10**9) for step in range(steps["global"])]
        steps.update(domain=sides.count("domain"), lm=sides.count("lm"))
    return {"setting": setting, "arm": arm, "seed": seed, "reports": reports, "steps": steps,
            "wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu_start, 1),
            "threads": torch.get_num_threads(), "per_user": str(out.relative_to(ROOT)),
            "code": _code_version()}


def _code_version() -> str:
    """The commit the run's code came from (``+dirty`` with uncommitted changes to the package)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if git("status", "--porcelain", "lightning_bridge")
                                                     else "")


def run_queue(plan_path: str, plan: dict[str, Any], jobs: int, threads: int, limit: int | None) -> None:
    """Runs the pending runs ``jobs`` at a time, each in its own process; appends each record as it ends."""
    results = ROOT / plan["results"]
    todo = pending_runs(plan, read_results(results))[:limit]
    active: list[tuple[subprocess.Popen, tuple[str, str, int], Path]] = []
    logs = ROOT / plan["runs"] / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    while todo or active:
        while todo and len(active) < jobs:
            setting, arm, seed = key = todo.pop(0)
            log = logs / f"{setting}_{arm}_seed{seed}.log"
            command = [sys.executable, __file__, "--plan", plan_path, "--one", setting, arm, str(seed),
                       "--threads", str(threads)]
            env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            with log.open("w") as out:
                process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                           env={**_environ(), **env})
            active.append((process, key, log))
            print(f"[claim] started {setting} {arm} seed {seed} (log: {log.relative_to(ROOT)})", flush=True)
        time.sleep(5)
        for entry in list(active):
            process, (setting, arm, seed), log = entry
            if process.poll() is None:
                continue
            active.remove(entry)
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            if process.returncode != 0 or not last or not last[0].startswith("{"):
                print(f"[claim] FAILED {setting} {arm} seed {seed} (exit {process.returncode}); see {log}",
                      flush=True)
                continue
            with results.open("a") as f:
                f.write(last[0] + "\n")
            record = json.loads(last[0])
            summary = ", ".join(f"{name} {r['test'].get('ndcg@10', float('nan')):.4f}"
                                for name, r in record["reports"].items())
            print(f"[claim] done {setting} {arm} seed {seed} in {record['wall_s']:.0f} s: {summary}", flush=True)
            try:  # the page is a view of the results: a rendering problem must not stop the runs
                render(plan)
            except Exception as error:
                print(f"[claim] the page was not rendered: {error!r}", flush=True)


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def render(plan: dict[str, Any]) -> None:
    from claim_report import write_page

    write_page(plan, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="bench/claim_plan.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one per core with --threads 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--limit", type=int, help="run at most this many of the pending runs")
    parser.add_argument("--render", action="store_true", help="render the results page only")
    parser.add_argument("--pending", action="store_true", help="list the pending runs and their estimated cost")
    parser.add_argument("--one", nargs=3, metavar=("SETTING", "ARM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = load_plan(args.plan)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        setting, arm, seed = args.one
        record = run_one(plan, setting, arm, int(seed), ROOT / plan["runs"], ROOT / plan["per_user"])
        print(json.dumps(record), flush=True)
        return
    if args.pending:
        todo = pending_runs(plan, read_results(ROOT / plan["results"]))
        cost = plan.get("cpu_minutes_per_run", {})
        for setting, arm, seed in todo:
            print(setting, arm, seed)
        total = sum(cost.get(arm, 0) for _, arm, _ in todo)
        print(f"{len(todo)} runs pending, about {total / 60:.1f} CPU hours (plan's per-arm estimates)")
        return
    if not args.render:
        run_queue(args.plan, plan, args.jobs, args.threads, args.limit)
    render(plan)


if __name__ == "__main__":
    main()
