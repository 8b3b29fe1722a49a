"""The claim benchmark's statistics and results page: checked against scipy on known inputs, and rendered
from a small fixture of result lines and per-user files written in the runner's formats."""

import csv
import gzip
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from claim_analysis import Results, best_variants, compare, evaluate, split_metric
from claim_files import (
    PER_USER_COLUMNS,
    estimated_cpu_hours,
    estimated_cpu_minutes,
    load_plan,
    pending_runs,
    planned_seeds,
)
from claim_report import per_seed_lines, render, write_page
from claim_stats import holm, paired_bootstrap, paired_t, wilcoxon

PLAN = Path(__file__).resolve().parent.parent / "bench" / "claim_plan.yaml"


@pytest.mark.parametrize("n", [3, 5, 10])
def test_paired_tests_match_scipy(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        treatment, control = rng.normal(0.10, 0.02, n), rng.normal(0.095, 0.02, n)
        assert paired_t(treatment, control) == pytest.approx(scipy_stats.ttest_rel(treatment, control).pvalue)
        assert wilcoxon(treatment, control) == pytest.approx(scipy_stats.wilcoxon(treatment, control).pvalue)


def test_wilcoxon_with_tied_differences_is_scipys_normal_approximation():
    treatment, control = np.array([1, 2, 3, 4, 5.0]), np.array([0, 1, 2, 3, 7.0])
    expected = scipy_stats.wilcoxon(treatment, control, method="approx").pvalue
    assert wilcoxon(treatment, control) == pytest.approx(expected)


def test_holm_matches_its_definition():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_paired_bootstrap_brackets_a_known_gain():
    rng = np.random.default_rng(0)
    control = [rng.random(400) for _ in range(3)]
    treatment = [c + 0.1 for c in control]  # every user gains exactly 0.1
    low, high, rel_low, rel_high = paired_bootstrap(treatment, control, samples=300)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)
    assert 0.15 < rel_low <= rel_high < 0.25  # 0.1 over a mean of about 0.5


def test_metric_names_map_to_their_per_user_columns():
    assert split_metric("ndcg@10") == (None, "ndcg@10")
    assert split_metric("sparse_hr@10") == ("sparse", "hr@10")
    assert split_metric("new_item_ndcg@10") == ("new_item", "new_item_ndcg@10")
    assert split_metric("new_item_catalogue_ndcg@10") == ("new_item", "ndcg@10")
    with pytest.raises(ValueError, match="no per-user figures for 'mrr@10'"):
        split_metric("mrr@10")


def _write_run(root: Path, setting: str, arm: str, seed: int, reports: dict[str, np.ndarray],
               sparse: np.ndarray) -> dict:
    """A runner-format record whose per-user NDCG@10 is ``reports[name]`` (HR@10: NDCG > 0)."""
    path = Path("per_user") / setting / arm / f"seed{seed}.csv.gz"
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / path, "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("report", *PER_USER_COLUMNS))
        writer.writeheader()
        for name, ndcg in reports.items():
            for user, value in enumerate(ndcg):
                writer.writerow({"report": name, "user": user, "train_interactions": 5, "target_popularity": 1,
                                 "sparse": int(sparse[user]), "rare": 0, "new_item": 0, "ndcg@10": value,
                                 "hr@10": int(value > 0), "new_item_ndcg@10": "", "new_item_hr@10": ""})
    metrics = {name: {"test": {"ndcg@10": float(v.mean()), "hr@10": float((v > 0).mean()),
                               "sparse_ndcg@10": float(v[sparse].mean()),
                               "sparse_hr@10": float((v[sparse] > 0).mean())}, "best_val": 0.05,
                      "checkpoint": f"{setting}/{arm}/seed{seed}/checkpoints/best-epoch=3-step=40.ckpt"}
               for name, v in reports.items()}
    return {"setting": setting, "arm": arm, "seed": seed, "reports": metrics, "steps": {"global": 10},
            "wall_s": 60.0, "cpu_s": 60.0, "threads": 1, "per_user": str(path), "code": "abc"}


