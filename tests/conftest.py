"""Shared fixtures: every test runs in its own folder, so logs and caches never leak between tests."""

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
