"""The claim benchmark's analysis, read from its result files alone: the finished runs and their per-user
test figures (``Results``), each comparison's statistics and its verdict by the plan's decision rule
(``evaluate``, ``claim_verdicts``), and the variant of B-full that the plan's rule puts in its place
(``with_chosen_variants``). ``claim_report.py`` writes the page from these."""

from __future__ import annotations

import csv
import gzip
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from claim_stats import holm, paired_bootstrap, paired_t, wilcoxon

# metric -> (the per-user group it averages over, the per-user column it averages)
GROUP_OF = {"": (None, "{}"), "sparse_": ("sparse", "{}"), "rare_": ("rare", "{}"),
            "new_item_catalogue_": ("new_item", "{}"), "new_item_": ("new_item", "new_item_{}")}


def split_metric(metric: str) -> tuple[str | None, str]:
    """``sparse_ndcg@10`` -> (``sparse``, ``ndcg@10``): the user group and the per-user column."""
    for prefix in sorted(GROUP_OF, key=len, reverse=True):
        if metric.startswith(prefix) and metric[len(prefix):] in ("ndcg@10", "hr@10"):
            group, column = GROUP_OF[prefix]
            return group, column.format(metric[len(prefix):])
    raise ValueError(f"no per-user figures for {metric!r}: use ndcg@10 or hr@10, optionally prefixed by "
                     f"{', '.join(p for p in GROUP_OF if p)}")


class Results:
    """The finished runs: each report's test metrics by (setting, report, seed), and its per-user figures."""

    def __init__(self, records: list[dict[str, Any]], root: Path) -> None:
        self.records = records
        self.root = root
        self.metrics: dict[tuple[str, str, int], dict[str, float]] = {}
        self.best_val: dict[tuple[str, str, int], float | None] = {}
        self._files: dict[tuple[str, str, int], Path] = {}
        for r in records:
            for name, report in r["reports"].items():
                key = (r["setting"], name, r["seed"])
                self.metrics[key] = report["test"]
                self.best_val[key] = report.get("best_val")
                self._files[key] = root / r["per_user"]
        self._cache: dict[Path, list[dict[str, str]]] = {}

    def seeds(self, setting: str, report: str) -> list[int]:
        return sorted(seed for s, name, seed in self.metrics if (s, name) == (setting, report))

    def per_user(self, setting: str, report: str, seed: int) -> dict[int, dict[str, str]]:
        """User id -> that user's row for one report of one run."""
        path = self._files[(setting, report, seed)]
        if path not in self._cache:
            with gzip.open(path, "rt", newline="") as f:
                self._cache[path] = list(csv.DictReader(f))
        return {int(row["user"]): row for row in self._cache[path] if row["report"] == report}

    def group_values(self, setting: str, report: str, seed: int, metric: str) -> dict[int, float]:
        """User id -> the per-user figure behind ``metric``, for the users of its group."""
        group, column = split_metric(metric)
        rows = self.per_user(setting, report, seed)
        return {user: float(row[column]) for user, row in rows.items() if group is None or row[group] == "1"}

    def hits(self, setting: str, report: str, metric: str) -> tuple[int, int]:
        """(hits in the top 10, users) of ``metric``'s group, summed over seeds: what a subgroup figure rests
        on."""
        hit_metric = metric.replace("ndcg@10", "hr@10")
        total = users = 0
        for seed in self.seeds(setting, report):
            values = self.group_values(setting, report, seed, hit_metric)
            total += int(sum(values.values()))
            users += len(values)
        return total, users


def compare(results: Results, setting: str, metric: str, treatment: str, control: str, samples: int,
            seed: int = 0) -> dict[str, Any] | None:
    """One treatment against one control on the seeds both have: means, per-seed gains, the two tests and the
    paired bootstrap over users. None when no seed has both."""
    seeds = [s for s in results.seeds(setting, treatment) if s in results.seeds(setting, control)]
    if not seeds:
        return None
    t = [results.metrics[(setting, treatment, s)][metric] for s in seeds]
    c = [results.metrics[(setting, control, s)][metric] for s in seeds]
    t_users, c_users = [], []
    for s in seeds:
        tv = results.group_values(setting, treatment, s, metric)
        cv = results.group_values(setting, control, s, metric)
        users = sorted(set(tv) & set(cv))
        t_users.append(np.array([tv[u] for u in users]))
        c_users.append(np.array([cv[u] for u in users]))
    low, high, rel_low, rel_high = paired_bootstrap(t_users, c_users, samples, seed)
    mean_c = statistics.mean(c)
    same = [np.array_equal(a, b) for a, b in zip(t_users, c_users, strict=True)]  # per seed: one model twice?
    return {"seeds": seeds, "treatment": t, "control": c, "gain": statistics.mean(t) - mean_c,
            "same": same,
            "relative": (statistics.mean(t) - mean_c) / mean_c if mean_c > 0 else float("nan"),
            "p_t": paired_t(t, c), "p_wilcoxon": wilcoxon(t, c), "interval": (low, high),
            "relative_interval": (rel_low, rel_high)}


