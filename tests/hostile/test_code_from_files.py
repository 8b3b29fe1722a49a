"""No file chooses which code runs: a checkpoint, an export folder or a run's saved config that names a class
of a module planted beside the working folder is refused, naming the file and the class path, and the
planted module is never imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from builders import cli
from hostile_common import TINY

from lightning_bridge.run.class_registry import (
    UnregisteredClassError,
    check_class_paths,
    register_class,
    registered_classes,
)
from lightning_bridge.serving.export import main as export_main
from lightning_bridge.serving.recommender import load_recommender

EVIL = "evilmod.Model"


@pytest.fixture
def planted(in_tmp, monkeypatch) -> Path:
    """``evilmod.py`` in the working folder, which is first on ``sys.path`` (as ``python -m`` puts it); it
    writes ``PWNED`` when imported. Returns the marker's path."""
    (in_tmp / "evilmod.py").write_text('open("PWNED", "w").write("ran")\nclass Model:\n    pass\n')
    monkeypatch.syspath_prepend(str(in_tmp))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    return in_tmp / "PWNED"


def _never_ran(marker: Path) -> bool:
    return not marker.exists() and "evilmod" not in sys.modules


def _tampered(run: Path, dest: Path, edit) -> Path:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, dest)
    return dest


EDITS = {
    "model_config": lambda c: c["model_config"].update(class_path=EVIL),
    "hyper_parameters": lambda c: c["hyper_parameters"].update(_class_path=EVIL),
    "optimizer_class": lambda c: c["model_config"]["init_args"]["optimizer"].update(class_path=EVIL),
    "optimizer_as_a_name": lambda c: c["model_config"]["init_args"].update(optimizer=EVIL),
    "data_module": lambda c: c["datamodule_hyper_parameters"].update(_class_path=EVIL),
}


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict", "fit"])
@pytest.mark.parametrize("where", list(EDITS))
def test_cli_refuses_a_checkpoint_naming_a_planted_class(planted, run_copy, subcommand, where):
    evil = _tampered(run_copy, run_copy.parent.parent / "evil.ckpt", EDITS[where])
    status, message = cli(subcommand, "--config", str(run_copy / "config.yaml"), "--ckpt_path", str(evil),
                          "--trainer.max_epochs", "5")
    assert status == 1
    assert f"UnregisteredClassError: {evil}: names the class {EVIL!r}, which is not one of the classes" in message
    assert _never_ran(planted)


def test_export_artefacts_in_a_planted_folder_runs_nothing(planted, run_copy, in_tmp):
    """The issue's reproduction: ``python -m`` puts the working folder first on sys.path."""
    _tampered(run_copy, in_tmp / "shared.ckpt", EDITS["model_config"])
    result = subprocess.run([sys.executable, "-m", "lightning_bridge.serving.export", "artefacts", "shared.ckpt",
                             "--out", "out"], cwd=in_tmp, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "shared.ckpt: names the class 'evilmod.Model'" in result.stderr.strip().splitlines()[-1]
    assert not planted.exists() and not (in_tmp / "out").exists()


@pytest.mark.parametrize("where", ["model_config", "data_module"])
def test_export_commands_refuse_a_planted_class(planted, run_copy, in_tmp, where):
    evil = _tampered(run_copy, in_tmp / "evil.ckpt", EDITS[where])
    for command in (["artefacts", str(evil), "--out", str(in_tmp / "out")], ["domain", str(evil), "d.ckpt"]):
        with pytest.raises(UnregisteredClassError, match=rf"^{evil}: names the class 'evilmod.Model'"):
            export_main(command)
    assert _never_ran(planted) and not (in_tmp / "out").exists() and not (in_tmp / "d.ckpt").exists()


@pytest.mark.parametrize("flag", ["--config", "-c", "--config="])
def test_a_run_folders_saved_config_naming_a_planted_class_is_refused(planted, run_copy, flag):
    config = run_copy / "config.yaml"
    saved = yaml.safe_load(config.read_text())
    saved["model"]["class_path"] = EVIL
    config.write_text(yaml.safe_dump(saved))
    given = [f"{flag}{config}"] if flag.endswith("=") else [flag, str(config)]
    status, message = cli("test", *given, "--ckpt_path", str(run_copy / "checkpoints" / "last.ckpt"))
    assert status == 1 and f"{config} (a config saved by a run;" in message and f"names the class {EVIL!r}" in message
    assert _never_ran(planted)


def test_an_export_folder_naming_an_unknown_encoder_is_refused(planted, run_copy):
    spec_file = run_copy / "export" / "recommender.json"
    (run_copy / "export" / "manifest.json").unlink()  # else the edit is caught as a changed file first
    spec = json.loads(spec_file.read_text())
    spec["domain"]["encoder"] = EVIL
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=rf"^{spec_file}: domain.encoder: 'evilmod.Model', expected one of "):
        load_recommender(run_copy / "export")
    assert _never_ran(planted)


