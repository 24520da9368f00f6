"""Exact rollout allocation (DESIGN.md section 2).

    minimise   sum_q w_q * phi(n_q)
    subject to sum_q n_q = budget,  min_rollouts <= n_q <= max_rollouts,  n_q integer

The native solver finds the Lagrange multiplier of the relaxation by a bracketed secant
search on the integer count function, then places the last units by selection; the result
is the exact greedy (= global) optimum with ties broken towards the lower count, then the lower
prompt index (equal gains are spread level by level).
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._validation import as_float64_array, as_int64, as_int64_array

__all__ = ["allocate", "allocate_relaxed", "allocation_objective", "knapsack_costs", "ESTIMATORS", "estimator_min_rollouts"]

ESTIMATORS = ("rloo", "drgrpo", "grpo")


def estimator_min_rollouts(estimator: str) -> int:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return 2 if estimator == "rloo" else 3


def _prepare(weights, budget, min_rollouts, max_rollouts, estimator, curve):
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    budget = as_int64(budget, "budget")
    min_rollouts = as_int64(min_rollouts, "min_rollouts")
    if curve is not None:
        curve = as_float64_array(curve, "curve", (1, 2))
    weights = None if weights is None else as_float64_array(weights, "weights", 1)
    if curve is not None:
        implied_max = min_rollouts + curve.shape[-1] - 1
        if max_rollouts is not None and as_int64(max_rollouts, "max_rollouts") != implied_max:
            raise ValueError(
                f"max_rollouts = {max_rollouts} disagrees with the curve, which covers "
                f"n = {min_rollouts}..{implied_max} ({curve.shape[-1]} values)"
            )
        max_rollouts = implied_max
    elif max_rollouts is None:
        if weights is None:
            raise ValueError("weights are required unless curve is a 2-D per-prompt table")
        # Unbounded above: no prompt can take more than every unit the others leave.
        max_rollouts = max(min_rollouts, budget - (len(weights) - 1) * min_rollouts)
    return weights, budget, min_rollouts, as_int64(max_rollouts, "max_rollouts"), estimator, curve


def allocate(weights, budget, *, min_rollouts=2, max_rollouts=None, estimator="rloo", curve=None) -> np.ndarray:
    """Exact integer rollout counts minimising the summed gradient variance.

    weights: [Q] w_q = p_q(1 - p_q) (or any non-negative weights); any real dtype.
    budget: total rollouts, in [Q*min_rollouts, Q*max_rollouts].
    estimator: "rloo" (phi = 1/(n-1), n >= 2), "drgrpo" or "grpo" (phi = (n-1)/n^2, n >= 3).
    curve: instead of the estimator, phi(min..max) as a [max-min+1] table shared by all prompts,
        or per-prompt costs [Q, max-min+1] (then `weights` may be None, meaning all ones).
        Shared curves must be non-increasing and discretely convex; per-prompt costs convex.
    Returns int64 [Q] that sums to `budget`.
    """
    return _core.allocate(*_prepare(weights, budget, min_rollouts, max_rollouts, estimator, curve))


def allocate_relaxed(weights, budget, *, min_rollouts=2, max_rollouts=None, estimator="rloo", curve=None) -> np.ndarray:
    """Optimum of the continuous relaxation (what the VIP paper solves before rounding).

    For tables the relaxation of the piecewise-linear interpolant has an integral optimum,
    so the exact integer solution is returned as float64.
    """
    return _core.allocate_relaxed(*_prepare(weights, budget, min_rollouts, max_rollouts, estimator, curve))


def allocation_objective(weights, counts, *, min_rollouts=2, max_rollouts=None, estimator="rloo", curve=None) -> float:
    """sum_q w_q * phi(n_q) for the given counts (per-prompt costs for a 2-D curve)."""
    counts = as_int64_array(counts, "counts")
    upper = np.iinfo(np.int64).max if max_rollouts is None and curve is None else max_rollouts
    weights, _, min_rollouts, max_rollouts, estimator, curve = _prepare(
        weights, 0, min_rollouts, upper, estimator, curve
    )
    return _core.allocation_objective(weights, counts, min_rollouts, max_rollouts, estimator, curve)


def knapsack_costs(success_probs, min_rollouts, max_rollouts) -> np.ndarray:
    """Knapsack-RL's per-prompt value as costs: [Q, max-min+1] of -(1 - p^n - (1-p)^n) p (1-p)^2.

    The value (probability of a non-degenerate group times the informativeness p(1-p)^2) is
    concave in n, so its negation is a convex per-prompt cost that `allocate(None, budget,
    curve=knapsack_costs(p, lo, hi), min_rollouts=lo)` maximises exactly.
    """
    p = as_float64_array(success_probs, "success_probs", 1)
    if not np.all((p >= 0) & (p <= 1)):
        bad = int(np.flatnonzero(~((p >= 0) & (p <= 1)))[0])
        raise ValueError(f"success_probs[{bad}] = {p[bad]} is outside [0, 1]")
    n = np.arange(as_int64(min_rollouts, "min_rollouts"), as_int64(max_rollouts, "max_rollouts") + 1, dtype=np.float64)
    p_col = p[:, None]
    nondegenerate = 1.0 - p_col**n - (1.0 - p_col) ** n
    return -(nondegenerate * p_col * (1.0 - p_col) ** 2)
