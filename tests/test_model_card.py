"""The export folder explains itself: a model card, relative paths only, readable files, the encoder's keys."""

import json
import stat
import subprocess
import sys
from importlib.metadata import version

import pytest
import torch
from conftest import CONFIGS, fit_in_own_folder

import lightning_bridge
from lightning_bridge import load_recommender
from lightning_bridge.cli import main


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory):
    return fit_in_own_folder(tmp_path_factory, "card", ["--config", str(CONFIGS / "tiny_bridge.yaml"),
                                                        "--test_after_fit", "true"])


def test_the_export_readme_states_data_metrics_checkpoints_files_and_version(tested_run):
    cli, _ = tested_run
    card = (cli.exported / "README.md").read_text()
    assert card.startswith("# lightgcn (domain model) and tiny-decoder + lora (language model) on synthetic\n")
    assert f"Exported by lightning_bridge {lightning_bridge.__version__} " in card
    assert "- users: 40\n- items: 30\n" in card and "- train / validation / test interactions: 444 / 40 / 40\n" in card
    for side in ("domain", "lm"):
        row = next(line for line in card.splitlines() if line.startswith(f"| {side} | "))
        checkpoint = cli.best_checkpoints[side].split("/")[-1]
        assert row.split(" | ")[1] == f"checkpoints/{checkpoint}"
        assert row.split(" | ")[2] == f"{cli.test_metrics[f'{side}/test/ndcg@10']:.4f}"
    for name in ("recommender.json", "lm/head.safetensors", "lm/adapter", "lm/tokenizer"):
        assert f"| `{name}` | " in card
    assert "| `lm/backbone` |" not in card  # only the files the folder has
    assert "python main.py fit --config <run>/config.yaml" in card
    spec = json.loads((cli.exported / "recommender.json").read_text())
    assert spec["version"] == lightning_bridge.__version__ == version("lightning_bridge")
    assert spec["metrics"]["lm/test/hr@10"] == cli.test_metrics["lm/test/hr@10"]
    assert spec["data"]["name"] == "synthetic" and spec["data"]["seed"] == 42


def test_no_absolute_path_every_file_readable_and_only_the_encoders_keys(tested_run):
    cli, folder = tested_run
    files = [p for p in cli.exported.rglob("*") if p.is_file()]
    assert len(files) >= 12
    for path in files:
        assert str(folder).encode() not in path.read_bytes(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    spec = json.loads((cli.exported / "recommender.json").read_text())
    assert sorted(spec["domain"]) == ["checkpoint", "encoder", "isolated_nodes", "loss", "num_layers"]
    adapter_card = (cli.exported / "lm" / "adapter" / "README.md").read_text()
    assert adapter_card.startswith("---\nbase_model: tiny-decoder\nlibrary_name: peft\n")
    assert list(load_recommender(cli.exported).models) == ["domain", "lm"]  # still loads


def _standalone(export, model: str, users: list[str]) -> torch.Tensor:
    """Runs the export's own scores_without_lightning_bridge.py in a fresh interpreter that never imports
    lightning_bridge, and returns its scores."""
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "assert 'lightning_bridge' not in sys.modules, 'imported lightning_bridge'")
    script = str(export / "scores_without_lightning_bridge.py")
    done = subprocess.run([sys.executable, "-c", code, script, str(export), "--model", model, "--users", *users],
                          capture_output=True, text=True, cwd=export)
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.tensor([json.loads(line) for line in done.stdout.splitlines()])


@pytest.mark.parametrize("encoder", ["lightgcn", "mf"])
def test_domain_scores_without_lightning_bridge(in_tmp, encoder):
    cli = main(["fit", "--config", str(CONFIGS / "tiny_domain.yaml"), "--model.init_args.encoder", encoder,
                "--trainer.max_epochs", "1"])
    users = [cli.datamodule.raw_user_id(u) for u in (0, 5, 17)]
    expected = load_recommender(cli.exported).scores(user_ids=users)
    torch.testing.assert_close(_standalone(cli.exported, "domain", users), expected, atol=1e-5, rtol=1e-5)


def test_lm_scores_without_lightning_bridge(in_tmp):
    # fine-tuned in full, the backbone is in the folder: transformers loads it without a download
    cli = main(["fit", "--config", str(CONFIGS / "tiny_lm.yaml"), "--model.init_args.finetune", "full",
                "--trainer.max_epochs", "1", "--model.init_args.max_length", "100"])  # 2 of 4 items fit
    data = cli.datamodule
    users = [data.raw_user_id(u) for u in (0, 3, 11)]
    expected = load_recommender(cli.exported).scores(user_ids=users)
    torch.testing.assert_close(_standalone(cli.exported, "lm", users), expected, atol=1e-5, rtol=1e-5)
