"""The claim benchmark's runner end to end on tiny data: every run of a plan in its own process, records and
per-user figures written, the page rendered, and nothing run twice."""

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import claim  # noqa: E402
from claim import command_line  # noqa: E402
from claim_files import load_plan  # noqa: E402

LOGGER = ["--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"]


def _plan(tmp_path: Path) -> Path:
    plan = {
        "results": str(tmp_path / "runs.jsonl"), "per_user": str(tmp_path / "per_user"),
        "runs": str(tmp_path / "runs"), "page": str(tmp_path / "RESULTS.md"),
        "settings": {"tiny": {"args": ["--data.init_args.new_item_fraction", 0.25]}},
        "arms": {
            "D0": {"configs": [str(CONFIGS / "tiny_domain.yaml")], "args": LOGGER, "reports": {"D0": "domain"}},
            "B": {"configs": [str(CONFIGS / "tiny_bridge.yaml")],
                  "args": [*LOGGER, "--model.init_args.warm_start.auto", "true",
                           "--model.init_args.warm_start.val_every", 1, "--model.init_args.warm_start.patience", 1,
                           "--model.init_args.warm_start.max_epochs", 2],
                  "reports": {"B": "domain", "B_lm": "lm", "W": "warm_start"}},
            "C": {"configs": [str(CONFIGS / "tiny_domain.yaml")], "subcommand": "test",
                  "args": [*LOGGER, "--model", "lightning_bridge.models.content.ContentModule",
                           "--model.init_args.backbone", "tiny-encoder"], "reports": {"C": "content"}}},
        "queue": [{"settings": ["tiny"], "arms": ["D0", "B", "C"], "seeds": [0]}],
        "decision_rule": "as the real plan's", "bootstrap_samples": 50,
        "comparisons": [{"name": "B against D0", "setting": "tiny", "metric": "new_item_ndcg@10",
                         "treatment": "B", "controls": ["D0", "W", "C"], "claimed": 0.1}],
        "guard": {"name": "overall", "settings": ["tiny"], "metric": "ndcg@10", "treatment": "B",
                  "control": "D0", "tolerance": -0.02},
    }
    path = tmp_path / "plan.yaml"
    tmp_path.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(plan))
    return path


# Notices a run's log used to carry that say nothing about the run (the runner hides them)
RUNNER_NOISE = ("LightningCLI's args parameter", "Be aware that when using `ckpt_path`", "The dirpath has changed",
                "will override existing callbacks", "ended before the epoch ended")


def _claim(plan: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "bench/claim.py", "--plan", str(plan), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [n for n in RUNNER_NOISE if n in done.stdout + done.stderr], done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_runner_runs_each_pending_run_once_and_renders_the_page(tmp_path):
    plan = _plan(tmp_path)
    output = _claim(plan, "--jobs", "2")
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["arm"] for r in records) == ["B", "C", "D0"]
    bridge = next(r for r in records if r["arm"] == "B")
    assert set(bridge["reports"]) == {"B", "B_lm", "W"}
    assert bridge["steps"]["domain"] + bridge["steps"]["lm"] == bridge["steps"]["global"] > 0
    assert bridge["reports"]["W"]["checkpoint"].startswith("tiny/B/seed0/warm_start/")
    assert {r["device"] for r in records} == {"cpu"}
    for record in records:
        with gzip.open(record["per_user"], "rt", newline="") as f:
            rows = list(csv.DictReader(f))
        for name, report in record["reports"].items():
            mine = [r for r in rows if r["report"] == name]
            assert len(mine) == len({r["user"] for r in mine}) > 0
            mean = sum(float(r["ndcg@10"]) for r in mine) / len(mine)
            assert mean == pytest.approx(report["test"]["ndcg@10"], abs=1e-6)  # the rows behind the figure
    page = (tmp_path / "RESULTS.md").read_text()
    assert "| B against D0 | tiny, new_item_ndcg@10 | B | C | 1 of 1 |" in page
    assert "started" in output
    assert "started" not in _claim(plan, "--jobs", "2")  # everything done: nothing runs again
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 3


