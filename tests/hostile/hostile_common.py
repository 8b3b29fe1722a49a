"""Shared by the hostile-input tests: the tiny configs, and a model class of a user's own."""

from __future__ import annotations

from pathlib import Path

from lightning_bridge.models.domain import DomainModule

CONFIGS = Path(__file__).parents[1] / "configs"

TINY = str(CONFIGS / "tiny_domain.yaml")
TINY_LM = str(CONFIGS / "tiny_lm.yaml")
TINY_BRIDGE = str(CONFIGS / "tiny_bridge.yaml")


class OwnDomainModule(DomainModule):
    """A user's own model (``hostile_common.OwnDomainModule``): the same maths under another class path."""
