"""What many tests build: a small co-training module that trains in seconds on a CPU, and the CLI driven
in-process as the shell would run it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lightning_bridge.cli import main
from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.co_training.settings import ColdStart, Knowledge, Schedule, WarmStart
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lm import LMModule

NUM_USERS, NUM_ITEMS = 40, 30
# the settings the co-training tests were written for: four domain steps per LM step, no clipping, no warm
# start, no text anchor (each test turns on what it tests)
TINY_GROUPS = {"schedule": Schedule(domain_steps=4, lm_steps=1, lm_clip=None), "warm_start": WarmStart(auto=False),
               "knowledge": Knowledge(text_anchor_weight=0.0), "cold_start": ColdStart()}


def tiny_bridge(domain: dict[str, Any] | None = None, lm: dict[str, Any] | None = None, *,
                num_users: int = NUM_USERS, num_items: int = NUM_ITEMS, **options: Any) -> BridgeModule:
    """A BridgeModule over 8-wide shared tables: MF (or ``domain``'s settings) and a random 2-layer decoder
    (or ``lm``'s settings); ``options`` are the bridge's own, a settings group as a dict of the fields that
    differ from ``TINY_GROUPS``."""
    domain_settings = {"encoder": "mf", **(domain or {})}
    lm_settings = {"backbone": "tiny-decoder", "max_length": 160, **(lm or {})}
    groups = {name: replace(group, **options.pop(name, {})) for name, group in TINY_GROUPS.items()}
    return BridgeModule(num_users, num_items, **{"embedding_dim": 8, **groups, **options},
                        domain=lambda u, i, **kw: DomainModule(u, i, **domain_settings, **kw),
                        lm=lambda u, i, **kw: LMModule(u, i, **lm_settings, **kw))


def cli(*args: str) -> tuple[int, str]:
    """Runs ``main.py`` in-process: (the exit status the shell would see, the error message)."""
    try:
        main(list(args))
    except SystemExit as exit_:
        return (exit_.code if isinstance(exit_.code, int) else 1), str(exit_)
    except Exception as err:  # an uncaught exception ends python with status 1
        return 1, f"{type(err).__name__}: {err}"
    return 0, ""
