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