def _rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def fixture_results(tmp_path):
    """Sparse setting, 5 seeds: B_full gains 30% on every sparse user over D1; D2 equals D1."""
    rng = np.random.default_rng(1)
    sparse = np.arange(200) < 40
    records = []
    for seed in range(5):
        base = rng.random(200) * (rng.random(200) < 0.3)
        base[sparse] = 0.2 + 0.05 * rng.random(40) + 0.01 * seed
        gain = base.copy()
        gain[sparse] *= 1.3
        records.append(_write_run(tmp_path, "sparse", "BF", seed, {"B_full": gain, "D1": base}, sparse))
        records.append(_write_run(tmp_path, "sparse", "D2", seed, {"D2": base}, sparse))
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path, records


def test_page_renders_verdicts_from_the_result_files(fixture_results):
    root, records = fixture_results
    plan = load_plan(str(PLAN))
    plan["comparisons"] = [c for c in plan["comparisons"] if c["metric"] == "sparse_ndcg@10"]
    plan["bootstrap_samples"] = 300
    plan["queue"] = [{"settings": ["sparse"], "arms": ["BF", "D2"], "seeds": list(range(5))}]  # the fixture's
    results = Results(records, root)
    rows = evaluate(plan, results)
    assert [(r["control"], r["verdict"]) for r in rows] == [("D1", "supported"), ("D2", "supported")]
    first = rows[0]["result"]
    assert first["relative"] == pytest.approx(0.3)
    assert first["p_t"] == pytest.approx(scipy_stats.ttest_rel(first["treatment"], first["control"]).pvalue)
    assert rows[0]["p_holm"] == pytest.approx(min(1.0, 2 * first["p_t"]))
    page = render(plan, results, pending=[])
    assert ("| domain gains from co-training on the sparsest users | sparse, sparse_ndcg@10 | B_full | D1 | "
            "5 of 5 |") in page
    assert "| domain gains from co-training on the sparsest users | **supported** |" in page
    assert "In short, of the 1 claim: 1 supported." in page
    assert ("In 0 of 5 runs of B-full and its declared variants no co-training validation rose above the "
            "warm start") in page
    d2_seed0 = next(r for r in records if r["arm"] == "D2")["reports"]["D2"]
    d2_seed0["checkpoint"] = d2_seed0["checkpoint"].replace("best-epoch=3-step=40", "best-epoch=0-step=0")
    page = render(plan, results, pending=[])
    assert "Training on without the LM (D2) handed back the same warm start in 1 of 5 runs." in page
    plan["comparisons"] += [{**plan["comparisons"][0], "name": "with C", "controls": ["D1", "D2", "C"]},
                            {**plan["comparisons"][0], "name": "on cold", "setting": "cold"}]
    page = render(plan, results, pending=[])
    assert "| with C | **incomplete (no runs of C beside the treatment yet)** |" in page
    assert "| on cold | **not run yet** |" in page
    assert "In short, of the 3 claims: 1 supported, 2 not settled yet." in page
    hits = sum(sum(1 for row in _rows(root / r["per_user"])
                   if row["report"] == "D2" and row["sparse"] == "1" and row["hr@10"] == "1")
               for r in records if r["arm"] == "D2")
    assert f"({hits}/200 hits)" in page  # 40 sparse users x 5 seeds


