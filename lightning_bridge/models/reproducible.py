"""Randomness tied to the training step, so a resumed run draws exactly what an uninterrupted one does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def step_random_state(step: int, device: torch.device) -> Iterator[None]:
    """Seeds torch's RNG (dropout, LoRA dropout) from the run's seed and ``step`` inside the block, and
    restores the caller's RNG state afterwards.

    Lightning's checkpoints do not hold the RNG state, and data loaders and sanity checks consume random
    numbers in different amounts on a resumed run; seeding per step makes training randomness independent
    of all of that.
    """
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed * 1_000_003 + step)
        yield
