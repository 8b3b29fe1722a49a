"""The claim benchmark: does co-training with the LM make the recommender better, where, and by how much?

One command runs every (setting, arm, seed) of the pre-registered plan that has no result yet, resumes where
it stopped, and renders the results page from the result files alone:

    python bench/claim.py --plan bench/claim_plan.yaml --jobs 2      # run what is missing, then render
    python bench/claim.py --plan bench/claim_plan.yaml --render      # render bench/RESULTS.md only
    python bench/claim.py --plan bench/claim_plan.yaml --pending     # list what is still to run, with its cost

Each run is the real command line (``main.py fit --config ... --seed_everything S --test_after_fit true``) in
its own process with one thread (``--threads``), so runs can go side by side. When it ends, its result is one
JSON line in the plan's ``results`` file (each reported model's test metrics at its own best validation
checkpoint, its best validation score, every validation along the run, steps, CPU time) and its per-user
test figures (NDCG@10 and HR@10 per user, with the sparse / rare / new groups) in
``per_user/<setting>/<arm>/seed<S>.csv.gz`` beside it. A run killed half-way is resumed from its last
checkpoint by the next runner (``--ckpt_path``; resuming is exact), so a kill loses only the work since then;
one killed before its first checkpoint is run again from the start.
What the arms are, which comparisons decide the claim and by which rule is the plan's business
(``bench/claim_plan.yaml``); ``claim_report.py`` renders the page.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from claim_files import (
    PER_USER_COLUMNS,
    ROOT,
    estimated_cpu_hours,
    estimated_cpu_minutes,
    load_plan,
    pending_runs,
    read_results,
)
from claim_report import write_page

if TYPE_CHECKING:  # the runner imports torch only in the processes that train
    import torch


def command_line(plan: dict[str, Any], setting: str, arm: str, seed: int, run_dir: Path,
                 accelerator: str | None = None) -> list[str]:
    """The ``main.py fit`` arguments of one run; ``accelerator`` (e.g. ``gpu``) replaces the configs' ``cpu``."""
    spec, place = plan["arms"][arm], plan["settings"][setting]
    configs = list(spec["configs"]) + (list(place.get("channel_configs", [])) if spec.get("text_channel") else [])
    args = [arg for config in configs for arg in ("--config", config)]
    subcommand = spec.get("subcommand", "fit")  # ``test``: a model with nothing to train (the content baseline)
    return [subcommand, *args, *map(str, place.get("args", [])), *map(str, spec.get("args", [])),
            "--seed_everything", str(seed), *(["--test_after_fit", "true"] if subcommand == "fit" else []),
            "--trainer.logger.init_args.save_dir", str(run_dir.parent.parent),
            "--trainer.logger.init_args.name", run_dir.parent.name,
            "--trainer.logger.init_args.version", run_dir.name,
            *(["--trainer.accelerator", accelerator, "--trainer.devices", "1"] if accelerator else [])]


def per_user_rows(csv_path: Path, model: str, checkpoint: str | None, skip: int = 0) -> list[dict[str, str]]:
    """The rows of ``per_user_test.csv`` for one model (and, given, one checkpoint's test), after ``skip``."""
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))[skip:]
    return [r for r in rows if r["model"] == model and (checkpoint is None or r["checkpoint"] == checkpoint)]


