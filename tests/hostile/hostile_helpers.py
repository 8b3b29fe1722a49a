"""Shared by the hostile-input tests: the CLI driven in-process as the shell would run it."""

from __future__ import annotations

from pathlib import Path

from lightning_bridge.cli import main
from lightning_bridge.models.domain import DomainModule

CONFIGS = Path(__file__).parents[1] / "configs"

TINY = str(CONFIGS / "tiny_domain.yaml")
TINY_LM = str(CONFIGS / "tiny_lm.yaml")
TINY_BRIDGE = str(CONFIGS / "tiny_bridge.yaml")


def cli(*args: str) -> tuple[int, str]:
    """Runs ``main.py`` in-process: (the exit status the shell would see, the error message)."""
    try:
        main(list(args))
    except SystemExit as exit_:
        return (exit_.code if isinstance(exit_.code, int) else 1), str(exit_)
    except Exception as err:  # an uncaught exception ends python with status 1
        return 1, f"{type(err).__name__}: {err}"
    return 0, ""



class OwnDomainModule(DomainModule):
    """A user's own model (``hostile_helpers.OwnDomainModule``): the same maths under another class path."""
