"""Exact rollout allocation.

    minimise   sum_q w_q * phi(n_q)
    subject to sum_q n_q = budget,  min_rollouts <= n_q <= max_rollouts,  n_q integer

The native solver counts, at a multiplier lambda, the units whose marginal gain exceeds it, starting
from the continuous relaxation's multiplier; it then narrows the multiplier on the few prompts whose
counts still move and places the last units by selection. The result is the exact greedy (= global)
optimum with ties broken towards the lower count, then the lower prompt index (equal gains are
spread level by level). docs/allocation.md has the details.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._validation import as_float64_array, as_int64, as_int64_array

__all__ = [
    "allocate",
    "allocate_relaxed",
    "allocation_objective",
    "knapsack_costs",
    "ESTIMATORS",
    "estimator_min_rollouts",
]

# The native estimator table: (name, smallest n of its domain, variance curve phi(n)) per estimator.
_MIN_ROLLOUTS = {name: min_rollouts for name, min_rollouts, _variance in _core.ESTIMATOR_TABLE}
_INT64_MAX = int(np.iinfo(np.int64).max)
ESTIMATORS = tuple(_MIN_ROLLOUTS)
_FLOAT64 = np.dtype(np.float64)


def estimator_min_rollouts(name: str) -> int:
    """Smallest group size n on which the estimator's variance curve is defined and convex."""
    try:
        return _MIN_ROLLOUTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {name!r}") from None


def _float_array(value, name, ndim):
    """`value` itself when it is a float64 array of the right rank (the core copies it if it is
    strided or misaligned, and reads it in place otherwise), else a checked float64 conversion."""
    if type(value) is np.ndarray and value.dtype is _FLOAT64 and value.ndim in ndim:
        return value
    return as_float64_array(value, name, ndim)


def _prepare(weights, budget, min_rollouts, max_rollouts, estimator, curve):
    if estimator not in _MIN_ROLLOUTS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    budget = as_int64(budget, "budget")
    min_rollouts = as_int64(min_rollouts, "min_rollouts")
    if curve is not None:
        curve = _float_array(curve, "curve", (1, 2))
    if weights is not None:
        weights = _float_array(weights, "weights", (1,))
    if curve is not None:
        implied_max = min_rollouts + curve.shape[-1] - 1
        if implied_max > _INT64_MAX:
            raise ValueError(f"min_rollouts = {min_rollouts} with a curve of {curve.shape[-1]} values covers n up to "
                             f"{implied_max}, beyond int64")
        if max_rollouts is not None and as_int64(max_rollouts, "max_rollouts") != implied_max:
            raise ValueError(
                f"max_rollouts = {max_rollouts} disagrees with the curve, which covers "
                f"n = {min_rollouts}..{implied_max} ({curve.shape[-1]} values)"
            )
        max_rollouts = implied_max
    elif max_rollouts is None:
        if weights is None:
            raise ValueError("weights are required unless curve is a 2-D per-prompt table")
        num_prompts, lowest = weights.shape[0], weights.shape[0] * min_rollouts
        if min_rollouts >= 1 and budget < lowest:  # named here: the upper bound below is not the caller's
            at_least = f"{num_prompts} * {min_rollouts}, which exceeds the int64 range" if lowest > _INT64_MAX else lowest
            raise ValueError(f"budget {budget} is infeasible for {num_prompts} prompts with n >= {min_rollouts} each: "
                             f"it must be at least {at_least}")
        # Unbounded above: no prompt can take more than the whole budget (the core cuts the range further).
        max_rollouts = max(min_rollouts, budget)
    return weights, budget, min_rollouts, as_int64(max_rollouts, "max_rollouts"), estimator, curve


def allocate(weights, budget, *, min_rollouts=2, max_rollouts=None, estimator="rloo", curve=None) -> np.ndarray:
    """Exact integer rollout counts minimising the summed gradient variance.

    weights: [Q] w_q = p_q(1 - p_q) (or any non-negative weights); any real dtype.
    budget: total rollouts, in [Q*min_rollouts, Q*max_rollouts].
    estimator: one of ESTIMATORS; its curve phi(n) and smallest n are in docs/allocation.md and
        `estimator_min_rollouts`.
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
    lo, hi = as_int64(min_rollouts, "min_rollouts"), as_int64(max_rollouts, "max_rollouts")
    if lo < 1 or hi < lo:
        raise ValueError(f"need 1 <= min_rollouts <= max_rollouts, got min_rollouts = {lo}, max_rollouts = {hi}")
    n = np.arange(lo, hi + 1, dtype=np.float64)
    # 1 - p^n - (1-p)^n with a = min(p, 1-p), exact in floating point, and 1 - (1-a)^n = -expm1(n log1p(-a)):
    # to a few ulps for every p, where forming (1-p)^n and subtracting from 1 loses all digits as p -> 0 or 1.
    a = np.minimum(p, 1.0 - p)[:, None]
    nondegenerate = -np.expm1(n * np.log1p(-a)) - a**n
    return -(nondegenerate * (p * (1.0 - p) ** 2)[:, None])