def test_an_export_tokenizer_with_remote_code_is_never_run(planted, in_tmp):
    """A tokenizer folder whose config maps to code in the folder (``auto_map``) is refused by transformers
    when remote code is not trusted, which the LM loader never does."""
    from transformers import AutoTokenizer

    folder = in_tmp / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evilmod.Model", None]}}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    assert _never_ran(planted)


def test_a_class_of_ones_own_is_allowed_once_registered(monkeypatch):
    class Mine:
        pass

    path = f"{Mine.__module__}.{Mine.__qualname__}"
    assert path not in registered_classes()
    monkeypatch.setattr("lightning_bridge.run.class_registry._REGISTERED", {})
    register_class(Mine)
    assert registered_classes()[path] is Mine


def test_every_class_a_shipped_config_names_is_registered():
    """So that the saved config of any run made from them can be resumed and tested."""
    root = Path(__file__).parents[2]
    configs = sorted([*root.glob("configs/**/*.yaml"), *root.glob("tests/configs/*.yaml")])
    assert len(configs) > 10
    for config in configs:
        check_class_paths(yaml.safe_load(config.read_text()), str(config))


def test_a_model_class_of_ones_own_named_by_ones_config_loads_its_checkpoints(in_tmp, monkeypatch):
    """The user's own config imported the class already: its checkpoint naming it chooses no new code."""
    monkeypatch.setattr("lightning_bridge.run.class_registry._REGISTERED", {})
    own = ("--model", "hostile_common.OwnDomainModule")
    assert cli("fit", "--config", TINY, *own, "--trainer.max_epochs", "1") == (0, "")
    checkpoint = in_tmp / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["hyper_parameters"]["_class_path"] == \
        "hostile_common.OwnDomainModule"
    monkeypatch.setattr("lightning_bridge.run.class_registry._REGISTERED", {})
    assert cli("test", "--config", TINY, *own, "--ckpt_path", str(checkpoint)) == (0, "")
    monkeypatch.setattr("lightning_bridge.run.class_registry._REGISTERED", {})
    status, message = cli("test", "--config", TINY, "--ckpt_path", str(checkpoint))
    assert status == 1 and "names the class 'hostile_common.OwnDomainModule', which is not one of" in message


@pytest.mark.parametrize("config", [
    {"init_args": {"domain": EVIL}}, {"init_args": {"lm": EVIL}}, {"init_args": {"scheduler": EVIL}},
    {"init_args": {"domain": {"class_path": "lightning_bridge.models.domain.DomainModule",
                              "init_args": {"optimizer": {"class_path": EVIL}}}}},
], ids=["domain_as_a_name", "lm_as_a_name", "scheduler_as_a_name", "nested_optimizer"])
def test_a_class_given_as_a_name_in_a_callable_setting_is_refused(config):
    with pytest.raises(UnregisteredClassError, match=r"^x.ckpt: names the class 'evilmod.Model'"):
        check_class_paths(config, "x.ckpt")
