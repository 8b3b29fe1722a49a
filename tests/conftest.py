"""Shared fixtures: every test runs in its own folder, so logs and caches never leak between tests."""

import shutil
from pathlib import Path

import pytest

CONFIGS = Path(__file__).parent / "configs"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Runs the test inside tmp_path, with the data cache there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def fit_in_own_folder(tmp_path_factory, name: str, args: list[str]):
    """A CLI ``fit`` in a fresh folder of its own (and HOME there), for a module-scoped fixture whose tests
    only read the run; returns (cli, folder)."""
    from lightning_bridge.cli import main

    folder = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("HOME", str(folder))
        cli = main(["fit", *args])
    return cli, folder


@pytest.fixture(scope="session")
def domain_run(tmp_path_factory) -> Path:
    """A tiny domain-only fit of 4 epochs with its export folder, shared by the tests that only read it or
    tamper with a copy (``run_copy``): ``<root>/elsewhere/run/version_0``."""
    from lightning_bridge.cli import main

    root = tmp_path_factory.mktemp("domain_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("HOME", str(root))
        main(["fit", "--config", str(CONFIGS / "tiny_domain.yaml"), "--trainer.max_epochs", "4",
              "--trainer.default_root_dir", str(root / "elsewhere")])
    return root / "elsewhere" / "run" / "version_0"


@pytest.fixture
def run_copy(domain_run, in_tmp) -> Path:
    """A copy of ``domain_run`` (its whole log root) inside the test's own folder, to tamper with."""
    shutil.copytree(domain_run.parent.parent, in_tmp / "root")
    return in_tmp / "root" / "run" / "version_0"
