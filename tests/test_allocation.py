"""vipfast.allocate and friends against independent float64 references, on fresh random instances."""

from __future__ import annotations

import numpy as np
import pytest

import vipfast
from allocation_reference import (
    brute_force_optimum,
    cost_table,
    dynamic_programming_optimum,
    estimator_curve,
    exchange_gap,
    heap_greedy,
    objective,
)
from vipfast.allocation import ESTIMATORS, estimator_min_rollouts

ESTIMATOR_MIN = {name: estimator_min_rollouts(name) for name in ESTIMATORS}


def random_weights(rng, q: int, kind: str) -> np.ndarray:
    p = rng.beta(0.5, 0.5, size=q)
    w = p * (1 - p)
    if kind == "zeros":
        w[rng.random(q) < 0.4] = 0.0
    elif kind == "ties":
        w = rng.choice(w[: max(1, q // 3)], size=q)
    elif kind == "extreme":
        w = 10.0 ** rng.uniform(-150, 150, size=q)
    return w


def random_convex_curve(rng, width: int) -> np.ndarray:
    """Non-increasing, discretely convex phi(lo..hi): decrements sorted descending."""
    steps = np.sort(rng.exponential(size=width - 1))[::-1]
    return np.concatenate([[0.0], -np.cumsum(steps)]) + rng.normal() * 10


def random_convex_table(rng, q: int, width: int) -> np.ndarray:
    """Per-prompt convex rows, not necessarily monotone (increments sorted ascending)."""
    increments = np.sort(rng.normal(size=(q, width - 1)), axis=1)
    return np.concatenate([np.zeros((q, 1)), np.cumsum(increments, axis=1)], axis=1)


def random_budget(rng, q: int, lo: int, hi: int, edge: str) -> int:
    if edge == "low":
        return q * lo
    if edge == "high":
        return q * hi
    return int(rng.integers(q * lo, q * hi + 1))


def check_feasible(counts, budget, lo, hi, q):
    assert counts.dtype == np.int64 and counts.shape == (q,)
    assert counts.sum() == budget
    assert counts.min(initial=lo) >= lo and counts.max(initial=hi) <= hi


def assert_optimal(got: float, best: float, message: str):
    assert got <= best + 1e-12 * max(1.0, abs(best)), f"{message}: objective {got!r} > optimum {best!r}"


@pytest.mark.parametrize("form", ["estimator", "shared-curve", "per-prompt"])
@pytest.mark.parametrize("edge", ["low", "inside", "high"])
def test_matches_brute_force_small(rng, form, edge):
    for _ in range(25):
        q = int(rng.integers(1, 6))
        estimator = str(rng.choice(list(ESTIMATOR_MIN)))
        lo = ESTIMATOR_MIN[estimator] + int(rng.integers(0, 3))
        hi = lo + int(rng.integers(0, 5))
        weights = random_weights(rng, q, str(rng.choice(["plain", "zeros", "ties"])))
        budget = random_budget(rng, q, lo, hi, edge)
        if form == "estimator":
            kwargs = dict(estimator=estimator, max_rollouts=hi)
            costs = cost_table(weights, estimator_curve(estimator, lo, hi))
        elif form == "shared-curve":
            curve = random_convex_curve(rng, hi - lo + 1)
            kwargs = dict(curve=curve)
            costs = cost_table(weights, curve)
        else:
            table = random_convex_table(rng, q, hi - lo + 1)
            kwargs = dict(curve=table)
            costs = cost_table(weights, table)
        counts = vipfast.allocate(weights, budget, min_rollouts=lo, **kwargs)
        check_feasible(counts, budget, lo, hi, q)
        message = f"{rng.seed_for_message} q={q} lo={lo} hi={hi} budget={budget} form={form}"
        assert_optimal(objective(costs, counts, lo), brute_force_optimum(costs, budget, lo), message)


@pytest.mark.parametrize("estimator", list(ESTIMATOR_MIN))
@pytest.mark.parametrize("weights_kind", ["plain", "zeros", "ties", "extreme"])
def test_matches_dynamic_programming(rng, estimator, weights_kind):
    for _ in range(8):
        q = int(rng.integers(7, 41))
        lo = ESTIMATOR_MIN[estimator] + int(rng.integers(0, 4))
        hi = lo + int(rng.integers(1, 20))
        weights = random_weights(rng, q, weights_kind)
        budget = random_budget(rng, q, lo, hi, str(rng.choice(["low", "inside", "inside", "high"])))
        counts = vipfast.allocate(weights, budget, min_rollouts=lo, max_rollouts=hi, estimator=estimator)
        check_feasible(counts, budget, lo, hi, q)
        costs = cost_table(weights, estimator_curve(estimator, lo, hi))
        best = dynamic_programming_optimum(costs, budget, lo)
        assert_optimal(objective(costs, counts, lo), best, f"{rng.seed_for_message} q={q} budget={budget}")


@pytest.mark.parametrize("form", ["shared-curve", "per-prompt", "knapsack"])
def test_curves_match_dynamic_programming(rng, form):
    for _ in range(8):
        q = int(rng.integers(7, 41))
        lo = int(rng.integers(1, 5))
        hi = lo + int(rng.integers(1, 16))
        weights = random_weights(rng, q, "plain")
        budget = random_budget(rng, q, lo, hi, "inside")
        if form == "shared-curve":
            curve = random_convex_curve(rng, hi - lo + 1)
        elif form == "per-prompt":
            curve = random_convex_table(rng, q, hi - lo + 1)
        else:
            weights = None
            curve = vipfast.knapsack_costs(rng.beta(0.5, 0.5, q), lo, hi)
        counts = vipfast.allocate(weights, budget, min_rollouts=lo, curve=curve)
        check_feasible(counts, budget, lo, hi, q)
        costs = cost_table(weights, curve)
        best = dynamic_programming_optimum(costs, budget, lo)
        assert_optimal(objective(costs, counts, lo), best, f"{rng.seed_for_message} q={q} budget={budget}")


def test_knapsack_value_is_maximised_exactly(rng):
    """Knapsack-RL: maximise sum_q (1 - p^n - (1-p)^n) p (1-p)^2; its best value by DP equals ours."""
    q, lo, hi = 30, 2, 12
    p = rng.uniform(0, 1, q)
    n = np.arange(lo, hi + 1)
    value = (1 - p[:, None] ** n - (1 - p[:, None]) ** n) * p[:, None] * (1 - p[:, None]) ** 2
    budget = int(rng.integers(q * lo, q * hi + 1))
    counts = vipfast.allocate(None, budget, min_rollouts=lo, curve=vipfast.knapsack_costs(p, lo, hi))
    got = value[np.arange(q), counts - lo].sum()
    best = -dynamic_programming_optimum(-value, budget, lo)
    assert got >= best - 1e-12, rng.seed_for_message


@pytest.mark.parametrize("weights_kind", ["ties", "zeros"])
@pytest.mark.parametrize("estimator", list(ESTIMATOR_MIN))
def test_ties_go_to_the_lower_count_then_the_lower_index(rng, weights_kind, estimator):
    q = int(rng.integers(50, 300))
    lo = ESTIMATOR_MIN[estimator]
    hi = lo + 12
    weights = random_weights(rng, q, weights_kind)
    budget = random_budget(rng, q, lo, hi, "inside")
    counts = vipfast.allocate(weights, budget, min_rollouts=lo, max_rollouts=hi, estimator=estimator)
    expected = heap_greedy(cost_table(weights, estimator_curve(estimator, lo, hi)), budget, lo)
    tied = weights == weights[0]
    # Exact ties are only exact in the reference for identical weights; compare those prompts.
    np.testing.assert_array_equal(counts[tied], expected[tied], err_msg=rng.seed_for_message)
    assert np.array_equal(counts, vipfast.allocate(weights, budget, min_rollouts=lo, max_rollouts=hi, estimator=estimator))


@pytest.mark.parametrize("estimator", list(ESTIMATOR_MIN))
def test_all_zero_weights_split_the_budget_uniformly(rng, estimator):
    """Nothing distinguishes the prompts: the split is UniformAllocator's, remainder to lower indices."""
    q = int(rng.integers(1, 400))
    lo = ESTIMATOR_MIN[estimator]
    hi = lo + int(rng.integers(0, 40))
    budget = int(rng.integers(q * lo, q * hi + 1))
    counts = vipfast.allocate(np.zeros(q), budget, min_rollouts=lo, max_rollouts=hi, estimator=estimator)
    expected = np.full(q, budget // q)
    expected[: budget % q] += 1
    np.testing.assert_array_equal(counts, expected, err_msg=rng.seed_for_message)


def test_equal_weights_spread_evenly_with_lower_indices_first():
    counts = vipfast.allocate(np.full(7, 0.25), 7 * 4 + 3, min_rollouts=4, max_rollouts=10)
    np.testing.assert_array_equal(counts, [5, 5, 5, 4, 4, 4, 4])


def test_zero_weights_stay_at_the_minimum_when_others_can_absorb(rng):
    weights = random_weights(rng, 64, "plain")
    weights[::3] = 0
    counts = vipfast.allocate(weights, 64 * 8, min_rollouts=4, max_rollouts=32)
    assert np.all(counts[::3] == 4)


def test_all_zero_weights_without_an_upper_bound_are_still_spread():
    counts = vipfast.allocate(np.zeros(4), 4 * 2 + 9)
    np.testing.assert_array_equal(counts, [5, 4, 4, 4])


@pytest.mark.parametrize("form", [*ESTIMATOR_MIN, "shared-curve", "per-prompt", "knapsack"])
def test_large_instances_match_heap_greedy_objective(rng, form):
    """Thousands of prompts: the search's bracket and leftover selection run on many prompts at once."""
    q, lo, hi = int(rng.integers(1500, 3000)), 4, 64
    weights = random_weights(rng, q, "plain")
    budget = int(rng.integers(6, 30)) * q
    if form in ESTIMATOR_MIN:
        kwargs, costs = dict(estimator=form, max_rollouts=hi), cost_table(weights, estimator_curve(form, lo, hi))
    elif form == "shared-curve":
        curve = random_convex_curve(rng, hi - lo + 1)
        kwargs, costs = dict(curve=curve), cost_table(weights, curve)
    else:
        weights = None
        table = random_convex_table(rng, q, hi - lo + 1) if form == "per-prompt" else vipfast.knapsack_costs(
            rng.beta(0.5, 0.5, q), lo, hi)
        kwargs, costs = dict(curve=table), cost_table(None, table)
    counts = vipfast.allocate(weights, budget, min_rollouts=lo, **kwargs)
    check_feasible(counts, budget, lo, hi, q)
    reference = objective(costs, heap_greedy(costs, budget, lo), lo)
    assert_optimal(objective(costs, counts, lo), reference, f"{rng.seed_for_message} q={q} budget={budget}")


@pytest.mark.parametrize("estimator", list(ESTIMATOR_MIN))
def test_counts_past_the_tabulated_gains_match_dynamic_programming(rng, estimator):
    """n beyond the solver's table of unit gains (2^14): the gains come from the formula."""
    for _ in range(5):
        q = int(rng.integers(2, 30))
        lo = int(rng.integers(16380, 40000))
        hi = lo + int(rng.integers(1, 12))
        weights = random_weights(rng, q, str(rng.choice(["plain", "ties", "extreme"])))
        budget = random_budget(rng, q, lo, hi, "inside")
        counts = vipfast.allocate(weights, budget, min_rollouts=lo, max_rollouts=hi, estimator=estimator)
        check_feasible(counts, budget, lo, hi, q)
        costs = cost_table(weights, estimator_curve(estimator, lo, hi))
        best = dynamic_programming_optimum(costs, budget, lo)
        assert_optimal(objective(costs, counts, lo), best, f"{rng.seed_for_message} q={q} lo={lo} budget={budget}")


@pytest.mark.parametrize("estimator", list(ESTIMATOR_MIN))
def test_unbounded_ranges_are_optimal_in_exact_arithmetic(rng, estimator):
    """Counts far past the table and up to ~10^13: no unit can move between prompts with profit."""
    for budget_per_prompt in (10**3, 10**5, 10**8, 10**13):
        q = int(rng.integers(2, 40))
        weights = random_weights(rng, q, "plain")
        lo = ESTIMATOR_MIN[estimator]
        budget = budget_per_prompt * q
        counts = vipfast.allocate(weights, budget, min_rollouts=lo, estimator=estimator)
        assert counts.sum() == budget and counts.min() >= lo
        gap = exchange_gap(weights, counts, estimator, lo, budget)
        assert gap <= 1e-12, f"{rng.seed_for_message} budget={budget}: a unit moves with relative profit {gap}"


def test_rows_with_rounding_noise_match_dynamic_programming(rng):
    """Rows whose differences break convexity by a few ulps are projected; the optimum is unchanged."""
    for _ in range(8):
        q, lo = int(rng.integers(5, 30)), 2
        hi = lo + int(rng.integers(3, 16))
        table = random_convex_table(rng, q, hi - lo + 1) * 1e3 + 1e6  # large values: coarse ulps
        table += rng.integers(-2, 3, size=table.shape) * np.spacing(table)
        budget = random_budget(rng, q, lo, hi, "inside")
        counts = vipfast.allocate(None, budget, min_rollouts=lo, curve=table)
        check_feasible(counts, budget, lo, hi, q)
        best = dynamic_programming_optimum(table, budget, lo)
        assert objective(table, counts, lo) <= best + 1e-9 * abs(best), rng.seed_for_message


@pytest.mark.parametrize("scale", [2.0**-1070, 2.0**-900, 2.0**900], ids=["subnormal", "tiny", "huge"])
@pytest.mark.parametrize("form", ["rloo", "drgrpo", "shared-curve", "per-prompt"])
def test_the_weights_scale_does_not_change_the_counts(rng, scale, form):
    """The optimum depends on ratios of weights only, including where products would under/overflow."""
    q, lo, hi = 200, 3, 40
    weights = rng.uniform(0.5, 1.0, q)
    kwargs = {"rloo": dict(max_rollouts=hi), "drgrpo": dict(max_rollouts=hi, estimator="drgrpo"),
              "shared-curve": dict(curve=random_convex_curve(rng, hi - lo + 1)),
              "per-prompt": dict(curve=random_convex_table(rng, q, hi - lo + 1))}[form]
    budget = 12 * q
    scaled = weights * scale
    seen = scaled / scale  # what survives in the scaled weights (subnormals keep a few bits), at scale 1
    expected = vipfast.allocate(seen, budget, min_rollouts=lo, **kwargs)
    np.testing.assert_array_equal(vipfast.allocate(scaled, budget, min_rollouts=lo, **kwargs), expected,
                                  err_msg=rng.seed_for_message)


def test_unbounded_max_uses_the_budget(rng):
    weights = random_weights(rng, 50, "plain")
    counts = vipfast.allocate(weights, 50 * 40, min_rollouts=2)
    assert counts.sum() == 50 * 40 and counts.min() >= 2
    costs = cost_table(weights, estimator_curve("rloo", 2, counts.max() + 5))
    relaxed_best = dynamic_programming_optimum(costs, 50 * 40, 2)
    assert_optimal(objective(costs, counts, 2), relaxed_best, rng.seed_for_message)


def test_empty_batch():
    assert vipfast.allocate(np.empty(0), 0).shape == (0,)
    assert vipfast.allocate_relaxed(np.empty(0), 0).shape == (0,)
    assert vipfast.allocation_objective(np.empty(0), np.empty(0, dtype=np.int64)) == 0.0


def test_single_prompt_takes_the_whole_budget():
    np.testing.assert_array_equal(vipfast.allocate([0.1], 9, min_rollouts=2, max_rollouts=20), [9])


@pytest.mark.parametrize(
    "weights",
    [[0.1, 0.2, 0.3], np.array([1, 2, 3], dtype=np.int32), np.array([0.1, 0.2, 0.3], dtype=np.float32),
     np.array([[0.1, 0.5], [0.2, 0.6], [0.3, 0.7]])[:, 0], np.array([True, False, True])],
    ids=["list", "int32", "float32", "strided", "bool"],
)
def test_any_real_dtype_and_layout(weights):
    reference = np.asarray(weights, dtype=np.float64).copy()
    np.testing.assert_array_equal(
        vipfast.allocate(weights, 20, min_rollouts=2, max_rollouts=12),
        vipfast.allocate(reference, 20, min_rollouts=2, max_rollouts=12),
    )


# ----------------------------------------------------------------------------------------
# The continuous relaxation
# ----------------------------------------------------------------------------------------


def marginal_variance(estimator, n):
    """-phi'(n)."""
    return 1.0 / (n - 1.0) ** 2 if estimator == "rloo" else (n - 2.0) / n**3


@pytest.mark.parametrize("estimator", list(ESTIMATOR_MIN))
def test_relaxation_satisfies_kkt(rng, estimator):
    for _ in range(10):
        q = int(rng.integers(5, 400))
        lo = ESTIMATOR_MIN[estimator] + int(rng.integers(0, 3))
        hi = lo + int(rng.integers(4, 60))
        weights = random_weights(rng, q, "plain")
        budget = int(rng.integers(q * lo + 1, q * hi))
        n = vipfast.allocate_relaxed(weights, budget, min_rollouts=lo, max_rollouts=hi, estimator=estimator)
        assert abs(n.sum() - budget) <= 1e-9 * budget
        assert n.min() >= lo - 1e-12 and n.max() <= hi + 1e-12
        gains = weights * marginal_variance(estimator, n)
        interior = (n > lo + 1e-7) & (n < hi - 1e-7)
        if not interior.any():
            continue
        lam = np.median(gains[interior])
        message = f"{rng.seed_for_message} q={q} budget={budget}"
        np.testing.assert_allclose(gains[interior], lam, rtol=1e-9, err_msg=message)
        assert np.all(gains[n <= lo + 1e-7] <= lam * (1 + 1e-9)), message
        assert np.all(gains[n >= hi - 1e-7] >= lam * (1 - 1e-9)), message


def test_relaxation_bounds_the_integer_optimum(rng):
    weights = random_weights(rng, 300, "plain")
    lo, hi, budget = 4, 64, 300 * 16
    relaxed = vipfast.allocate_relaxed(weights, budget, min_rollouts=lo, max_rollouts=hi)
    exact = vipfast.allocate(weights, budget, min_rollouts=lo, max_rollouts=hi)
    continuous = float(np.sum(weights / (relaxed - 1)))
    assert continuous <= vipfast.allocation_objective(weights, exact, min_rollouts=lo) + 1e-12
    assert np.max(np.abs(relaxed - exact)) <= 1.0 + 1e-9, rng.seed_for_message


def test_relaxation_of_tables_is_the_integer_optimum(rng):
    table = random_convex_table(rng, 20, 9)
    budget = 20 * 5
    np.testing.assert_array_equal(
        vipfast.allocate_relaxed(None, budget, min_rollouts=2, curve=table),
        vipfast.allocate(None, budget, min_rollouts=2, curve=table).astype(np.float64),
    )


def test_objective_matches_reference(rng):
    weights = random_weights(rng, 100, "plain")
    counts = rng.integers(3, 40, size=100)
    for estimator in ESTIMATOR_MIN:
        expected = objective(cost_table(weights, estimator_curve(estimator, 3, 40)), counts, 3)
        got = vipfast.allocation_objective(weights, counts, estimator=estimator, min_rollouts=3)
        assert got == pytest.approx(expected, rel=1e-13)
