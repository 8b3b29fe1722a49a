"""The groups of users the metrics are reported for beside everyone: the sparsest fifth of users, the fifth
whose target is rarest in training and, under the item cold-start protocol, the users whose target is new."""

from __future__ import annotations

import math

import numpy as np


def lowest_fifth(users: np.ndarray, values: np.ndarray, num_users: int) -> np.ndarray:
    """Mask over all users of the fifth of ``users`` with the lowest ``values`` (ties by user id)."""
    order = np.lexsort((users, values))
    mask = np.zeros(num_users, dtype=bool)
    mask[users[order[: math.ceil(0.2 * len(users))]]] = True
    return mask


def report_groups(users: np.ndarray, targets: list[np.ndarray], sparse_users: np.ndarray,
                  popularity: np.ndarray, new_items: np.ndarray) -> dict[str, np.ndarray]:
    """Masks over all users of the groups reported beside the overall metrics for the evaluated ``users``
    and their ``targets``: ``sparse`` (given), ``rare`` (by training ``popularity``; a user with several
    targets counts by the rarest of them) and, where ``new_items`` has any, ``new_item``."""
    groups = {"sparse": sparse_users}
    if not any(len(t) for t in targets):  # predict: nothing to group by
        return groups
    rarest = np.array([popularity[t].min() if len(t) else np.iinfo(np.int64).max for t in targets])
    groups["rare"] = lowest_fifth(users, rarest, len(sparse_users))
    if new_items.any():
        groups["new_item"] = np.zeros(len(sparse_users), dtype=bool)
        groups["new_item"][users] = [bool(new_items[t].any()) for t in targets]
    return groups
