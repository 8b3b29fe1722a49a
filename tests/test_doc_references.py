"""Every ``lightning_bridge`` name that the docs, configs and bench scripts spell out still resolves: a package
regrouping must not leave a manual page, a class_path or a GPU script pointing at a module that moved."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["README.md", "docs/*.md", "bench/README.md", "bench/*.sh", "bench/*.py", "configs/**/*.yaml"]
DOTTED = re.compile(r"(?<![\w/])lightning_bridge(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"from (lightning_bridge(?:\.\w+)*) import (\w+)")


def _references() -> list[tuple[str, str]]:
    found = set()
    for pattern in SOURCES:
        for path in ROOT.glob(pattern):
            text, source = path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))
            found.update((source, name) for name in DOTTED.findall(text)
                         if not name.endswith(".py"))  # a file name such as scores_without_lightning_bridge.py
            found.update((source, f"{module}.{name}") for module, name in FROM_IMPORT.findall(text))
    return sorted(found)


def _resolve(dotted: str) -> object:
    """Imports the longest importable module prefix of ``dotted`` and looks the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def test_the_sources_name_some_references():
    assert len(_references()) > 20  # the patterns still find what they are meant to find


@pytest.mark.parametrize(("source", "name"), _references())
def test_reference_resolves(source, name):
    try:
        _resolve(name)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{source} names {name}, which does not resolve: {error}")