def test_exploratory_questions_get_figures_but_no_verdict(fixture_results):
    root, records = fixture_results
    plan = load_plan(str(PLAN))
    plan["comparisons"] = [c for c in plan["comparisons"] if c["metric"] == "sparse_ndcg@10"]
    plan["bootstrap_samples"] = 300
    plan["queue"] = [{"settings": ["sparse"], "arms": ["BF", "D2"], "seeds": list(range(5))}]  # the fixture's
    plan["exploratory"] = [{"question": "the gain again", "setting": "sparse", "metric": "sparse_ndcg@10",
                            "treatment": "B_full", "controls": ["D1", "L0"]}]
    results = Results(records, root)
    page = render(plan, results, pending=[])
    section = page[page.index("## Beyond the claims"):page.index("## Variants of B-full")]
    found = compare(results, "sparse", "sparse_ndcg@10", "B_full", "D1", 300)
    low, high = found["relative_interval"]
    assert (f"| the gain again | sparse, sparse_ndcg@10 | B_full | D1 | 5 of 5 | "
            f"{statistics.mean(found['treatment']):.4f} ±") in section
    assert f"| +30.0% | {found['p_t']:.3f} | {low:+.1%} to {high:+.1%} |" in section
    assert "| the gain again | sparse, sparse_ndcg@10 | B_full | L0 | 0 of 0 | | | | | not run yet |" in section
    assert "supported" not in section and "the gain again" not in page[:page.index("## Beyond the claims")]


def test_a_seed_where_both_sides_are_one_model_is_marked(fixture_results):
    root, records = fixture_results  # D2 scores every user as D1 does on every seed; B_full does not
    results = Results(records, root)
    assert compare(results, "sparse", "sparse_ndcg@10", "D2", "D1", 50)["same"] == [True] * 5
    assert compare(results, "sparse", "sparse_ndcg@10", "B_full", "D1", 50)["same"] == [False] * 5
    claim = {"name": "D2 against D1", "setting": "sparse", "metric": "sparse_ndcg@10", "treatment": "D2"}
    rows = [{"claim": claim, "control": "D1", "result": compare(results, "sparse", "sparse_ndcg@10", "D2", "D1", 50)}]
    assert "| D2 against D1 | D1 | 0: +0.0000 (=), 1: +0.0000 (=)," in "\n".join(per_seed_lines(rows))


def test_a_model_reported_by_several_arms_has_one_row(fixture_results):
    root, records = fixture_results
    plan = {**load_plan(str(PLAN)), "comparisons": []}
    variant = [{**r, "arm": "BF_val_every_epoch",
                "reports": {"B_full_val_every_epoch": r["reports"]["B_full"], "D1": r["reports"]["D1"]}}
               for r in records if r["arm"] == "BF"]
    page = render(plan, Results(records + variant, root), pending=[])
    assert page.count("| D1 | 5 |") == 1


@pytest.mark.parametrize("above", [False, True])
def test_the_variant_chosen_on_validation(fixture_results, above):
    """The variants table shows each variant's warm start and best co-training validation on its first seed;
    the highest co-training validation is chosen, and replaces B-full only if it rose above its warm start."""
    root, records = fixture_results
    plan = load_plan(str(PLAN))
    plan["comparisons"] = [c for c in plan["comparisons"] if c["metric"] == "sparse_ndcg@10"]
    plan["bootstrap_samples"] = 100
    plan["variants_tried"] = {"sparse": [{"name": "B_full", "change": "as above"},
                                         {"name": "B_full_v1", "change": "one knob"}]}
    bf = next(r for r in records if r["arm"] == "BF" and r["seed"] == 0)
    bf["val_history"] = {"warm_start_domain": [[9, 0.05], [19, 0.06]], "domain": [[39, 0.055], [59, 0.052]]}
    variant = {**bf, "arm": "BF_v1", "reports": {"B_full_v1": bf["reports"]["B_full"]},  # same per-user file
               "val_history": {"warm_start_domain": [[19, 0.06]], "domain": [[39, 0.065 if above else 0.058]]}}
    page = render(plan, Results([*records, variant], root), pending=[])
    assert "| sparse | B_full | as above | 0 | 0.0600 | 0.0550 | no |" in page
    assert f"| sparse | B_full_v1 | one knob | 0 | 0.0600 | {0.065 if above else 0.058:.4f} | " \
           f"{'yes' if above else 'no'} |" in page
    assert "the highest co-training validation is B_full_v1's" in page
    assert ("so it replaces B-full in the comparisons" in page) == above
    assert ("| sparse, sparse_ndcg@10 | B_full_v1 | D1 |" in page) == above  # the comparisons follow the rule
    assert ("| sparse, sparse_ndcg@10 | B_full | D1 |" in page) == (not above)


