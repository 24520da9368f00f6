"""Allocation baselines that vipfast is measured against (benchmarks and `vipfast bench`).

- `bisection_allocate`: the paper's recipe, vectorised numpy bisection on the multiplier of the
  continuous rloo relaxation, then greedy rounding of the leftover units.
- `slsqp_allocate`: scipy SLSQP on the relaxation, as the published VIP code runs it, then
  the same rounding.
- `heap_greedy_allocate`: unit-by-unit greedy with a heap, O(B log Q).
"""

from __future__ import annotations

import heapq

import numpy as np


def _rloo_counts(weights, lam, lo, hi):
    return np.clip(1.0 + np.sqrt(weights / lam), lo, hi)


def _round_greedily(weights, relaxed, budget, lo, hi):
    counts = np.floor(relaxed + 1e-9).astype(np.int64)
    counts = np.clip(counts, lo, hi)
    leftover = int(budget - counts.sum())
    gain = weights / ((counts - 1.0) * counts)
    gain[counts >= hi] = -np.inf
    if leftover > 0:
        counts[np.argpartition(-gain, leftover - 1)[:leftover]] += 1
    return counts


def bisection_allocate(weights, budget, lo, hi, iterations=60):
    weights = np.asarray(weights, dtype=np.float64)
    lam_lo, lam_hi = 1e-300, max(float(weights.max(initial=0.0)), 1e-300)
    for _ in range(iterations):
        mid = np.sqrt(lam_lo) * np.sqrt(lam_hi)
        if _rloo_counts(weights, mid, lo, hi).sum() > budget:
            lam_lo = mid
        else:
            lam_hi = mid
    return _round_greedily(weights, _rloo_counts(weights, lam_hi, lo, hi), budget, lo, hi)


def slsqp_allocate(weights, budget, lo, hi):
    from scipy.optimize import minimize

    weights = np.asarray(weights, dtype=np.float64)
    q = len(weights)
    result = minimize(
        lambda n: float(np.sum(weights / (n - 1.0))),
        x0=np.full(q, budget / q),
        jac=lambda n: -weights / (n - 1.0) ** 2,
        bounds=[(lo, hi)] * q,
        constraints=[{"type": "eq", "fun": lambda n: n.sum() - budget, "jac": lambda n: np.ones_like(n)}],
        method="SLSQP",
    )
    return _round_greedily(weights, result.x, budget, lo, hi)


def heap_greedy_allocate(weights, budget, lo, hi):
    counts = [lo] * len(weights)
    heap = [(-w / ((lo - 1.0) * lo), q) for q, w in enumerate(weights) if hi > lo]
    heapq.heapify(heap)
    for _ in range(budget - lo * len(weights)):
        _, q = heapq.heappop(heap)
        counts[q] += 1
        n = counts[q]
        if n < hi:
            heapq.heappush(heap, (-weights[q] / ((n - 1.0) * n), q))
    return np.asarray(counts, dtype=np.int64)
