"""Independent float64 references for the allocation problem (no vipfast code inside)."""

from __future__ import annotations

import heapq
import itertools
from fractions import Fraction

import numpy as np


def estimator_curve(estimator: str, lo: int, hi: int) -> np.ndarray:
    """phi(lo..hi): 1/(n-1) for rloo, (n-1)/n^2 for drgrpo and grpo (the paper's variance curves)."""
    n = np.arange(lo, hi + 1, dtype=np.float64)
    if estimator == "rloo":
        return 1.0 / (n - 1.0)
    return (n - 1.0) / n**2


def cost_table(weights, curve) -> np.ndarray:
    """[Q, m+1] costs w_q * phi(n) (shared 1-D curve) or w_q * curve[q, n] (2-D)."""
    curve = np.asarray(curve, dtype=np.float64)
    weights = np.ones(curve.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    return weights[:, None] * (curve[None, :] if curve.ndim == 1 else curve)


def objective(costs: np.ndarray, counts: np.ndarray, lo: int) -> float:
    return float(costs[np.arange(len(counts)), np.asarray(counts) - lo].sum())


def brute_force_optimum(costs: np.ndarray, budget: int, lo: int) -> float:
    """Minimum over every feasible count vector (small Q and ranges only)."""
    q, width = costs.shape
    best = np.inf
    for offsets in itertools.product(range(width), repeat=q):
        if sum(offsets) + q * lo == budget:
            best = min(best, float(sum(costs[i, k] for i, k in enumerate(offsets))))
    return best


def dynamic_programming_optimum(costs: np.ndarray, budget: int, lo: int) -> float:
    """Exact minimum by DP over prompts and units spent: O(Q * R * m)."""
    q, width = costs.shape
    spare = budget - q * lo
    best = np.full(spare + 1, np.inf)
    best[0] = 0.0
    for row in costs:
        nxt = np.full(spare + 1, np.inf)
        for k in range(min(width, spare + 1)):
            nxt[k:] = np.minimum(nxt[k:], best[: spare + 1 - k] + row[k])
        best = nxt
    return float(best[spare])


def heap_greedy(costs: np.ndarray, budget: int, lo: int) -> np.ndarray:
    """Unit-by-unit greedy on marginal gains; ties to the lower count, then the lower prompt index."""
    q, width = costs.shape
    counts = np.zeros(q, dtype=np.int64)
    heap = [(-(costs[i, 0] - costs[i, 1]), 0, i) for i in range(q) if width > 1]
    heapq.heapify(heap)
    for _ in range(budget - q * lo):
        _, _, i = heapq.heappop(heap)
        counts[i] += 1
        if counts[i] < width - 1:
            heapq.heappush(heap, (-(costs[i, counts[i]] - costs[i, counts[i] + 1]), counts[i], i))
    return counts + lo


def exact_variance(estimator: str, n: int) -> Fraction:
    """phi(n) as an exact rational: 1/(n-1) for rloo, (n-1)/n^2 for drgrpo and grpo."""
    return Fraction(1, n - 1) if estimator == "rloo" else Fraction(n - 1, n * n)


def exchange_gap(weights, counts, estimator: str, lo: int, hi: int) -> float:
    """Certificate of optimality for any budget, in exact arithmetic.

    For a separable convex objective under one sum constraint, counts are optimal iff no unit can
    move between prompts with profit: max_i gain of i's next unit <= min_j gain of j's last unit,
    gain_q(n) = w_q (phi(n) - phi(n+1)). Returns (largest next gain - smallest last gain) / the
    largest gain involved: <= 0 for an exact optimum, tiny positive for float rounding of gains.
    """
    weights = [Fraction(float(w)) for w in weights]
    counts = [int(n) for n in counts]
    gain = lambda w, n: w * (exact_variance(estimator, n) - exact_variance(estimator, n + 1))  # noqa: E731
    next_gains = [gain(w, n) for w, n in zip(weights, counts) if n < hi]
    last_gains = [gain(w, n - 1) for w, n in zip(weights, counts) if n > lo]
    if not next_gains or not last_gains:
        return 0.0
    best_next, worst_last = max(next_gains), min(last_gains)
    scale = max(best_next, worst_last)
    return float((best_next - worst_last) / scale) if scale > 0 else 0.0


def knapsack_value(p: float, n: int) -> Fraction:
    """Knapsack-RL's value (1 - p^n - (1-p)^n) p (1-p)^2, exactly for the float p."""
    p = Fraction(p)
    return (1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2