def test_an_accelerator_given_to_the_runner_replaces_the_configs_cpu(tmp_path):
    plan = load_plan(str(_plan(tmp_path)))
    run_dir = tmp_path / "runs" / "tiny" / "B" / "seed0"
    assert "--trainer.accelerator" not in command_line(plan, "tiny", "B", 0, run_dir)
    line = command_line(plan, "tiny", "B", 0, run_dir, accelerator="gpu")
    assert line[-4:] == ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]  # after the configs: it wins


def test_a_record_left_by_a_killed_runner_is_collected_not_rerun(tmp_path):
    plan = _plan(tmp_path)
    logs = tmp_path / "runs" / "logs"
    logs.mkdir(parents=True)
    record = {"setting": "tiny", "arm": "D0", "seed": 0, "wall_s": 1.0, "cpu_s": 1.0, "steps": {"global": 1},
              "per_user": str(tmp_path / "per_user.csv.gz"),
              "reports": {"D0": {"test": {"ndcg@10": 0.5}, "best_val": 0.4, "checkpoint": ""}}}
    (logs / "tiny_D0_seed0.log").write_text("training output\n" + json.dumps(record) + "\n")
    (logs / "tiny_D0_seed0.pid").write_text("999999999")  # no such process: that run has ended
    output = _claim(plan, "--jobs", "1", "--limit", "0")
    assert "done tiny D0 0" in output and "started" not in output
    assert json.loads((tmp_path / "runs.jsonl").read_text()) == record
    assert not (logs / "tiny_D0_seed0.pid").exists()


def test_a_run_stopped_with_an_earlier_runner_is_run_again_not_failed(tmp_path):
    plan = _plan(tmp_path)
    logs = tmp_path / "runs" / "logs"
    logs.mkdir(parents=True)
    (logs / "tiny_D0_seed0.log").write_text("training output, then the runner and its runs were killed\n")
    (logs / "tiny_D0_seed0.pid").write_text("999999999")
    output = _claim(plan, "--jobs", "1", "--limit", "1")
    assert "tiny D0 0 stopped with an earlier runner" in output and "FAILED" not in output
    assert "started tiny D0 seed 0" in output
    assert [json.loads(line)["arm"] for line in (tmp_path / "runs.jsonl").read_text().splitlines()] == ["D0"]


def test_a_plan_caught_half_saved_does_not_stop_the_runner(tmp_path, monkeypatch, capsys):
    plan = {**load_plan(str(_plan(tmp_path))), "queue": []}
    reads = iter([plan, yaml.YAMLError("could not find expected ':'")])

    def read(path):
        item = next(reads)
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(claim, "load_plan", read)
    claim.run_queue("plan.yaml", jobs=1, threads=1, limit=None)
    assert "the plan could not be read (could not find expected ':'); going on" in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_run_is_resumed_from_its_last_checkpoint_and_counts_every_attempt(tmp_path):
    """A run stopped after its first co-training epoch, as a kill leaves it, is resumed rather than restarted:
    its record is the uninterrupted run's, and its cost adds the earlier attempt's."""
    whole = json.loads(_claim(_plan(tmp_path / "whole"), "--one", "tiny", "B", "0").splitlines()[-1])
    cut = _plan(tmp_path / "cut")
    plan = load_plan(str(cut))
    run_dir = Path(plan["runs"]) / "tiny" / "B" / "seed0"
    subprocess.run([sys.executable, "main.py", *command_line(plan, "tiny", "B", 0, run_dir),
                    "--trainer.max_epochs", "1"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    first_attempt = set(run_dir.glob("events.out.tfevents.*"))
    (run_dir / "cost").mkdir()
    (run_dir / "cost" / "attempt0.json").write_text(json.dumps({"wall_s": 100.0, "cpu_s": 90.0}))
    resumed = json.loads(_claim(cut, "--one", "tiny", "B", "0").splitlines()[-1])
    assert first_attempt < set(run_dir.glob("events.out.tfevents.*"))  # the same folder, carried on
    assert resumed["attempts"] == 2 and resumed["cpu_s"] > 90.0 and resumed["wall_s"] > 100.0
    for key in ("reports", "steps", "val_history"):
        assert resumed[key] == whole[key], key