def verdict(comparison: dict[str, Any], p_holm: float, alpha: float, claimed: float) -> str:
    """The plan's rule for one treatment-control pair. A real gain whose interval stays below the claimed
    gain is both: there is a gain, and it is not the claimed one."""
    low, _ = comparison["interval"]
    gain = comparison["gain"] > 0 and p_holm < alpha and low > 0
    below_claim = comparison["relative_interval"][1] < claimed
    if gain:
        return SMALLER if below_claim else "supported"
    return "refuted" if below_claim else "inconclusive"


SMALLER = "a gain, smaller than claimed"


def combined(verdicts: Iterable[str]) -> str:
    """Against several controls: supported only against each, refuted against any."""
    verdicts = list(verdicts)
    if not verdicts:
        return "not run yet"
    if "refuted" in verdicts:
        return "refuted"
    if all(v == "supported" for v in verdicts):
        return "supported"
    return SMALLER if all(v in ("supported", SMALLER) for v in verdicts) else "inconclusive"


def evaluate(plan: dict[str, Any], results: Results) -> list[dict[str, Any]]:
    """Every comparison of the plan against each of its controls, Holm-corrected across the family."""
    rows = []
    for claim in plan["comparisons"]:
        for control in claim["controls"]:
            found = compare(results, claim["setting"], claim["metric"], claim["treatment"], control,
                            plan.get("bootstrap_samples", 2000))
            rows.append({"claim": claim, "control": control, "result": found})
    adjusted = holm([r["result"]["p_t"] if r["result"] else float("nan") for r in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["p_holm"] = p
        row["verdict"] = (verdict(row["result"], p, plan.get("alpha", 0.05), row["claim"]["claimed"])
                          if row["result"] else "not run yet")
    return rows


def claim_verdicts(plan: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each claim's verdict over its controls: incomplete while a control has no run beside the treatment."""
    verdicts = {}
    for claim in plan["comparisons"]:
        mine = [r for r in rows if r["claim"] is claim]
        missing = [r["control"] for r in mine if r["result"] is None]
        verdict = combined(r["verdict"] for r in mine if r["result"])
        if len(missing) == len(mine):
            verdict = "not run yet"
        elif missing and verdict != "refuted":  # refuted against one control is final; the rest needs them all
            verdict = f"incomplete (no runs of {', '.join(missing)} beside the treatment yet)"
        verdicts[claim["name"]] = verdict
    return verdicts


def variant_validations(plan: dict[str, Any], results: Results) -> dict[
        str, list[tuple[dict[str, Any], dict[str, Any] | None, float | None, float | None, bool]]]:
    """Per setting, each declared variant of B-full with the run of its first seed (None: not run yet), its
    warm start's best validation, its best co-training validation (not the warm start's), and whether that
    rose above the warm start's."""
    found = {}
    for setting, variants in plan.get("variants_tried", {}).items():
        found[setting] = []
        for v in variants:
            record = _first_record(results, setting, v["name"])
            history = (record or {}).get("val_history") or {}
            warm = max((x for _, x in history.get("warm_start_domain", [])), default=None)
            own = max((x for _, x in history.get("domain", [])), default=None)
            found[setting].append((v, record, warm, own, warm is not None and own is not None and own > warm))
    return found


def best_variants(plan: dict[str, Any], results: Results) -> dict[str, tuple[str, bool]]:
    """Setting -> the variant with the highest co-training validation on its first seed, and whether that
    rose above its warm start (a setting with no variant run yet is left out)."""
    best = {}
    for setting, rows in variant_validations(plan, results).items():
        run = [(v["name"], own, above) for v, _, _, own, above in rows if own is not None]
        if run:
            name, _, above = max(run, key=lambda row: row[1])  # the first of equals: the one declared first
            best[setting] = (name, above)
    return best


def chosen_variants(plan: dict[str, Any], results: Results) -> dict[str, str]:
    """Setting -> the variant the plan's rule puts in B-full's place: the best one where it rose above its
    warm start."""
    return {setting: name for setting, (name, above) in best_variants(plan, results).items() if above}


def with_chosen_variants(plan: dict[str, Any], results: Results) -> dict[str, Any]:
    """The plan with each setting's chosen variant as the treatment of the comparisons (and the guard) that
    name the declared B-full (the first variant listed) in that setting."""
    chosen = chosen_variants(plan, results)
    base = {setting: variants[0]["name"] for setting, variants in plan.get("variants_tried", {}).items()}
    comparisons = [{**c, "treatment": chosen[c["setting"]]}
                   if c["setting"] in chosen and c["treatment"] == base.get(c["setting"]) else c
                   for c in plan["comparisons"]]
    guard = plan["guard"]
    treatments = {setting: chosen[setting] if setting in chosen and guard["treatment"] == base.get(setting)
                  else guard["treatment"] for setting in guard["settings"]}
    return {**plan, "comparisons": comparisons, "guard": {**guard, "treatments": treatments}}


def _first_record(results: Results, setting: str, report: str) -> dict[str, Any] | None:
    """The run of the lowest seed that reports ``report`` in ``setting``."""
    runs = [r for r in results.records if r["setting"] == setting and report in r["reports"]]
    return min(runs, key=lambda r: r["seed"]) if runs else None
