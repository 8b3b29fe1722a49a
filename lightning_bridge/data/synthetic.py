"""Synthetic interactions with planted latent factors and item text that reveals them."""

from __future__ import annotations

import numpy as np

from lightning_bridge.data.sources import RawData

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "thriller", "western", "musical",
          "documentary", "fantasy", "mystery")


def synthetic_raw(num_users: int = 200, num_items: int = 100, num_factors: int = 4, min_interactions: int = 5,
                  max_interactions: int = 20, seed: int = 0) -> RawData:
    """Users pick items with probability proportional to ``exp(3 * cosine(user, item))`` over planted
    non-negative factors; each item's text names its two strongest factors as genres, so text carries
    real signal about behaviour."""
    if not 1 <= num_factors <= len(GENRES):
        raise ValueError(f"num_factors must be in 1..{len(GENRES)}, got {num_factors}")
    if not 3 <= min_interactions <= max_interactions < num_items:
        raise ValueError("need 3 <= min_interactions <= max_interactions < num_items, got "
                         f"{min_interactions}, {max_interactions}, {num_items}")
    rng = np.random.default_rng(seed)
    user_f = rng.gamma(0.5, size=(num_users, num_factors))
    item_f = rng.gamma(0.5, size=(num_items, num_factors))
    user_f /= np.linalg.norm(user_f, axis=1, keepdims=True) + 1e-9
    item_f /= np.linalg.norm(item_f, axis=1, keepdims=True) + 1e-9
    logits = 3.0 * user_f @ item_f.T
    # Gumbel top-k: sampling without replacement in proportion to exp(logits), vectorised over users.
    keys = logits + rng.gumbel(size=logits.shape)
    ranked = np.argsort(-keys, axis=1)
    counts = rng.integers(min_interactions, max_interactions + 1, size=num_users)
    users = np.repeat(np.arange(num_users), counts)
    items = np.concatenate([ranked[u, :c] for u, c in enumerate(counts)])
    timestamps = rng.permutation(len(users)).astype(np.int64)
    top = np.argsort(-item_f, axis=1)[:, :2]
    item_text = {str(i): f"item {i}; genres: " + ", ".join(GENRES[f] for f in top[i]) for i in range(num_items)}
    return RawData(users=users.astype(str), items=items.astype(str),
                   ratings=np.ones(len(users), dtype=np.float32), timestamps=timestamps,
                   item_text=item_text, item_titles={str(i): f"item {i}" for i in range(num_items)},
                   user_text={}, source=f"synthetic(seed={seed})")
