"""Bad input to the allocation API: clear errors naming the value, and no crash under fuzzing."""

from __future__ import annotations

import importlib.metadata
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vipfast
from vipfast import _core
from vipfast.allocation import ESTIMATORS, estimator_min_rollouts


@pytest.mark.parametrize(
    "weights, message",
    [
        ([0.1, np.nan, 0.2], r"weights\[1\] is nan"),
        ([0.1, 0.2, np.inf], r"weights\[2\] is inf"),
        ([0.1, -0.5, 0.2], r"weights\[1\] = -0.5 is negative"),
    ],
    ids=["nan", "inf", "negative"],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        vipfast.allocate(weights, 12, min_rollouts=2, max_rollouts=8)


@pytest.mark.parametrize("budget, message", [(5, r"budget 5 is infeasible .* \[6, 24\]"), (25, r"\[6, 24\]")])
def test_infeasible_budget_names_the_range(budget, message):
    with pytest.raises(ValueError, match=message):
        vipfast.allocate([0.1, 0.2, 0.3], budget, min_rollouts=2, max_rollouts=8)


def test_infeasible_budget_without_max_names_only_the_callers_bound():
    """With max_rollouts=None the upper bound is derived from the budget; the message must not blame it."""
    with pytest.raises(ValueError, match=r"budget 0 is infeasible for 3 prompts with n >= 2 each: it must be at least 6$"):
        vipfast.allocate([0.25, 0.1, 0.0], 0)


def test_curve_reaching_beyond_int64_is_named():
    with pytest.raises(ValueError, match=r"min_rollouts = 9223372036854775807 with a curve of 2 values covers n up to "
                                         r"9223372036854775808, beyond int64"):
        vipfast.allocate([1.0], 2**63 - 1, min_rollouts=2**63 - 1, curve=[1.0, 0.0])


def test_min_above_max():
    with pytest.raises(ValueError, match=r"min_rollouts \(9\) exceeds max_rollouts \(8\)"):
        vipfast.allocate([0.1], 9, min_rollouts=9, max_rollouts=8)


@pytest.mark.parametrize("estimator, low", [(name, estimator_min_rollouts(name) - 1) for name in ESTIMATORS])
def test_min_below_estimator_domain(estimator, low):
    with pytest.raises(ValueError, match=f"min_rollouts = {low} is below the domain of estimator '{estimator}'"):
        vipfast.allocate([0.1, 0.2], 2 * low + 2, min_rollouts=low, max_rollouts=10, estimator=estimator)


def test_unknown_estimator():
    with pytest.raises(ValueError, match=r"estimator must be one of .* got 'ppo'"):
        vipfast.allocate([0.1], 4, estimator="ppo")
    with pytest.raises(ValueError, match="unknown estimator 'ppo'"):
        _core.allocate(np.array([0.1]), 4, 2, 4, "ppo", None)


def test_non_monotone_shared_curve_names_n():
    curve = np.array([1.0, 0.5, 0.6, 0.2])
    with pytest.raises(ValueError, match=r"curve must be non-increasing but rises at n = 4"):
        vipfast.allocate([0.1, 0.2], 6, min_rollouts=2, curve=curve)


def test_non_convex_shared_curve_names_n():
    curve = np.array([1.0, 0.9, 0.5, 0.4])
    with pytest.raises(ValueError, match=r"curve is not discretely convex at n = 3"):
        vipfast.allocate([0.1, 0.2], 6, min_rollouts=2, curve=curve)


def test_non_convex_table_names_prompt_and_n():
    table = np.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.5, 1.0, 0.5]])
    with pytest.raises(ValueError, match=r"costs of prompt 1 is not discretely convex at n = 3"):
        vipfast.allocate(None, 6, min_rollouts=2, curve=table)


def test_curve_length_must_match_bounds():
    with pytest.raises(ValueError, match=r"max_rollouts = 9 disagrees with the curve"):
        vipfast.allocate([0.1], 4, min_rollouts=2, max_rollouts=9, curve=[1.0, 0.5, 0.3])
    with pytest.raises(ValueError, match=r"curve has 3 values per prompt"):
        _core.allocate(np.array([0.1]), 4, 2, 9, "rloo", np.array([1.0, 0.5, 0.3]))


