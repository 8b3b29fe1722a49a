"""Co-training's settings, grouped by what they turn. The defaults are the shipped recipe (configs/ml100k.yaml),
so a config states only what differs for its dataset.

The groups are frozen dataclasses: LightningCLI reads them as nested YAML sections and shows each field's
doc in ``--help``. Checkpoints keep them as plain dicts (``torch.load(weights_only=True)`` reads no classes),
and :func:`as_group` turns such a dict back into its group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar


@dataclass(frozen=True)
class Schedule:
    """Which model takes the next optimizer step, and how far a step may go.

    Args:
        domain_steps: domain optimizer steps per cycle of the schedule.
        lm_steps: LM optimizer steps per cycle.
        domain_clip: gradient-norm clip for domain steps (None: no clipping).
        lm_clip: gradient-norm clip for LM steps (None: no clipping).
    """

    domain_steps: int = 2
    lm_steps: int = 1
    domain_clip: float | None = None
    lm_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.domain_steps < 0 or self.lm_steps < 0 or self.domain_steps + self.lm_steps == 0:
            raise ValueError("model.schedule.domain_steps and model.schedule.lm_steps must be >= 0 and not both 0, "
                             f"got {self.domain_steps}, {self.lm_steps}")


@dataclass(frozen=True)
class WarmStart:
    """Where co-training starts: the domain model trained alone first, or a domain-only run's checkpoint.

    Args:
        auto: before co-training, train the domain model alone with early stopping on its own validation
            NDCG@10 and start from its best epoch (counted in its own epochs, so it transfers across datasets).
        checkpoint: a DomainModule checkpoint whose InfoSharing and encoder start co-training (needs auto false).
        max_epochs: most domain-only epochs of the automatic warm start.
        patience: validations without improvement that end the automatic warm start.
        val_every: domain-only epochs between two validations of the automatic warm start.
    """

    auto: bool = True
    checkpoint: str | None = None
    max_epochs: int = 300
    patience: int = 10
    val_every: int = 5

    def __post_init__(self) -> None:
        for name in ("max_epochs", "patience", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.warm_start.{name} must be at least 1, got {getattr(self, name)}")
        if self.auto and self.checkpoint:
            raise ValueError("model.warm_start.auto and model.warm_start.checkpoint exclude each other: set auto "
                             "false to start from a checkpoint")


@dataclass(frozen=True)
class Knowledge:
    """How what the LM reads in the item texts reaches the shared item table.

    Args:
        text_anchor_weight: on domain steps, the LM's item_text task replayed with its text representations
            held fixed, so every item row keeps following its text while BPR trains (0: off).
        text_anchor_refresh_epochs: also re-encode the whole catalogue for the text anchor every that many
            epochs (None: only when co-training starts; LM steps refresh the items they read).
        text_channel: every item vector becomes its ID row plus a learned map of the LM's representation of
            its text, re-encoded every epoch, so knowledge reaches rare and new items directly.
        text_channel_refit: at each re-encoding, fit the channel's map again so that the text parts of the items
            with training interactions stay as they were, and the LM's new reading moves the others' (a claim
            benchmark variant of B-full: bench/RESULTS.md).
    """

    text_anchor_weight: float = 1.0
    text_anchor_refresh_epochs: int | None = None
    text_channel: bool = False
    text_channel_refit: bool = False

    def __post_init__(self) -> None:
        if self.text_anchor_weight < 0:
            raise ValueError(f"model.knowledge.text_anchor_weight must be >= 0, got {self.text_anchor_weight}")
        if (self.text_anchor_refresh_epochs or 1) < 1:  # 0 means never, as None does
            raise ValueError("model.knowledge.text_anchor_refresh_epochs must be at least 1, got "
                             f"{self.text_anchor_refresh_epochs}")
        if self.text_channel_refit and not self.text_channel:
            raise ValueError("model.knowledge.text_channel_refit=true refits the text channel: it needs "
                             "model.knowledge.text_channel=true")


@dataclass(frozen=True)
class ColdStart:
    """Training for new items, which have no interactions and are ranked from their text alone.

    Args:
        item_id_dropout: with the text channel, the rate at which a training pass reads a seen item's vector
            from its text part alone (DropoutNet), so that part learns to score items by itself (0: off).
    """

    item_id_dropout: float = 0.0


Group = TypeVar("Group", Schedule, WarmStart, Knowledge, ColdStart)


def as_group(kind: type[Group], value: Group | dict[str, Any]) -> Group:
    """A group as given, or built from the plain dict a checkpoint's hyperparameters hold."""
    return value if isinstance(value, kind) else kind(**value)
