"""Allocation latency: vipfast's exact solver against its peers on the same instances, in one run.

    pytest benches/bench_allocation.py --benchmark-only --benchmark-json=benches/results/allocation.json
    python benches/report_allocation.py benches/results/allocation.json

Instance: Q prompts, budget 16·Q, n in [4, 64], w = p(1-p) with p ~ Beta(0.5, 0.5). Forms: the three
estimators, a shared curve phi(n) = 1/(n-1) + 1/n^2 given as a table, and per-prompt Knapsack-RL
costs (vipfast.knapsack_costs, no weights). Peers (benches/allocation_baselines.py): numpy bisection
(the VIP paper's relaxation for rloo, the integer threshold count otherwise), CoBA-RL's heap greedy,
Knapsack-RL's dynamic program, scipy SLSQP (rloo). Every peer's objective is checked against vipfast's.
vipfast's time includes the Python call.
"""

from __future__ import annotations

import numpy as np
import pytest

import vipfast
from allocation_baselines import (
    cost_table,
    heap_greedy,
    knapsack_dp,
    relaxed_bisection,
    slsqp_relaxed,
    threshold_bisection,
)

LO, HI, PER_PROMPT = 4, 64, 16
SIZES = (256, 1024, 4096, 65536)
FORMS = ("rloo", "drgrpo", "grpo", "curve", "table")
N = np.arange(LO, HI + 1, dtype=np.float64)
CURVE = 1.0 / (N - 1.0) + 1.0 / N**2  # non-increasing and convex, not one of the estimators


def instance(form: str, q: int):
    p = np.random.default_rng(q).beta(0.5, 0.5, size=q)
    weights, budget = p * (1 - p), PER_PROMPT * q
    if form == "table":
        table = vipfast.knapsack_costs(p, LO, HI)
        return None, budget, dict(min_rollouts=LO, curve=table), table
    if form == "curve":
        return weights, budget, dict(min_rollouts=LO, curve=CURVE), cost_table(weights, CURVE)
    phi = 1.0 / (N - 1.0) if form == "rloo" else (N - 1.0) / N**2
    return weights, budget, dict(min_rollouts=LO, max_rollouts=HI, estimator=form), cost_table(weights, phi)


def objective(form, weights, counts, kwargs):
    return vipfast.allocation_objective(weights, counts, **kwargs)


def run(benchmark, form, q, solve, rounds=None):
    weights, budget, kwargs, costs = instance(form, q)
    benchmark.group = f"{form} Q={q}"
    benchmark.extra_info.update(form=form, prompts=q, budget=budget)
    call = lambda: solve(weights, budget, kwargs, costs)  # noqa: E731
    counts = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1) if rounds else benchmark(call)
    exact = vipfast.allocate(weights, budget, **kwargs)
    best = objective(form, weights, exact, kwargs)
    got = objective(form, weights, counts, kwargs)
    assert counts.sum() == budget and counts.min() >= LO and counts.max() <= HI
    assert got >= best - 1e-12 * abs(best), f"{form} Q={q}: a peer beat the exact optimum ({got} < {best})"
    benchmark.extra_info["objective_gap"] = (got - best) / abs(best)


@pytest.mark.parametrize("q", SIZES)
@pytest.mark.parametrize("form", FORMS)
def test_vipfast(benchmark, form, q):
    run(benchmark, form, q, lambda w, b, kwargs, _costs: vipfast.allocate(w, b, **kwargs))


@pytest.mark.parametrize("q", SIZES)
@pytest.mark.parametrize("form", FORMS)
def test_numpy_bisection(benchmark, form, q):
    if form == "rloo":
        run(benchmark, form, q, lambda w, b, _kwargs, _costs: relaxed_bisection(w, b, LO, HI))
    else:
        run(benchmark, form, q, lambda _w, b, _kwargs, costs: threshold_bisection(costs, b, LO),
            rounds=3 if q > 4096 else None)


@pytest.mark.parametrize("q", SIZES)
@pytest.mark.parametrize("form", FORMS)
def test_heap_greedy(benchmark, form, q):
    run(benchmark, form, q, lambda _w, b, _kwargs, costs: heap_greedy(costs, b, LO), rounds=3 if q > 1024 else 10)


@pytest.mark.parametrize("q", [256, 1024])  # O(Q * B * m): 4096 would take minutes and gigabytes
@pytest.mark.parametrize("form", FORMS)
def test_knapsack_dp(benchmark, form, q):
    run(benchmark, form, q, lambda _w, b, _kwargs, costs: knapsack_dp(costs, b, LO), rounds=3 if q > 256 else 5)


@pytest.mark.parametrize("q", [256])  # cubic in Q: 35 s at 1024
def test_scipy_slsqp(benchmark, q):
    run(benchmark, "rloo", q, lambda w, b, _kwargs, _costs: slsqp_relaxed(w, b, LO, HI), rounds=3)


@pytest.mark.parametrize("q", SIZES)
def test_table_read(benchmark, q):
    """Reading the per-prompt table once (numpy's sum): the floor for any method that looks at it."""
    table = instance("table", q)[3]
    benchmark.group = f"table Q={q}"
    benchmark.extra_info.update(form="table", prompts=q)
    benchmark(table.sum)


@pytest.mark.parametrize("estimator", vipfast.ESTIMATORS)
def test_vipfast_budget_1e15(benchmark, estimator):
    """The same instance at Q = 4096 with no upper bound and a budget of 10^15: the time does not grow."""
    weights = instance(estimator, 4096)[0]
    benchmark.group = f"{estimator} Q=4096 budget=1e15"
    benchmark.extra_info.update(form=estimator, prompts=4096, budget=10**15)
    counts = benchmark(lambda: vipfast.allocate(weights, 10**15, min_rollouts=LO, estimator=estimator))
    assert counts.sum() == 10**15
