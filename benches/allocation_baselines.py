"""Allocation methods vipfast is measured against, written from their published descriptions.

All take a problem as costs: either `weights` [Q] with a shared curve phi(lo..hi) (cost_q(n) =
w_q phi(n)) or a per-prompt table [Q, hi-lo+1], and return int64 counts [Q] summing to `budget`.

- `relaxed_bisection`: the VIP paper's recipe for rloo. Bisection on the multiplier of the
  continuous relaxation n_q = clamp(1 + sqrt(w_q / lambda), lo, hi), vectorised in numpy, then
  the leftover units placed greedily by marginal gain.
- `threshold_bisection`: the same idea for any convex costs: bisection on the multiplier of the
  integer count #{n : gain_q(n) > lambda}, vectorised in numpy, then the leftover units by gain.
- `heap_greedy`: CoBA-RL's allocator (arXiv 2602.03048): every unit in turn goes to the prompt
  whose next unit has the largest marginal gain, kept in a binary heap; O(B log Q).
- `knapsack_dp`: Knapsack-RL's solver (arXiv 2509.25849): each prompt is a group of items (one per
  possible count, weight = count) in a knapsack of capacity B; dynamic programming over prompts and
  budget, O(Q * B * (hi - lo + 1)), with back-pointers to recover the counts.
- `slsqp_relaxed`: scipy's SLSQP on the rloo relaxation (as the published VIP code solves it), then
  the same greedy rounding.
"""

from __future__ import annotations

import heapq

import numpy as np


def cost_table(weights, curve) -> np.ndarray:
    """[Q, m+1] costs from a shared curve and weights, or a per-prompt table as given."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim == 2:
        return curve if weights is None else np.asarray(weights, dtype=np.float64)[:, None] * curve
    return np.asarray(weights, dtype=np.float64)[:, None] * curve[None, :]


def _place_leftover(gains: np.ndarray, counts: np.ndarray, units: int) -> np.ndarray:
    """Add `units` more units, in rounds of at most one per prompt, to the largest next gains."""
    q, m = gains.shape
    while units > 0:
        next_gain = np.where(counts < m, gains[np.arange(q), np.minimum(counts, m - 1)], -np.inf)
        take = min(units, int(np.count_nonzero(counts < m)))
        counts[np.argpartition(-next_gain, take - 1)[:take]] += 1
        units -= take
    return counts


def relaxed_bisection(weights, budget, lo, hi, iterations=60) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    lam_lo, lam_hi = 1e-300, max(float(weights.max(initial=0.0)), 1e-300)
    relaxed = lambda lam: np.clip(1.0 + np.sqrt(weights / lam), lo, hi)  # noqa: E731
    for _ in range(iterations):
        mid = np.sqrt(lam_lo) * np.sqrt(lam_hi)
        if relaxed(mid).sum() > budget:
            lam_lo = mid
        else:
            lam_hi = mid
    counts = np.clip(np.floor(relaxed(lam_hi) + 1e-9).astype(np.int64), lo, hi)
    n = np.arange(lo, hi, dtype=np.float64)
    gains = weights[:, None] / ((n - 1.0) * n)[None, :]
    return lo + _place_leftover(gains, counts - lo, int(budget - counts.sum()))


def threshold_bisection(costs: np.ndarray, budget, lo, iterations=100) -> np.ndarray:
    gains = costs[:, :-1] - costs[:, 1:]  # [Q, m], non-increasing along each row
    gains = np.minimum.accumulate(gains, axis=1)
    units = budget - lo * len(costs)
    lam_lo, lam_hi = float(gains.min(initial=0.0)) - 1.0, float(gains.max(initial=0.0))
    for _ in range(iterations):  # invariant: count(lam_hi) <= units < count(lam_lo)
        mid = 0.5 * (lam_lo + lam_hi)
        if (gains > mid).sum() > units:
            lam_lo = mid
        else:
            lam_hi = mid
    counts = (gains > lam_hi).sum(axis=1)
    return lo + _place_leftover(gains, counts, int(units - counts.sum()))


def heap_greedy(costs: np.ndarray, budget, lo) -> np.ndarray:
    q, width = costs.shape
    gains = (costs[:, :-1] - costs[:, 1:]).tolist()
    counts = [0] * q
    heap = [(-gains[i][0], i) for i in range(q) if width > 1]
    heapq.heapify(heap)
    for _ in range(budget - lo * q):
        _, i = heapq.heappop(heap)
        counts[i] += 1
        if counts[i] < width - 1:
            heapq.heappush(heap, (-gains[i][counts[i]], i))
    return lo + np.asarray(counts, dtype=np.int64)


def knapsack_dp(costs: np.ndarray, budget, lo) -> np.ndarray:
    q, width = costs.shape
    spare = budget - lo * q
    best = np.full(spare + 1, np.inf)  # best[b]: least cost of the prompts so far using b spare units
    best[0] = 0.0
    choice = np.zeros((q, spare + 1), dtype=np.int32)
    for i, row in enumerate(costs):
        candidates = np.full((width, spare + 1), np.inf)
        for k in range(min(width, spare + 1)):
            candidates[k, k:] = best[: spare + 1 - k] + row[k]
        choice[i] = np.argmin(candidates, axis=0)
        best = candidates[choice[i], np.arange(spare + 1)]
    counts = np.empty(q, dtype=np.int64)
    left = spare
    for i in range(q - 1, -1, -1):
        counts[i] = choice[i, left]
        left -= counts[i]
    return lo + counts


def slsqp_relaxed(weights, budget, lo, hi) -> np.ndarray:
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
    counts = np.clip(np.floor(result.x + 1e-9).astype(np.int64), lo, hi)
    n = np.arange(lo, hi, dtype=np.float64)
    gains = weights[:, None] / ((n - 1.0) * n)[None, :]
    return lo + _place_leftover(gains, counts - lo, int(budget - counts.sum()))