def test_a_tie_between_variants_goes_to_the_one_declared_first(fixture_results):
    root, records = fixture_results
    plan = {"variants_tried": {"sparse": [{"name": n, "change": n} for n in ("B_full", "B_full_v1", "B_full_v2")]}}
    bf = next(r for r in records if r["arm"] == "BF" and r["seed"] == 0)
    history = {"warm_start_domain": [[19, 0.06]], "domain": [[39, 0.065]]}
    variants = [{**bf, "arm": f"BF_{v}", "reports": {f"B_full_{v}": bf["reports"]["B_full"]}, "val_history": history}
                for v in ("v2", "v1")]  # recorded in the other order
    assert best_variants(plan, Results([*records, *variants], root)) == {"sparse": ("B_full_v1", True)}


@pytest.mark.parametrize(("factor", "expected"), [(1.01, "a gain, smaller than claimed"), (0.99, "refuted")])
def test_a_precise_effect_far_below_the_claim(fixture_results, factor, expected):
    """B_full = D1 x factor on every user: a tight interval far below the claimed +10%."""
    root, records = fixture_results
    for record in records:
        if record["arm"] == "BF":
            path = root / record["per_user"]
            rows = _rows(path)
            base = {r["user"]: float(r["ndcg@10"]) for r in rows if r["report"] == "D1"}
            for r in rows:
                if r["report"] == "B_full":
                    r["ndcg@10"] = base[r["user"]] * 1.01
            with gzip.open(path, "wt", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=rows[0].keys())
                writer.writeheader()
                writer.writerows(rows)
            values = {u: float(v) * factor for u, v in base.items()}
            record["reports"]["B_full"]["test"]["sparse_ndcg@10"] = float(np.mean(
                [values[str(u)] for u in range(40)]))
    plan = load_plan(str(PLAN))
    plan["comparisons"] = [c for c in plan["comparisons"] if c["metric"] == "sparse_ndcg@10"]
    plan["bootstrap_samples"] = 300
    rows = evaluate(plan, Results(records, root))
    assert rows[0]["verdict"] == expected


def test_the_cost_of_runs_on_a_gpu_is_kept_apart_from_cpu_time(fixture_results):
    root, records = fixture_results
    plan = load_plan(str(PLAN))
    plan["comparisons"] = [c for c in plan["comparisons"] if c["metric"] == "sparse_ndcg@10"]
    for record in records[:2]:  # seed 0 of BF and D2
        record.update(device="NVIDIA H100 80GB HBM3", wall_s=7200.0)
    page = render(plan, Results(records, root), pending=[])
    assert "| sparse | BF | NVIDIA H100 80GB HBM3 | 1 | 7200 |" in page
    assert "| sparse | BF | cpu | 4 | 60 |" in page  # records without the field ran on CPU
    assert "CPU time of the finished runs on CPU: 0.1 h; 2 more ran on a GPU, 4.0 h wall." in page  # 8 x 60 s


def test_pending_runs_skip_finished_ones_in_the_queues_order(fixture_results):
    _, records = fixture_results
    plan = load_plan(str(PLAN))
    todo = pending_runs(plan, records)
    assert ("sparse", "BF", 0) not in todo and ("sparse", "D2", 4) not in todo
    assert todo[:2] == [("cold", "BF", 0), ("cold", "D2", 0)]  # the first block's missing runs come first
    assert len(todo) == len(set(todo))


def test_the_seeds_planned_for_a_model_are_those_of_every_arm_that_reports_it():
    plan = load_plan(str(PLAN))
    assert planned_seeds(plan, "sparse", "D1") == set(range(10))  # BF's 0-1 and the chosen variant's 0-9
    assert planned_seeds(plan, "sparse", "B_full") == {0, 1}  # B-full itself stopped once a variant was chosen
    assert planned_seeds(plan, "full", "B_paper") == set(range(5))
    assert planned_seeds(plan, "full", "no such model") == set()


