"""The allocation API at the edges: huge budgets, int64 extremes, subnormal weights, knapsack tables
for p near 0 and 1, unaligned buffers, and the estimator table."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import vipfast
from allocation_reference import (
    cost_table,
    dynamic_programming_optimum,
    estimator_curve,
    exchange_gap,
    knapsack_value,
    objective,
)
from vipfast import _core
from vipfast.allocation import ESTIMATORS, estimator_min_rollouts

INT64_MAX = 2**63 - 1


# ----------------------------------------------------------------------------------------
# The estimator table
# ----------------------------------------------------------------------------------------


def test_estimator_table_matches_the_variance_curves():
    """rloo: phi = 1/(n-1) from n = 2; drgrpo and grpo: phi = (n-1)/n^2, discretely convex from n = 3."""
    assert ESTIMATORS == ("rloo", "drgrpo", "grpo")
    assert [estimator_min_rollouts(name) for name in ESTIMATORS] == [2, 3, 3]
    assert {name: variance for name, _, variance in _core.ESTIMATOR_TABLE} == {
        "rloo": "1/(n-1)", "drgrpo": "(n-1)/n^2", "grpo": "(n-1)/n^2"}
    assert vipfast.ESTIMATORS is ESTIMATORS


@pytest.mark.parametrize("name", ["ppo", "", "RLOO", None, ["rloo"]])
def test_unknown_estimator_names_the_options(name):
    with pytest.raises(ValueError, match=r"estimator must be one of \('rloo', 'drgrpo', 'grpo'\)"):
        estimator_min_rollouts(name)


def test_each_estimator_domain_starts_at_its_table_entry():
    """Exactly min_rollouts is accepted and one below is refused, for every estimator of the table."""
    for name in ESTIMATORS:
        low = estimator_min_rollouts(name)
        assert vipfast.allocate([0.2, 0.1], 2 * low + 3, min_rollouts=low, estimator=name).sum() == 2 * low + 3
        with pytest.raises(ValueError, match=f"below the domain of estimator '{name}'"):
            vipfast.allocate([0.2, 0.1], 2 * low + 3, min_rollouts=low - 1, estimator=name)


# ----------------------------------------------------------------------------------------
# Budgets of any size
# ----------------------------------------------------------------------------------------


def test_budgets_up_to_1e15_return_for_every_estimator(tmp_path):
    """The solve's time does not grow with the budget (a subprocess, so a hang fails instead of stalling)."""
    script = textwrap.dedent("""
        import numpy as np, vipfast
        p = np.random.default_rng(0).beta(0.5, 0.5, 100)
        for estimator in vipfast.ESTIMATORS:
            for budget in (10**9, 10**12, 10**15):
                counts = vipfast.allocate(p * (1 - p), budget, min_rollouts=3, estimator=estimator)
                assert counts.sum() == budget and counts.min() >= 3, (estimator, budget)
                relaxed = vipfast.allocate_relaxed(p * (1 - p), budget, min_rollouts=3, estimator=estimator)
                assert abs(relaxed.sum() - budget) <= 1e-9 * budget, (estimator, budget)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_1e15_budget_is_optimal_in_exact_arithmetic(rng, estimator):
    weights = rng.beta(0.5, 0.5, 50)
    weights *= 1 - weights
    counts = vipfast.allocate(weights, 10**15, min_rollouts=3, estimator=estimator)
    assert counts.sum() == 10**15
    assert exchange_gap(weights, counts, estimator, 3, 10**15) <= 1e-12, rng.seed_for_message


def test_feasible_budgets_beyond_q_times_max_in_int64_are_accepted():
    """Q * max may overflow int64 while the budget is fine: the range is cut at the budget instead."""
    np.testing.assert_array_equal(vipfast.allocate(np.ones(4), 2**62), [2**60] * 4)
    np.testing.assert_array_equal(vipfast.allocate(np.ones(4), 20, max_rollouts=2**61), [5, 5, 5, 5])
    np.testing.assert_array_equal(vipfast.allocate_relaxed(np.ones(4), 20, max_rollouts=2**61), [5.0] * 4)
    assert vipfast.allocate([0.3], INT64_MAX).tolist() == [INT64_MAX]
    counts = vipfast.allocate([0.3, 0.2, 0.1], INT64_MAX, min_rollouts=2, max_rollouts=INT64_MAX)
    assert int(counts.sum()) == INT64_MAX and counts.min() >= 2
    assert exchange_gap([0.3, 0.2, 0.1], counts, "rloo", 2, INT64_MAX) <= 1e-12


def test_budgets_whose_minimum_overflows_are_refused_with_the_range():
    with pytest.raises(ValueError, match=r"budget 10 is infeasible .* at least 2 \* 4611686018427387904, which exceeds"):
        vipfast.allocate(np.ones(2), 10, min_rollouts=2**62)
    with pytest.raises(ValueError, match=r"must lie in \[8, 12\]"):
        vipfast.allocate(np.ones(4), 13, min_rollouts=2, max_rollouts=3)


# ----------------------------------------------------------------------------------------
# Weights at the ends of the doubles
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [[1e-300, 1e-300], [5e-324, 5e-324, 1e-320], [1e-310, 0.0, 3e-310], [1e300, 1e-300, 1.0], [1e308, 1e308]],
    ids=["tiny", "subnormal", "subnormal-zero", "wide", "huge"],
)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_relaxed_counts_sum_to_the_budget_for_any_weights(weights, estimator):
    weights = np.array(weights)
    for budget in (10**2, 10**6, 10**12):
        counts = vipfast.allocate_relaxed(weights, budget, min_rollouts=3, estimator=estimator)
        assert abs(counts.sum() - budget) <= 1e-9 * budget, (budget, counts)
        assert counts.min() >= 3 - 1e-9
        exact = vipfast.allocate(weights, budget, min_rollouts=3, estimator=estimator)
        assert exact.sum() == budget


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_relaxed_counts_respect_the_bounds_when_weights_span_the_doubles(estimator):
    """Weight ratios below the smallest double: the small prompts still absorb what the large cannot."""
    weights = np.array([7.7e-113, 2.5e205, 1.1e-87, 5e-324, 0.0])
    counts = vipfast.allocate_relaxed(weights, 50, min_rollouts=5, max_rollouts=12, estimator=estimator)
    assert counts.sum() == pytest.approx(50, rel=1e-12) and counts.min() >= 5 - 1e-12 and counts.max() <= 12 + 1e-12
    assert counts[1] == pytest.approx(12) and counts[2] == pytest.approx(12)  # largest weights fill up first
    assert counts[0] >= counts[3] >= counts[4] - 1e-12


def test_relaxed_counts_do_not_change_with_the_weights_scale(rng):
    weights = rng.uniform(0.1, 1.0, 30)
    expected = vipfast.allocate_relaxed(weights, 3000, min_rollouts=2)
    for scale in (1e-300, 2.0**-1060, 1e300):
        np.testing.assert_allclose(vipfast.allocate_relaxed(weights * scale, 3000, min_rollouts=2), expected,
                                   rtol=1e-9 if scale > 1e-305 else 0.05, err_msg=f"scale {scale}")


# ----------------------------------------------------------------------------------------
# Knapsack-RL tables for every p
# ----------------------------------------------------------------------------------------


def test_knapsack_costs_are_accurate_to_a_few_ulps():
    """Against exact rational arithmetic, including p where 1 - p^n - (1-p)^n cancels catastrophically."""
    p = np.array([0.0, 1.0, 0.5, 1e-300, 2e-10, 5e-9, 1e-6, 0.3, 1 - 2**-40, 1 - 5e-9, np.nextafter(1.0, 0)])
    lo, hi = 1, 40
    costs = vipfast.knapsack_costs(p, lo, hi)
    for i, pi in enumerate(p):
        for n in range(lo, hi + 1):
            exact = float(-knapsack_value(float(pi), n))
            assert abs(costs[i, n - lo] - exact) <= 8 * np.finfo(float).eps * abs(exact) + 1e-320, (pi, n)


@pytest.mark.parametrize("lo, hi", [(1, 16), (2, 64), (4, 256)])
def test_knapsack_tables_are_accepted_for_every_p(rng, lo, hi):
    """The documented recipe for p anywhere in [0, 1]: Beta(0.3, 0.3) draws and the cancelling ranges."""
    near_ends = 10.0 ** rng.uniform(-12, -7, 2000)
    p = np.concatenate([rng.beta(0.3, 0.3, 20000), near_ends, 1 - near_ends, [0.0, 1.0, 5e-324]])
    costs = vipfast.knapsack_costs(p, lo, hi)
    budget = len(p) * (lo + hi) // 2
    counts = vipfast.allocate(None, budget, min_rollouts=lo, curve=costs)
    assert counts.sum() == budget


def test_a_genuinely_non_convex_table_is_still_rejected():
    """Rounding is forgiven at ~16 ulps of the values involved, a larger dent is not."""
    straight = np.array([[10.0, 8.0, 6.0, 4.0, 2.0, 0.0, -2.0]])  # convex with no margin at all
    for dent, accepted in [(2, True), (8, True), (1e6, False)]:
        table = straight.copy()
        table[0, 3] -= dent * np.spacing(table[0, 3])
        if accepted:
            assert vipfast.allocate(None, 6, min_rollouts=1, curve=table).sum() == 6
        else:
            with pytest.raises(ValueError, match="costs of prompt 0 is not discretely convex at n = 3"):
                vipfast.allocate(None, 6, min_rollouts=1, curve=table)
    # Knapsack rows for tiny p have convexity margins far below their values' ulps: a dent of
    # 1e-9 of a value is non-convex there, and refused.
    costs = vipfast.knapsack_costs(np.array([3e-9, 0.4]), 2, 12)
    vipfast.allocate(None, 14, min_rollouts=2, curve=costs)
    costs[0, 5] -= 1e-9 * abs(costs[0, 5])
    with pytest.raises(ValueError, match="costs of prompt 0 is not discretely convex"):
        vipfast.allocate(None, 14, min_rollouts=2, curve=costs)


def test_knapsack_costs_need_a_valid_range():
    with pytest.raises(ValueError, match="need 1 <= min_rollouts <= max_rollouts"):
        vipfast.knapsack_costs([0.5], 0, 4)
    with pytest.raises(ValueError, match="need 1 <= min_rollouts <= max_rollouts"):
        vipfast.knapsack_costs([0.5], 5, 4)


# ----------------------------------------------------------------------------------------
# Buffers: unaligned input is copied, aligned input is not
# ----------------------------------------------------------------------------------------


def unaligned_copy(array: np.ndarray) -> np.ndarray:
    """The same values in a buffer at an odd byte offset (misaligned for float64 and int64)."""
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    out = raw[1:].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("entry", ["public", "core"])
def test_unaligned_arrays_give_the_same_results(rng, entry):
    q, lo, hi = 300, 3, 20
    weights = rng.uniform(0, 0.25, q)
    curve = estimator_curve("rloo", lo, hi)
    table = vipfast.knapsack_costs(rng.uniform(0, 1, q), lo, hi)
    counts = rng.integers(lo, hi + 1, q)
    budget = 9 * q
    if entry == "public":
        def solve(w, c, t, n):
            return (vipfast.allocate(w, budget, min_rollouts=lo, max_rollouts=hi),
                    vipfast.allocate(w, budget, min_rollouts=lo, curve=c),
                    vipfast.allocate(None, budget, min_rollouts=lo, curve=t),
                    vipfast.allocate_relaxed(w, budget, min_rollouts=lo, max_rollouts=hi),
                    vipfast.allocation_objective(w, n, min_rollouts=lo, max_rollouts=hi))
    else:
        def solve(w, c, t, n):
            return (_core.allocate(w, budget, lo, hi, "rloo", None), _core.allocate(w, budget, lo, hi, "rloo", c),
                    _core.allocate(None, budget, lo, hi, "rloo", t), _core.allocate_relaxed(w, budget, lo, hi, "rloo", None),
                    _core.allocation_objective(w, n, lo, hi, "rloo", None))
    expected = solve(weights, curve, table, counts)
    got = solve(unaligned_copy(weights), unaligned_copy(curve), unaligned_copy(table), unaligned_copy(counts))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_aligned_float64_input_is_not_copied():
    """Only the int64 result is allocated (numpy's buffers are traced): no copy of the weights."""
    q = 1_000_000
    weights = np.full(q, 0.2)
    call = lambda w: vipfast.allocate(w, 4 * q, min_rollouts=2, max_rollouts=8)  # noqa: E731
    call(weights)
    assert peak_bytes(lambda: call(weights)) < 1.5 * 8 * q
    assert peak_bytes(lambda: call(unaligned_copy(weights))) >= 2 * 8 * q  # the test sees a copy when one is made


def test_aligned_int64_counts_are_not_copied():
    q = 1_000_000
    weights, counts = np.full(q, 0.2), np.full(q, 4, dtype=np.int64)
    call = lambda n: vipfast.allocation_objective(weights, n, min_rollouts=2)  # noqa: E731
    call(counts)
    assert peak_bytes(lambda: call(counts)) < 0.5 * 8 * q
    assert peak_bytes(lambda: call(unaligned_copy(counts))) >= 8 * q


# ----------------------------------------------------------------------------------------
# Values too large for int64 are reported as given
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, shown",
    [(np.array([2**64 - 1], dtype=np.uint64), "18446744073709551615"), (np.array([2**63], dtype=np.uint64),
     "9223372036854775808"), (np.array([1e19]), "1e+19"), (np.array([-1e19]), "-1e+19"), ([2**63], "9223372036854775808")],
    ids=["uint64-max", "uint64-2^63", "float-1e19", "float-minus-1e19", "python-int"],
)
def test_objective_counts_outside_int64_are_named_as_given(counts, shown):
    with pytest.raises(ValueError, match=re.escape(f"counts[0] = {shown} does not fit in int64")):
        vipfast.allocation_objective([0.1], counts)


@pytest.mark.parametrize("field", ["budget", "min_rollouts", "max_rollouts"])
@pytest.mark.parametrize("value, error, shown", [
    (np.uint64(2**64 - 1), ValueError, "18446744073709551615 does not fit in int64"),
    (2**63, ValueError, "9223372036854775808 does not fit in int64"),
    (np.float64(1e19), TypeError, "1e\\+19"),
])
def test_scalars_outside_int64_are_named_as_given(field, value, error, shown):
    kwargs = {"budget": 8, "min_rollouts": 2, "max_rollouts": 6}
    kwargs[field] = value
    with pytest.raises(error, match=f"{field}.*{shown}"):
        vipfast.allocate([0.1, 0.2], kwargs.pop("budget"), **kwargs)
    kwargs.pop("budget", None)
    if field != "budget":
        with pytest.raises(error, match=f"{field}.*{shown}"):
            vipfast.allocation_objective([0.1, 0.2], [3, 3], **kwargs)


def test_the_reference_optimum_agrees_on_a_small_instance():
    """Guards the references themselves: DP and the exchange certificate agree with each other."""
    weights = np.array([0.25, 0.09, 0.16])
    counts = vipfast.allocate(weights, 15, min_rollouts=2, max_rollouts=9)
    costs = cost_table(weights, estimator_curve("rloo", 2, 9))
    assert objective(costs, counts, 2) == pytest.approx(dynamic_programming_optimum(costs, 15, 2), rel=1e-15)
    assert exchange_gap(weights, counts, "rloo", 2, 9) <= 0