def test_curve_width_check_survives_extreme_bounds():
    """max - min + 1 overflows int64 here; the check must still reject, not wrap (UBSan found it)."""
    with pytest.raises(ValueError, match=r"curve has 2 values per prompt"):
        _core.allocate(np.array([0.1]), 4, -12709, 2**63 - 1, "rloo", np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match=r"curve has 0 values per prompt"):
        _core.allocate(np.array([0.1]), 4, -(2**63), 2**63 - 1, "rloo", np.zeros((1, 0)))


def test_table_rows_must_match_weights():
    with pytest.raises(ValueError, match=r"curve's first axis \(prompts\) has length 3, expected 2"):
        vipfast.allocate([0.1, 0.2], 6, min_rollouts=2, curve=np.zeros((3, 4)))


def test_non_finite_curve():
    with pytest.raises(ValueError, match=r"curve has a non-finite value nan at n = 3"):
        vipfast.allocate([0.1], 3, min_rollouts=2, curve=[1.0, np.nan, 0.2])


BAD_CURVES = {
    "nan": ([np.nan] * 3, r"curve has a non-finite value nan at n = 2"),
    "inf": ([1.0, np.inf, 0.0], r"curve has a non-finite value inf at n = 3"),
    "rising": ([1.0, 2.0, 3.0], r"curve must be non-increasing but rises at n = 3"),
    "concave": ([1.0, 0.9, 0.1], r"curve is not discretely convex at n = 3"),
}


@pytest.mark.parametrize("budget", [4, 5, 6], ids=["all-at-min", "inside", "all-at-max"])
@pytest.mark.parametrize("kind", list(BAD_CURVES))
def test_curves_are_checked_whatever_the_budget(kind, budget):
    """Budgets that fix every count (Q*min, Q*max) still get the curve checked."""
    curve, message = BAD_CURVES[kind]
    with pytest.raises(ValueError, match=message):
        vipfast.allocate([1.0, 1.0], budget, min_rollouts=2, curve=curve)
    with pytest.raises(ValueError, match=message):
        vipfast.allocate_relaxed([1.0, 1.0], budget, min_rollouts=2, curve=curve)
    with pytest.raises(ValueError, match=message):
        vipfast.allocation_objective([1.0, 1.0], [2, 3], min_rollouts=2, curve=curve)


@pytest.mark.parametrize("position", [0, 1, 2], ids=["all-at-min", "inside", "all-at-max"])
def test_tables_are_checked_whatever_the_budget(position):
    budget = [2, 5, 8][position]  # two prompts, n in [1, 4]
    table = np.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, np.nan, 0.0]])
    with pytest.raises(ValueError, match=r"costs of prompt 1 has a non-finite value nan at n = 3"):
        vipfast.allocate(None, budget, min_rollouts=1, curve=table)
    table[1] = [3.0, 2.5, 1.0, 0.5]
    with pytest.raises(ValueError, match=r"costs of prompt 1 is not discretely convex at n = 2"):
        vipfast.allocate(None, budget, min_rollouts=1, curve=table)


