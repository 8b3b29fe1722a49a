"""Fixtures of the hostile-input tests: one tiny domain-only run whose files the tests copy and tamper with
(never change in place)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hostile_helpers import TINY, cli


@pytest.fixture(scope="session")
def domain_run(tmp_path_factory) -> Path:
    """A tiny domain-only fit of 4 epochs with its export folder: ``<root>/run/version_0``."""
    root = tmp_path_factory.mktemp("hostile_domain")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("HOME", str(root))
        status, message = cli("fit", "--config", TINY, "--trainer.max_epochs", "4",
                              "--trainer.default_root_dir", str(root / "elsewhere"))
    assert status == 0, message
    return root / "elsewhere" / "run" / "version_0"


@pytest.fixture
def run_copy(domain_run, in_tmp) -> Path:
    """A copy of ``domain_run`` (its whole log root) inside the test's own folder."""
    shutil.copytree(domain_run.parent.parent, in_tmp / "root")
    return in_tmp / "root" / "run" / "version_0"
