"""The statistics of the claim benchmark's results page, with numpy and the standard library only (the tests
check them against scipy on known inputs).

- ``paired_t``: the paired t-test over seeds (two-sided).
- ``wilcoxon``: the Wilcoxon signed-rank test over seeds (two-sided; exact without ties, normal otherwise).
- ``paired_bootstrap``: a percentile interval of the treatment's gain over the control, resampling users
  within each seed (the same users for both arms) and pooling the seeds.
- ``holm``: Holm's step-down correction of a family of p-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def paired_t(treatment: Sequence[float], control: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (NaN with fewer than 2 pairs; 1 when every difference is 0)."""
    d = np.asarray(treatment, float) - np.asarray(control, float)
    n = len(d)
    if n < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(n))
    dof = n - 1
    return _regularized_beta(dof / (dof + t * t), dof / 2, 0.5)


def wilcoxon(treatment: Sequence[float], control: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test; zero differences are dropped (scipy's default).
    Exact when the absolute differences have no ties, else the normal approximation with tie correction."""
    d = np.asarray(treatment, float) - np.asarray(control, float)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return float("nan")
    magnitude = np.abs(d)
    ranks = _average_ranks(magnitude)
    r_plus = float(ranks[d > 0].sum())
    if len(np.unique(magnitude)) == n:  # integer ranks 1..n: count the subsets of each rank sum
        counts = np.zeros(n * (n + 1) // 2 + 1)
        counts[0] = 1
        for rank in range(1, n + 1):
            counts[rank:] = counts[rank:] + counts[:-rank].copy()
        probability = counts / counts.sum()
        w = round(r_plus)
        return float(min(1.0, 2 * min(probability[: w + 1].sum(), probability[w:].sum())))
    mean = n * (n + 1) / 4
    _, tie_sizes = np.unique(magnitude, return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - (tie_sizes**3 - tie_sizes).sum() / 48
    z = (r_plus - mean) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def paired_bootstrap(treatment: Sequence[np.ndarray], control: Sequence[np.ndarray], samples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float, float]:
    """(low, high) of the 95% interval of the mean gain and (low, high) of the relative gain (gain over the
    control's mean). ``treatment[i]`` and ``control[i]`` are seed i's per-user values, the same users in the
    same order; each bootstrap sample redraws each seed's users with replacement and averages over seeds."""
    rng = np.random.default_rng(seed)
    gains, relative = np.empty(samples), np.empty(samples)
    for b in range(samples):
        t_means, c_means = [], []
        for t, c in zip(treatment, control, strict=True):
            pick = rng.integers(0, len(t), len(t))
            t_means.append(t[pick].mean())
            c_means.append(c[pick].mean())
        gains[b] = np.mean(t_means) - np.mean(c_means)
        relative[b] = gains[b] / np.mean(c_means) if np.mean(c_means) > 0 else float("nan")
    low, high = np.percentile(gains, [2.5, 97.5])
    rel_low, rel_high = np.nanpercentile(relative, [2.5, 97.5]) if np.isfinite(relative).any() else (np.nan,) * 2
    return float(low), float(high), float(rel_low), float(rel_high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order (NaN stays NaN and does not count in the family)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (len(indexed) - rank) * p))
        adjusted[i] = running
    return adjusted


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (modified Lentz), using the symmetry that makes it converge."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _regularized_beta(1 - x, b, a)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f / a