@pytest.mark.parametrize("weights", [[np.nan, 0.1], [0.1, -1.0]], ids=["nan", "negative"])
def test_weights_are_checked_whatever_the_budget(weights):
    for budget in (4, 8):
        with pytest.raises(ValueError, match=r"weights\[\d\]"):
            vipfast.allocate(weights, budget, min_rollouts=2, max_rollouts=4)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: vipfast.allocate(["a", "b"], 4), TypeError, "weights must hold real numbers"),
        (lambda: vipfast.allocate(np.array([1j, 2j]), 4), TypeError, "weights must hold real numbers"),
        (lambda: vipfast.allocate(np.zeros((2, 2)), 8), ValueError, "weights must be 1-D"),
        (lambda: vipfast.allocate([0.1], 4.0), TypeError, "budget must be an integer"),
        (lambda: vipfast.allocate([0.1], 2**70), ValueError, "does not fit in int64"),
        (lambda: vipfast.allocate([0.1], 4, min_rollouts=2.5), TypeError, "min_rollouts must be an integer"),
        (lambda: vipfast.allocate([0.1, 0.2], True), TypeError, "budget must be an integer, got bool True"),
        (lambda: vipfast.allocate([0.1], 4, curve=np.zeros((1, 1, 3))), ValueError, "curve must be 1-D or 2-D"),
        (lambda: vipfast.allocate(None, 4), ValueError, "weights are required"),
        (lambda: vipfast.allocation_objective([0.1], [1.5]), ValueError, "counts must hold whole numbers"),
        (lambda: vipfast.allocation_objective([0.1, 0.2], [3]), ValueError, "counts has length 1, expected 2"),
        (lambda: vipfast.allocation_objective([0.1], [1]), ValueError, r"min_rollouts|outside"),
        (lambda: vipfast.allocation_objective([0.1], [9], min_rollouts=2, max_rollouts=8), ValueError,
         r"counts\[0\] = 9 is outside \[2, 8\]"),
    ],
    ids=["strings", "complex", "2-D weights", "float budget", "huge budget", "float min", "bool budget", "3-D curve",
         "no weights", "fractional counts", "counts length", "count below domain", "count above max"],
)
def test_wrong_types_and_shapes(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_weights_that_require_grad_are_read_as_constants():
    torch = pytest.importorskip("torch")
    weights = torch.tensor([0.25, 0.1, 0.2], requires_grad=True)
    np.testing.assert_array_equal(vipfast.allocate(weights, 12), vipfast.allocate([0.25, 0.1, 0.2], 12))


def test_knapsack_costs_reject_probabilities_outside_unit_interval():
    with pytest.raises(ValueError, match=r"success_probs\[1\] = 1.5 is outside \[0, 1\]"):
        vipfast.knapsack_costs([0.2, 1.5], 2, 4)


def test_version_reaches_the_extension():
    assert _core.__version__ == vipfast.__version__ == importlib.metadata.version("vipfast")


def test_concurrent_calls_agree():
    """The GIL is released while solving; threads sharing inputs must not interfere."""
    rng = np.random.default_rng()
    p = rng.beta(0.5, 0.5, 20000)
    weights = p * (1 - p)
    expected = vipfast.allocate(weights, 20000 * 16, min_rollouts=4, max_rollouts=64)
    results = [None] * 4

    def work(slot):
        results[slot] = vipfast.allocate(weights, 20000 * 16, min_rollouts=4, max_rollouts=64)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        np.testing.assert_array_equal(result, expected)


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
small_ints = st.integers(min_value=-3, max_value=40)


@st.composite
def native_calls(draw):
    q = draw(st.integers(0, 12))
    weights = draw(st.one_of(st.none(), hnp.arrays(np.float64, draw(st.sampled_from([(q,), (q + 1,), (q, 2)])),
                                                   elements=finite_or_not)))
    curve = draw(st.one_of(
        st.none(),
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8), elements=finite_or_not),
        hnp.arrays(np.float64, st.tuples(st.just(q), st.integers(0, 8)), elements=st.floats(-1e3, 1e3)),
    ))
    lo = draw(st.one_of(small_ints, int64s))
    hi = draw(st.one_of(small_ints, int64s, st.just(lo + 3)))
    budget = draw(st.one_of(int64s, st.integers(0, 500)))
    estimator = draw(st.sampled_from([*ESTIMATORS, "", "x"]))
    return weights, budget, lo, hi, estimator, curve


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(native_calls())
def test_fuzz_native_allocate_never_crashes(call):
    weights, budget, lo, hi, estimator, curve = call
    for solver in (_core.allocate, _core.allocate_relaxed):
        try:
            counts = solver(weights, budget, lo, hi, estimator, curve)
        except (ValueError, TypeError):
            continue
        assert counts.sum() == pytest.approx(budget, rel=1e-9, abs=1e-6)
        assert np.all(counts >= lo - 1e-9) and np.all(counts <= hi + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(0, 30), elements=st.floats(0, 1e6)),
    st.integers(0, 50),
    st.integers(1, 6),
    st.integers(0, 40),
    st.sampled_from(ESTIMATORS),
)
def test_fuzz_valid_instances_are_feasible(weights, budget_offset, lo, width, estimator):
    lo = max(lo, 3)
    hi = lo + width
    q = len(weights)
    budget = q * lo + min(budget_offset, q * width)
    counts = vipfast.allocate(weights, budget, min_rollouts=lo, max_rollouts=hi, estimator=estimator)
    assert counts.sum() == budget
    assert np.all((counts >= lo) & (counts <= hi))