def run_one(plan: dict[str, Any], setting: str, arm: str, seed: int, runs: Path, per_user: Path,
            accelerator: str | None = None) -> dict:
    """Trains and tests one run in this process; writes its per-user file; returns its JSON record."""
    import torch

    from lightning_bridge.cli import main as cli_main
    from lightning_bridge.co_training.bridge import BridgeModule
    from lightning_bridge.models.domain import DomainModule
    from lightning_bridge.run.console import ignore_evaluation_noise

    # the run's command line is the runner's (``--one ...``), not the CLI's: Lightning's notice says nothing here
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")

    runs = runs.resolve()  # checkpoint paths come back resolved: a runs folder reached through a link must match
    run_dir = runs / setting / arm / f"seed{seed}"
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = last.exists()
    if resume:  # a killed attempt's tests, if it got that far, are done again
        (run_dir / "per_user_test.csv").unlink(missing_ok=True)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # an attempt killed before its first checkpoint
    cost = CostLedger(run_dir / "cost")
    cli = cli_main(command_line(plan, setting, arm, seed, run_dir, accelerator)
                   + (["--ckpt_path", str(last)] if resume else []))
    reports, rows = {}, []
    for name, source in plan["arms"][arm]["reports"].items():
        if source == "warm_start":
            # the domain model co-training began from, tested on the same trainer and data
            path = cli.warm_start_checkpoint
            skip = sum(1 for _ in (run_dir / "per_user_test.csv").open()) - 1
            with warnings.catch_warnings():
                ignore_evaluation_noise()
                metrics = cli.trainer.test(DomainModule.load_from_checkpoint(path), datamodule=cli.datamodule,
                                           ckpt_path=path, verbose=False)[0]
            metrics = {k.removeprefix("domain/test/"): float(v) for k, v in metrics.items()}
            found = per_user_rows(run_dir / "per_user_test.csv", "domain", Path(path).stem, skip)
            best_val = cli.warm_start_score
        elif plan["arms"][arm].get("subcommand") == "test":
            metrics = {k.removeprefix(f"{source}/test/"): float(v) for k, v in cli.trainer.callback_metrics.items()
                       if k.startswith(f"{source}/test/")}
            path, best_val = "", None
            found = per_user_rows(run_dir / "per_user_test.csv", source, "final")
        else:
            metrics = {k.removeprefix(f"{source}/test/"): v for k, v in cli.test_metrics.items()
                       if k.startswith(f"{source}/test/")}
            path = cli.best_checkpoints.get(source, "")
            found = per_user_rows(run_dir / "per_user_test.csv", source, Path(path).stem if path else None)
            best_val = cli.best_scores.get(source)
        if len({r["user"] for r in found}) != len(found):
            raise RuntimeError(f"{run_dir}: {name}'s per-user rows name a user twice")
        checkpoint = str(Path(path).resolve().relative_to(runs)) if path else ""
        reports[name] = {"test": metrics, "best_val": best_val, "checkpoint": checkpoint}
        rows += [{"report": name, **{c: r[c] for c in PER_USER_COLUMNS}} for r in found]
    out = per_user / setting / arm / f"seed{seed}.csv.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("report", *PER_USER_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    steps = {"global": int(torch.load(last, weights_only=True, map_location="cpu")["global_step"])
             if last.exists() else 0}
    if isinstance(cli.model, BridgeModule):  # the schedule alternates optimizer steps: count each side's
        domain = sum(cli.model.side_for_step(step) == "domain" for step in range(steps["global"]))
        steps.update(domain=domain, lm=steps["global"] - domain)
    wall_s, cpu_s, attempts = cost.total()
    return {"setting": setting, "arm": arm, "seed": seed, "reports": reports, "steps": steps,
            "val_history": validation_history(run_dir), "wall_s": wall_s, "cpu_s": cpu_s, "attempts": attempts,
            "threads": torch.get_num_threads(), "device": _device_name(cli.trainer.strategy.root_device),
            "code": _code_version(),
            "per_user": str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)}