def test_the_cost_still_to_come_is_estimated_from_the_finished_runs_first(fixture_results):
    _, records = fixture_results  # BF and D2 on sparse, 60 CPU s each
    plan = {"cpu_minutes_per_run": {"BF": 20, "L0": 16}}
    records[0].update(cpu_s=300.0)  # BF on sparse: one run of 5 min, four of 1 min; the median is 1 min
    records.append({**records[0], "setting": "cold", "cpu_s": 600.0})
    records.append({**records[0], "setting": "cold", "seed": 1, "cpu_s": 900.0, "device": "NVIDIA H100"})
    assert estimated_cpu_minutes(plan, records, "sparse", "BF") == 1.0  # the same setting's CPU runs
    assert estimated_cpu_minutes(plan, records, "cold", "BF") == 10.0  # the GPU run does not count
    assert estimated_cpu_minutes(plan, records, "full", "BF") == 1.0  # no run on full: BF's over every setting
    assert estimated_cpu_minutes(plan, records, "full", "L0") == 16.0  # never run: the plan's estimate
    assert estimated_cpu_hours(plan, records, [("full", "L0", 0), ("cold", "BF", 3)]) == pytest.approx(26 / 60)


def test_the_readme_table_is_rewritten_between_its_markers_only(fixture_results):
    root, _ = fixture_results
    plan = load_plan(str(PLAN))
    plan["comparisons"] = [c for c in plan["comparisons"] if c["metric"] == "sparse_ndcg@10"]
    plan.update(bootstrap_samples=100, results="runs.jsonl", page="RESULTS.md", readme="README.md")
    plan["queue"] = [{"settings": ["sparse"], "arms": ["BF", "D2"], "seeds": list(range(10))}]  # half run
    start, end = "<!-- claim-results:start -->", "<!-- claim-results:end -->"
    (root / "README.md").write_text(f"# Title\n\n{start}\nold\n{end}\n\nrest\n")
    write_page(plan, root)
    readme = (root / "README.md").read_text()
    assert readme.startswith(f"# Title\n\n{start}\n") and readme.endswith(f"{end}\n\nrest\n")
    assert "old" not in readme
    assert ("| domain gains from co-training on the sparsest users | sparse, sparse_ndcg@10 | B_full | supported | "
            "D1: +30.0% (5 of 10), D2: +30.0% (5 of 10) |") in readme
    assert "(10 runs so far, 10 still to run;" in readme
    plan["queue"][0]["seeds"] = list(range(5))  # the runs there are the whole plan
    write_page(plan, root)
    assert "(all 10 runs of the plan;" in (root / "README.md").read_text()
    assert "The whole plan has run." in (root / "RESULTS.md").read_text()


def test_an_earlier_runner_s_runs_are_found_whatever_the_arm_s_name(tmp_path):
    """A pid file ``<setting>_<arm>_seed<S>.pid`` names its run even when the arm's name has underscores."""
    from claim import _earlier_runs

    (tmp_path / "sparse_BF_lm_reads_table_seed3.pid").write_text("123")
    (tmp_path / "cold_D2_seed0.pid").write_text("456")
    found = sorted(_earlier_runs(tmp_path, active={("cold", "D2", 0): 456}))
    assert found == [(("sparse", "BF_lm_reads_table", 3), 123)]


def test_a_setting_name_with_an_underscore_is_refused(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.read_text().replace("  sparse:          #", "  very_sparse:     #", 1))
    with pytest.raises(ValueError, match="setting names may not contain '_'"):
        load_plan(str(plan))


def test_a_question_on_an_unknown_setting_is_refused(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.read_text().replace("    setting: cold\n    metric: new_item_catalogue_ndcg@10",
                                             "    setting: colde\n    metric: new_item_catalogue_ndcg@10", 1))
    with pytest.raises(ValueError, match="exploratory entry 'the co-trained LM placing new items in the whole "
                                         "catalogue' names unknown setting 'colde'"):
        load_plan(str(plan))
