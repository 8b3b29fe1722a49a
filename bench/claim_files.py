"""The claim benchmark's files: the plan (the pre-registration) and the records of the finished runs, and what
is still to run, which both the runner (``claim.py``) and the report (``claim_report.py``) read."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PER_USER_COLUMNS = ("user", "train_interactions", "target_popularity", "sparse", "rare", "new_item", "ndcg@10",
                    "hr@10", "new_item_ndcg@10", "new_item_hr@10")


def load_plan(path: str) -> dict[str, Any]:
    """The plan, with every setting and arm that the queue, the claims and the exploratory questions name
    checked against the ones it defines."""
    with open(path) as f:
        plan = yaml.safe_load(f)
    for setting in plan["settings"]:
        if "_" in setting:  # a run's files are <setting>_<arm>_seed<S>: the first "_" ends the setting
            raise ValueError(f"{path}: setting names may not contain '_', got {setting!r}")
    for block in plan["queue"]:
        for name, known in (("settings", plan["settings"]), ("arms", plan["arms"])):
            unknown = set(block[name]) - set(known)
            if unknown:
                raise ValueError(f"{path}: queue block {block} names unknown {name} {sorted(unknown)}")
    for section in ("comparisons", "exploratory"):
        for entry in plan.get(section, []):
            if entry["setting"] not in plan["settings"]:
                raise ValueError(f"{path}: {section} entry {entry.get('name') or entry.get('question')!r} names "
                                 f"unknown setting {entry['setting']!r}; the settings are {list(plan['settings'])}")
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


def device_of(record: dict[str, Any]) -> str:
    """Where a run ran: ``cpu`` or the GPU's name (the runner's first records predate the field; all ran on CPU)."""
    return record.get("device", "cpu")


def estimated_cpu_minutes(plan: dict[str, Any], done: list[dict[str, Any]], setting: str, arm: str) -> float:
    """What a run should cost in CPU minutes: the median of the finished CPU runs of that arm on that setting, else
    of that arm on any setting, else the plan's ``cpu_minutes_per_run`` (arms with no finished run yet)."""
    on_cpu = [r for r in done if device_of(r) == "cpu" and r["arm"] == arm]
    for runs in ([r for r in on_cpu if r["setting"] == setting], on_cpu):
        if runs:
            return statistics.median(r["cpu_s"] for r in runs) / 60
    return float(plan.get("cpu_minutes_per_run", {}).get(arm, 0))


def estimated_cpu_hours(plan: dict[str, Any], done: list[dict[str, Any]],
                        pending: list[tuple[str, str, int]]) -> float:
    return sum(estimated_cpu_minutes(plan, done, setting, arm) for setting, arm, _ in pending) / 60


def planned_seeds(plan: dict[str, Any], setting: str, report: str) -> set[int]:
    """The seeds the queue gives the arms that report ``report`` on ``setting`` (a model that several arms
    report, such as D1, has the seeds of each)."""
    arms = {arm for arm, spec in plan["arms"].items() if report in spec["reports"]}
    return {seed for block in plan["queue"] if setting in block["settings"] and arms & set(block["arms"])
            for seed in block["seeds"]}
