"""The export folder explains itself: a model card, relative paths only, readable files, the encoder's keys."""

import json
import stat
from importlib.metadata import version

import pytest
from conftest import CONFIGS, fit_in_own_folder

import lightning_bridge
from lightning_bridge import load_recommender


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
