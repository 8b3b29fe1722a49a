"""Renders the claim benchmark's results page (``bench/RESULTS.md``) and the README's results table from the
result files alone: the run records (one JSON line per run) and the per-user test figures beside them. Every
claim on the page is made by the plan's decision rule (``claim_analysis.py``), not by hand.

    python bench/claim_report.py --plan bench/claim_plan.yaml
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from claim_analysis import (
    SMALLER,
    Results,
    best_variants,
    claim_verdicts,
    compare,
    evaluate,
    split_metric,
    variant_validations,
    with_chosen_variants,
)
from claim_files import ROOT, device_of, estimated_cpu_hours, load_plan, pending_runs, planned_seeds, read_results

TABLE_METRICS = ("ndcg@10", "hr@10", "sparse_ndcg@10", "rare_ndcg@10", "new_item_ndcg@10",
                 "new_item_catalogue_ndcg@10", "new_item_catalogue_hr@10")


def _f(value: float, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:+.1%}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.4f} ± {_f(std)}"


def _row_head(name: str, entry: dict[str, Any], control: str) -> str:
    return f"| {name} | {entry['setting']}, {entry['metric']} | {entry['treatment']} | {control} |"


def _planned(plan: dict[str, Any], entry: dict[str, Any], control: str) -> int:
    """How many seeds the queue gives both sides of a comparison: its figures are final when all have run."""
    return len(planned_seeds(plan, entry["setting"], entry["treatment"])
               & planned_seeds(plan, entry["setting"], control))


def _figures(r: dict[str, Any], planned: int) -> str:
    """A comparison's seeds (run, of those planned), both sides' mean ± std and the relative gain, as cells."""
    return (f" {len(r['seeds'])} of {planned} | {_mean_std(r['treatment'])} | {_mean_std(r['control'])} | "
            f"{_pct(r['relative'])} |")


def _interval(r: dict[str, Any]) -> str:
    low, high = r["relative_interval"]
    return f"{_pct(low)} to {_pct(high)}"


def verdict_table(plan: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| claim | setting, metric | treatment | control | seeds (run of planned) | treatment | control | gain | "
             "p (t) | p (Wilcoxon) | p (Holm) | 95% interval of the gain (users) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        claim, r = row["claim"], row["result"]
        head, planned = _row_head(claim["name"], claim, row["control"]), _planned(plan, claim, row["control"])
        if r is None:
            lines.append(head + f" 0 of {planned} | | | | | | | | not run yet |")
            continue
        lines.append(head + _figures(r, planned) + f" {_f(r['p_t'], 3)} | {_f(r['p_wilcoxon'], 3)} | "
                     f"{_f(row['p_holm'], 3)} | {_interval(r)} | **{row['verdict']}**"
                     + (" (the same model on every seed)" if all(r["same"]) else "") + " |")
    return lines


def _runs_keeping_warm_start(results: Results, names: set[str]) -> tuple[int, int]:
    """Of the runs reporting one of ``names``, how many tested their warm start: the step-0 candidate was the
    best checkpoint because no later validation rose above it."""
    kept = [report["checkpoint"].endswith("-step=0.ckpt") for r in results.records
            for name, report in r["reports"].items() if name in names]
    return sum(kept), len(kept)


def exploratory_lines(plan: dict[str, Any], results: Results) -> list[str]:
    """The plan's questions outside the family of claims: the same statistics as a claim's, with no
    correction and no verdict, since they were asked after the claims' first results were seen."""
    lines = ["| question | setting, metric | treatment | control | seeds (run of planned) | treatment | control | "
             "gain | p (t) | 95% interval of the gain (users) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for question in plan.get("exploratory", []):
        for control in question["controls"]:
            head, planned = _row_head(question["question"], question, control), _planned(plan, question, control)
            r = compare(results, question["setting"], question["metric"], question["treatment"], control,
                        plan.get("bootstrap_samples", 2000))
            if r is None:
                lines.append(head + f" 0 of {planned} | | | | | not run yet |")
                continue
            lines.append(head + _figures(r, planned) + f" {_f(r['p_t'], 3)} | {_interval(r)} |")
    return lines


def kept_warm_start(plan: dict[str, Any], results: Results) -> str:
    """How often co-training handed back its warm start, beside how often training on without the LM (D2) did:
    the same count for both says the warm start is hard to beat at all, not that the LM harms it."""
    treatments = {c["treatment"] for c in plan["comparisons"] if c.get("moonshot")}
    variants = {v["name"] for declared in plan.get("variants_tried", {}).values() for v in declared}
    kept, runs = _runs_keeping_warm_start(results, treatments | variants)
    if not runs:
        return ""
    line = (f"In {kept} of {runs} runs of B-full and its declared variants no co-training validation rose above "
            "the warm start, so the domain model co-training handed back was its warm start (D1).")
    kept_d2, runs_d2 = _runs_keeping_warm_start(results, {"D2"})
    if runs_d2:
        line += (f" Training on without the LM (D2) handed back the same warm start in {kept_d2} of {runs_d2} "
                 "runs.")
    return line


def moonshot(plan: dict[str, Any], rows: list[dict[str, Any]], results: Results) -> list[str]:
    """The moonshot's parts: the new-item and sparse-user claims, and the overall guard against D0."""
    verdicts = claim_verdicts(plan, rows)
    parts = [f"- {c['name']}: **{verdicts[c['name']]}**" for c in plan["comparisons"] if c.get("moonshot")]
    kept = kept_warm_start(plan, results)
    if kept:
        parts.append(f"- {kept}")
    guard = plan["guard"]
    for setting in guard["settings"]:
        treatment = guard["treatments"][setting]  # with_chosen_variants: B-full or the variant in its place
        found = compare(results, setting, guard["metric"], treatment, guard["control"], 200)
        if found is None:
            parts.append(f"- {guard['name']} ({setting}): not run yet")
            continue
        ok = found["relative"] >= guard["tolerance"]
        parts.append(f"- {guard['name']} ({setting}, {treatment}, {len(found['seeds'])} seeds): "
                     f"{_pct(found['relative'])} "
                     f"({'within' if ok else 'beyond'} the allowed {guard['tolerance']:+.0%})")
    return parts


def arm_tables(plan: dict[str, Any], results: Results) -> list[str]:
    """Per setting: every report's test metrics (mean ± std over seeds), subgroup figures with their hits."""
    lines = []
    for setting in plan["settings"]:
        reports = list(dict.fromkeys(name for arm in plan["arms"].values() for name in arm["reports"]
                                     if results.seeds(setting, name)))  # D1 is reported by several arms
        if not reports:
            continue
        metrics = [m for m in TABLE_METRICS if any(m in results.metrics[(setting, n, s)] for n in reports
                                                   for s in results.seeds(setting, n))]
        lines += [f"### {setting}", "", "| model | seeds | best validation | " + " | ".join(metrics) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
        for name in reports:
            seeds = results.seeds(setting, name)
            vals = [results.best_val[(setting, name, s)] for s in seeds]
            cells = []
            for metric in metrics:
                values = [results.metrics[(setting, name, s)][metric] for s in seeds
                          if metric in results.metrics[(setting, name, s)]]
                cell = _mean_std(values)
                if split_metric(metric)[0] is not None and values:
                    hits, users = results.hits(setting, name, metric)
                    cell += f" ({hits}/{users} hits)"
                cells.append(cell)
            lines.append(f"| {name} | {len(seeds)} | {_mean_std([v for v in vals if v is not None])} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return lines


def per_seed_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| claim | control | per-seed gain (seed: treatment − control) |", "| --- | --- | --- |"]
    for row in rows:
        r = row["result"]
        if r is None:
            continue
        gains = ", ".join(f"{s}: {t - c:+.4f}" + (" (=)" if same else "")
                          for s, t, c, same in zip(r["seeds"], r["treatment"], r["control"], r["same"], strict=True))
        lines.append(f"| {row['claim']['name']} | {row['control']} | {gains} |")
    return [*lines, "", "(=): both score every user the same on that seed, the same model twice (co-training or "
            "the continuation handed back the warm start that the other side is)."]


def _by_plan(plan: dict[str, Any], records: list[dict[str, Any]], *extra: Any) -> list[
        tuple[tuple[Any, ...], list[dict[str, Any]]]]:
    """Records grouped by setting and arm (and any further key functions), in the plan's order of settings and
    arms, so that a table reads setting by setting whatever order the runs finished in (a name the plan does
    not list goes last, in the order its runs came)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["setting"], r["arm"], *(key(r) for key in extra)), []).append(r)
    order = {name: i for i, name in enumerate([*plan.get("settings", ()), *plan.get("arms", ())])}
    return sorted(groups.items(), key=lambda item: (order.get(item[0][0], len(order)),
                                                    order.get(item[0][1], len(order))))


def cost_lines(plan: dict[str, Any], results: Results, pending: list[tuple[str, str, int]]) -> list[str]:
    lines = ["| setting | arm | device | runs | median wall s | median CPU s | steps (domain / LM) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (setting, arm, device), records in _by_plan(plan, results.records, device_of):
        steps = {(r["steps"].get("domain", "–"), r["steps"].get("lm", "–")) for r in records}
        lines.append(f"| {setting} | {arm} | {device} | {len(records)} | "
                     f"{statistics.median(r['wall_s'] for r in records):.0f} | "
                     f"{statistics.median(r['cpu_s'] for r in records):.0f} | "
                     + ", ".join(f"{d} / {lm}" for d, lm in sorted(steps, key=str)) + " |")
    on_cpu = [r for r in results.records if device_of(r) == "cpu"]
    on_gpu = [r for r in results.records if device_of(r) != "cpu"]
    spent = sum(r["cpu_s"] for r in on_cpu) / 3600
    estimate = estimated_cpu_hours(plan, results.records, pending)
    lines += ["", "Wall and CPU time are the whole run's, its warm start's training included (one thread a run on "
              "CPU); the steps are the ones made after the warm start.",
              "", f"CPU time of the finished runs on CPU: {spent:.1f} h"
              + (f"; {len(on_gpu)} more ran on a GPU, {sum(r['wall_s'] for r in on_gpu) / 3600:.1f} h wall"
                 if on_gpu else "")
              + (f". Still to run: {len(pending)} runs, about {estimate:.0f} CPU hours (medians of the "
                 "finished runs of each arm, the plan's estimates for arms not run yet; "
                 "`python bench/claim.py --pending`)." if pending else ". The whole plan has run.")]
    return lines


def validation_lines(plan: dict[str, Any], results: Results) -> list[str]:
    """Each arm's validation NDCG@10 along training (mean over seeds), by the side's own optimizer steps after
    the warm start, beside the warm start's best: where co-training moved relative to where it started."""
    lines = ["| setting | arm | model | seeds | warm start's best | validation NDCG@10 after N of the model's "
             "steps (N: value) |", "| --- | --- | --- | --- | --- | --- |"]
    for (setting, arm), records in _by_plan(plan, [r for r in results.records if r.get("val_history")]):
        for model in ("domain", "lm"):
            curves = [_own_steps(r, model) for r in records
                      if r["val_history"].get(model) and r["steps"].get(model) != 0]  # 0: not trained
            if not curves:
                continue
            warm = [max(v for _, v in r["val_history"]["warm_start_domain"]) for r in records
                    if model == "domain" and r["val_history"].get("warm_start_domain")]
            length = min(len(c) for c in curves)
            points = ", ".join(f"{round(statistics.mean(c[i][0] for c in curves))}: "
                               f"{statistics.mean(c[i][1] for c in curves):.4f}" for i in range(length))
            lines.append(f"| {setting} | {arm} | {model} | {len(curves)} | "
                         f"{f'{statistics.mean(warm):.4f}' if warm else '–'} | {points} |")
    return lines


def _own_steps(record: dict[str, Any], model: str) -> list[tuple[float, float]]:
    """A run's validation history of one model with global steps turned into that model's own steps (the
    schedule's share of them; all of them for a run that trains one model)."""
    steps = record["steps"]
    share = steps.get(model, steps["global"]) / steps["global"] if steps.get("global") else 1.0
    return [((step + 1) * share, value) for step, value in record["val_history"][model]]  # logged at step - 1


def variants_lines(plan: dict[str, Any], results: Results) -> list[str]:
    """Each declared variant of B-full with its validation figures on its first seed, and the one the plan's
    rule chooses: the highest best co-training validation (not the warm start's), which replaces B-full in
    the comparisons only if it rose above its warm start."""
    lines = ["| setting | variant | change | seed | warm start's best validation | best co-training validation "
             "| above the warm start |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for setting, rows in variant_validations(plan, results).items():
        for v, record, warm, own, above in rows:
            if record is None:
                lines.append(f"| {setting} | {v['name']} | {v['change']} | – | not run yet | | |")
                continue
            lines.append(f"| {setting} | {v['name']} | {v['change']} | {record['seed']} | "
                         f"{_fmt(warm)} | {_fmt(own)} | {'yes' if above else 'no'} |")
    notes = [f"- {setting}: the highest co-training validation is {name}'s; "
             + ("it rose above its warm start, so it replaces B-full in the comparisons." if above else
                "no variant run so far rose above its warm start, so the domain model co-training hands back "
                "is its warm start.")
             for setting, (name, above) in best_variants(plan, results).items()]
    return [*lines, "", *notes]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def render(plan: dict[str, Any], results: Results, pending: list[tuple[str, str, int]]) -> str:
    plan = with_chosen_variants(plan, results)
    rows = evaluate(plan, results)
    verdicts = claim_verdicts(plan, rows)
    versions = len({r.get("code") for r in results.records})
    out = ["# Does co-training with the LM make the recommender better? (generated)", "",
           "Generated by `python bench/claim.py --plan bench/claim_plan.yaml` from "
           f"`{plan['results']}` and `{plan['per_user']}/`; do not edit by hand. The plan "
           "(`bench/claim_plan.yaml`) is the pre-registration: arms, settings, seeds, metrics and the rule below. "
           "Every figure is a test figure of a model at its own best validation checkpoint; nothing was chosen "
           f"on test. {len(results.records)} run(s) from {versions} version(s) of the package's source (each run "
           "records a fingerprint of it).", "",
           "## Verdicts", "", f"Rule: {plan['decision_rule']}", "", in_short(verdicts), "",
           "| claim | verdict |", "| --- | --- |",
           *(f"| {name} | **{v}** |" for name, v in verdicts.items()), "",
           "Each claim against each of its controls:", "", *verdict_table(plan, rows), "",
           "The gain is relative to the control's mean over the same seeds; its interval comes from "
           f"{plan.get('bootstrap_samples', 2000)} paired bootstrap samples of users within each seed, pooled "
           "over seeds. With few seeds a paired t-test cannot reach p < 0.05 after correction, so such rows "
           "are at best inconclusive, whatever their interval.", "",
           "## The moonshot", "",
           "B-full beats max(D1, D2) by ≥ 10% NDCG@10 on new items and on the sparsest fifth of users, supported "
           "by the rule, with overall NDCG@10 no more than 2% below D0:", "", *moonshot(plan, rows, results), "",
           "## Every model, every setting", "",
           "Test figures, mean ± sample std over seeds; subgroup cells give the top-10 hits they rest on, "
           "summed over seeds (hits/users). `new_item_ndcg@10` ranks new items among themselves; "
           "`new_item_catalogue_*` over the whole catalogue.", "", *arm_tables(plan, results),
           "## Per-seed gains", "", *per_seed_lines(rows), "",
           "## Validation along training", "", *validation_lines(plan, results), "",
           "The warm start (D1 for B-full) is the first candidate for the domain model's best checkpoint: a run "
           "whose later validations stay below it is tested at its warm start.", "",
           "## Beyond the claims (exploratory)", "",
           "Questions the plan added after the claims' first results were seen, and the one-seed runs of the "
           "generative LM. They are outside the family of claims: no Holm correction and no verdict; they say "
           "where to look next, not what holds.", "", *exploratory_lines(plan, results), "",
           "## Variants of B-full tried before the full seed count", "", *variants_lines(plan, results), "",
           "## Cost", "", *cost_lines(plan, results, pending), ""]
    return "\n".join(out)


README_START, README_END = "<!-- claim-results:start -->", "<!-- claim-results:end -->"


def in_short(verdicts: dict[str, str]) -> str:
    """The verdicts counted: the answer in one line (a claim still waiting for runs counts as not settled)."""
    labels = ("supported", SMALLER, "inconclusive", "refuted")
    counts = Counter(v if v in labels else "not settled yet" for v in verdicts.values())
    parts = [f"{counts[label]} {label}" for label in (*labels, "not settled yet")
             if counts[label] or label == "supported"]  # "0 supported" is said, the other zeros are not
    return f"In short, of the {len(verdicts)} claim{'' if len(verdicts) == 1 else 's'}: {', '.join(parts)}."


def _progress(results: Results, pending: list[tuple[str, str, int]]) -> str:
    """How far the plan has run, in the README's words."""
    if not pending:
        return f"all {len(results.records)} runs of the plan"
    return f"{len(results.records)} runs so far, {len(pending)} still to run"


def readme_block(plan: dict[str, Any], results: Results, pending: list[tuple[str, str, int]]) -> str:
    """The README's short results table: each claim's verdict and its gain over each control."""
    plan = with_chosen_variants(plan, results)
    rows = evaluate(plan, results)
    verdicts = claim_verdicts(plan, rows)
    lines = ["Does co-training with the LM make the recommender better? The verdicts of the pre-registered claim "
             f"benchmark, generated with the rest of `bench/RESULTS.md` ({_progress(results, pending)}; the "
             "figures, statistics and every arm are there). "
             f"{in_short(verdicts)}", "",
             "| claim | setting, metric | treatment | verdict | gain over each control (seeds run of planned) |",
             "| --- | --- | --- | --- | --- |"]
    for claim in plan["comparisons"]:
        gains = [f"{r['control']}: {_pct(r['result']['relative'])} "
                 f"({len(r['result']['seeds'])} of {_planned(plan, claim, r['control'])})"
                 for r in rows if r["claim"] is claim and r["result"]]
        lines.append(f"| {claim['name']} | {claim['setting']}, {claim['metric']} | {claim['treatment']} | "
                     f"{verdicts[claim['name']]} | "
                     f"{', '.join(gains) or '–'} |")
    moonshot_verdicts = {verdicts[c["name"]] for c in plan["comparisons"] if c.get("moonshot")}
    status = ("met" if moonshot_verdicts == {"supported"} else "refuted" if "refuted" in moonshot_verdicts
              else "not met so far")
    lines += ["", f"The moonshot (B-full at least 10% above the better of D1 and D2 on new items and on the "
              f"sparsest users): **{status}**. {kept_warm_start(plan, results)}"]
    return "\n".join(lines)


def write_page(plan: dict[str, Any], root: Path) -> Path:
    """Writes the results page and, where the plan names a README with the markers, its results table."""
    records = read_results(root / plan["results"])
    results, pending = Results(records, root), pending_runs(plan, records)
    page = root / plan["page"]
    page.write_text(render(plan, results, pending))
    readme = root / plan["readme"] if plan.get("readme") else None
    if readme is not None and readme.exists() and README_START in readme.read_text():
        text = readme.read_text()
        head, rest = text.split(README_START, 1)
        tail = rest.split(README_END, 1)[1]
        readme.write_text(f"{head}{README_START}\n{readme_block(plan, results, pending)}\n{README_END}{tail}")
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="bench/claim_plan.yaml")
    args = parser.parse_args()
    print(write_page(load_plan(args.plan), ROOT))


if __name__ == "__main__":
    main()