def _device_name(device: torch.device) -> str:
    """``cpu``, or the GPU's name: the page keeps the cost of runs on different devices apart."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


class CostLedger:
    """The wall and CPU time of one attempt at a run, written to ``<folder>/attempt<N>.json`` every
    ``every`` seconds, so that a run resumed after a kill still counts what its earlier attempts spent."""

    def __init__(self, folder: Path, every: float = 30.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.earlier = sorted(folder.glob("attempt*.json"))
        self.path = folder / f"attempt{len(self.earlier)}.json"
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self._stop = threading.Event()
        self.write()
        threading.Thread(target=self._keep_writing, args=(every,), daemon=True).start()

    def spent(self) -> tuple[float, float]:
        return time.perf_counter() - self.start, time.process_time() - self.cpu_start

    def write(self) -> None:
        wall_s, cpu_s = self.spent()
        self.path.write_text(json.dumps({"wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1)}))

    def _keep_writing(self, every: float) -> None:
        while not self._stop.wait(every):
            self.write()

    def total(self) -> tuple[float, float, int]:
        """(wall s, CPU s, attempts) of the earlier attempts and this one, which ends here."""
        self._stop.set()
        self.write()
        spent = [json.loads(p.read_text()) for p in [*self.earlier, self.path]]
        return (round(sum(a["wall_s"] for a in spent), 1), round(sum(a["cpu_s"] for a in spent), 1), len(spent))


def validation_history(run_dir: Path) -> dict[str, list[list[float]]]:
    """Each model's validation NDCG@10 at every validation of the run, ``[global step, value]``, from its
    TensorBoard events (the warm start's under ``warm_start``, in its own steps): how co-training moved
    away from, or failed to beat, where it started."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = {}
    for name, folder in (("", run_dir), ("warm_start_", run_dir / "warm_start")):
        if not folder.exists():
            continue
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
        for model in ("domain", "lm"):
            tag = f"{model}/val/ndcg@10"
            if tag in events.Tags()["scalars"]:  # a resumed run validates again what it had after its last
                by_step = {e.step: round(e.value, 6) for e in events.Scalars(tag)}  # checkpoint: once a step
                history[name + model] = [[step, value] for step, value in sorted(by_step.items())]
    return history


def _code_version() -> str:
    """A fingerprint of the package's source (the first 12 hex digits of a sha256 over its files): runs with
    the same fingerprint ran the same code."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "lightning_bridge").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def run_queue(plan_path: str, jobs: int, threads: int, limit: int | None, accelerator: str | None = None) -> None:
    """Runs the plan's pending runs ``jobs`` at a time, each in its own process, and appends each record as it
    ends. The plan and the results are read again before every start, so the queue follows edits of the plan.
    A run still going from an earlier runner (its pid file names a live process) is waited for, not repeated,
    a record that a killed runner did not append is taken from the run's log, and a run stopped with its runner
    before it finished is resumed when its turn comes. A run of this runner that ends without a record failed:
    it is not started again until the next runner."""
    active: dict[tuple[str, str, int], int] = {}  # run -> pid
    mine: set[tuple[str, str, int]] = set()  # the runs this runner started
    failed: set[tuple[str, str, int]] = set()
    started, plan = 0, load_plan(plan_path)
    while True:
        try:
            plan = load_plan(plan_path)
        except (OSError, ValueError, yaml.YAMLError) as error:  # caught half-saved: the last good plan goes on
            print(f"[claim] the plan could not be read ({error}); going on with the last one read", flush=True)
        logs = ROOT / plan["runs"] / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for key, pid in list(active.items()) + _earlier_runs(logs, active):
            if _alive(pid):
                active[key] = pid
                continue
            active.pop(key, None)
            if _collect(plan, key, logs):
                continue
            if key in mine:
                failed.add(key)
                print(f"[claim] FAILED {' '.join(map(str, key))}; see {_log(logs, key)}", flush=True)
            else:
                print(f"[claim] {' '.join(map(str, key))} stopped with an earlier runner; it resumes in its turn",
                      flush=True)
        todo = [k for k in pending_runs(plan, read_results(ROOT / plan["results"]))
                if k not in active and k not in failed]
        while todo and len(active) < jobs and (limit is None or started < limit):
            key = todo.pop(0)
            active[key] = _start(plan_path, key, logs, threads, accelerator)
            mine.add(key)
            started += 1
        if not active:
            return
        time.sleep(5)


def _log(logs: Path, key: tuple[str, str, int]) -> Path:
    setting, arm, seed = key
    return logs / f"{setting}_{arm}_seed{seed}.log"


def _start(plan_path: str, key: tuple[str, str, int], logs: Path, threads: int, accelerator: str | None) -> int:
    """Starts one run in its own process (its output in its log, its pid beside it); returns the pid."""
    setting, arm, seed = key
    command = [sys.executable, __file__, "--plan", plan_path, "--one", setting, arm, str(seed),
               "--threads", str(threads), *(["--accelerator", accelerator] if accelerator else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = _log(logs, key)
    with log.open("a") as out:  # a resumed run's log follows its earlier attempts
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)  # a runner stopped with Ctrl-C leaves its runs going
    log.with_suffix(".pid").write_text(str(process.pid))
    _children[process.pid] = process
    print(f"[claim] started {setting} {arm} seed {seed} (log: {log})", flush=True)
    return process.pid


_children: dict[int, subprocess.Popen] = {}  # this runner's own processes, reaped through poll()


def _alive(pid: int) -> bool:
    if pid in _children:
        return _children[pid].poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _earlier_runs(logs: Path, active: dict) -> list[tuple[tuple[str, str, int], int]]:
    """Runs with a pid file that this runner does not know yet (an earlier runner's, going or ended)."""
    found = []
    for pid_file in logs.glob("*.pid"):
        setting, rest = pid_file.stem.split("_", 1)  # no setting name has "_"; an arm name may
        arm, seed = rest.rsplit("_", 1)
        key = (setting, arm, int(seed.removeprefix("seed")))
        if key not in active:
            found.append((key, int(pid_file.read_text())))
    return found


def _collect(plan: dict[str, Any], key: tuple[str, str, int], logs: Path) -> bool:
    """Appends an ended run's record (the last line of its log) to the results; False if it has none."""
    log = _log(logs, key)
    log.with_suffix(".pid").unlink(missing_ok=True)
    last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    if not last or not last[0].startswith("{"):
        return False
    record = json.loads(last[0])
    if (record["setting"], record["arm"], record["seed"]) != key:
        return False
    results = ROOT / plan["results"]
    if key not in {(r["setting"], r["arm"], r["seed"]) for r in read_results(results)}:
        with results.open("a") as f:
            f.write(last[0] + "\n")
    summary = ", ".join(f"{name} {r['test'].get('ndcg@10', float('nan')):.4f}" for name, r in record["reports"].items())
    print(f"[claim] done {' '.join(map(str, key))} in {record['wall_s']:.0f} s: {summary}", flush=True)
    try:  # the page is a view of the results: a rendering problem must not stop the runs
        render(plan)
    except Exception as error:
        print(f"[claim] the page was not rendered: {error!r}", flush=True)
    return True


def render(plan: dict[str, Any]) -> None:
    write_page(plan, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="bench/claim_plan.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one per core with --threads 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--limit", type=int, help="run at most this many of the pending runs")
    parser.add_argument("--accelerator", help="Lightning accelerator of every run, e.g. gpu (one device each); "
                        "default: the configs' own, cpu")
    parser.add_argument("--render", action="store_true", help="render the results page only")
    parser.add_argument("--pending", action="store_true", help="list the pending runs and their estimated cost")
    parser.add_argument("--one", nargs=3, metavar=("SETTING", "ARM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = load_plan(args.plan)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        setting, arm, seed = args.one
        record = run_one(plan, setting, arm, int(seed), ROOT / plan["runs"], ROOT / plan["per_user"],
                         args.accelerator)
        print(json.dumps(record), flush=True)
        return
    if args.pending:
        done = read_results(ROOT / plan["results"])
        todo = pending_runs(plan, done)
        for setting, arm, seed in todo:
            print(setting, arm, seed, f"~{estimated_cpu_minutes(plan, done, setting, arm):.1f} CPU min")
        print(f"{len(todo)} runs pending, about {estimated_cpu_hours(plan, done, todo):.1f} CPU hours (medians of the "
              "finished runs of each arm; the plan's estimates for arms not run yet)")
        return
    if not args.render:
        run_queue(args.plan, args.jobs, args.threads, args.limit, args.accelerator)
    render(plan)


if __name__ == "__main__":
    main()
