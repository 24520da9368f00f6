"""Fuzz the allocation API with valid and invalid input; check every valid result.

    python tests/fuzz/fuzz_allocation.py --calls 10000 --seed 0

Each entry point (allocate, allocate_relaxed, allocation_objective) gets --calls calls mixing
well-formed problems (checked against an independent brute-force, dynamic-programming or greedy
optimum where small, and for feasibility always) with broken ones: NaN/inf/negative/subnormal
weights, int64 extremes, huge budgets, unaligned and non-contiguous arrays, wrong dtypes and
shapes, curves and tables that are not convex. A broken call must raise ValueError or TypeError;
anything else (another exception, a wrong result, a refused valid call) counts as a crash. Run it
under AddressSanitizer/UBSan to catch memory errors the checks cannot see. Exit status 1 on any crash.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the references

import vipfast  # noqa: E402
from allocation_reference import (  # noqa: E402
    brute_force_optimum,
    cost_table,
    dynamic_programming_optimum,
    estimator_curve,
    heap_greedy,
    objective,
)
from vipfast.allocation import ESTIMATORS, estimator_min_rollouts  # noqa: E402

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXTREME_INTS = [INT64_MIN, INT64_MIN + 1, -1, 0, 1, 2, 3, INT64_MAX - 1, INT64_MAX, 2**63, 2**64 - 1, 2**62, 2**31]


class Crash(Exception):
    pass


# ----------------------------------------------------------------------------------------
# Arrays in every layout the API may meet
# ----------------------------------------------------------------------------------------


def unaligned(array: np.ndarray) -> np.ndarray:
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    out = raw[1:].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def strided(array: np.ndarray) -> np.ndarray:
    wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],) if array.ndim else (), dtype=array.dtype)
    if array.ndim == 0:
        return array
    wide[..., ::2] = array
    return wide[..., ::2]


def in_some_layout(rng, array: np.ndarray):
    """The same values, in another memory layout or container."""
    choice = rng.integers(0, 5)
    if choice == 0:
        return unaligned(array)
    if choice == 1:
        return strided(array)
    if choice == 2 and array.ndim == 1:
        return array.tolist()
    if choice == 3:
        return np.asfortranarray(array)
    return array


# ----------------------------------------------------------------------------------------
# Problems
# ----------------------------------------------------------------------------------------


def valid_weights(rng, q: int) -> np.ndarray:
    kind = rng.integers(0, 6)
    p = rng.beta(0.5, 0.5, q)
    w = p * (1 - p)
    if kind == 1:
        w[rng.random(q) < 0.5] = 0.0
    elif kind == 2 and q:
        w = rng.choice(w[: max(1, q // 3)], q)
    elif kind == 3:
        w = 10.0 ** rng.uniform(-300, 300, q)
    elif kind == 4:
        w = rng.uniform(0, 1, q) * 5e-324 * rng.integers(1, 1000, q)  # subnormal
    elif kind == 5:
        w = np.zeros(q)
    return w


def convex_curve(rng, width: int) -> np.ndarray:
    steps = np.sort(rng.exponential(size=max(width - 1, 0)))[::-1]
    return np.concatenate([[0.0], -np.cumsum(steps)]) * 10.0 ** rng.uniform(-5, 5)


def convex_table(rng, q: int, width: int) -> np.ndarray:
    if rng.random() < 0.3:
        lo = 1 + int(rng.integers(0, 3))
        return vipfast.knapsack_costs(rng.beta(0.3, 0.3, q), lo, lo + width - 1)
    increments = np.sort(rng.normal(size=(q, max(width - 1, 0))), axis=1)
    return np.concatenate([np.zeros((q, 1)), np.cumsum(increments, axis=1)], axis=1)


def broken(rng, array: np.ndarray):
    """The array damaged in one of the ways the API must refuse."""
    out = np.array(array, dtype=np.float64, copy=True)
    choice = rng.integers(0, 9)
    if out.size and choice < 4:
        out.flat[rng.integers(0, out.size)] = [np.nan, np.inf, -np.inf, -1.0][choice]
        return out
    if choice == 4:
        return out.reshape(out.shape + (1,))
    if choice == 5:
        return np.array(["a"] * max(out.size, 1))
    if choice == 6:
        return out.astype(np.complex128)
    if choice == 7 and out.ndim and out.shape[-1] > 2:
        out[..., 1] += abs(out[..., 0]) + 1.0  # breaks monotonicity/convexity (and is a valid weight)
        return out
    return np.empty((0, 3, 2))


class Problem:
    """A random problem, the call's keyword arguments, and whether it is well-formed."""

    def __init__(self, rng, force_valid: bool):
        self.valid = True
        self.q = q = int(rng.choice([0, 1, 2, 3, 4, 5, 8, 13, 40, 200, 1000]))
        form = rng.choice(["estimator", "estimator", "curve", "table"])
        self.estimator = str(rng.choice(ESTIMATORS))
        floor = estimator_min_rollouts(self.estimator) if form == "estimator" else 1
        self.lo = floor + int(rng.integers(0, 4))
        width = int(rng.integers(1, 9)) if q <= 13 else int(rng.integers(1, 70))
        self.hi = self.lo + width - 1
        self.weights = valid_weights(rng, q)
        self.curve = None
        self.form = form
        if form == "curve":
            self.curve = convex_curve(rng, width)
        elif form == "table":
            self.curve = convex_table(rng, q, width)
            if rng.random() < 0.5:
                self.weights = None
        huge = form == "estimator" and q > 0 and rng.random() < 0.1
        if huge:
            self.hi = None
            self.budget = q * self.lo + int(rng.choice([10**6, 10**12, 10**15, 2**62 // max(q, 1)]))
        else:
            self.budget = int(rng.integers(q * self.lo, q * self.hi + 1))
        if not force_valid and rng.random() < 0.5:
            self.damage(rng, q)

    def damage(self, rng, q):
        self.valid = False
        what = rng.integers(0, 7)
        if what == 0:
            self.budget = int(rng.choice(EXTREME_INTS)) if rng.random() < 0.7 else float(self.budget)
        elif what == 1:
            self.lo = int(rng.choice(EXTREME_INTS))
        elif what == 2 and self.weights is not None:
            self.weights = broken(rng, self.weights)
        elif what == 3 and self.curve is not None:
            self.curve = broken(rng, self.curve)
        elif what == 4:
            self.estimator = str(rng.choice(["", "ppo", "RLOO", "grpo "]))
        elif what == 5:
            self.hi = int(rng.choice(EXTREME_INTS))
        else:
            self.weights = None if self.curve is None or self.curve.ndim == 1 else valid_weights(rng, q + 1)
        self.valid = None  # may still be well-formed: either outcome is allowed

    def describe(self) -> str:
        with np.printoptions(precision=17, threshold=50):
            return (f"weights={self.weights!r} budget={self.budget} min_rollouts={self.lo} max_rollouts={self.hi} "
                    f"estimator={self.estimator!r} curve={self.curve!r}")

    def kwargs(self, rng):
        kwargs = dict(min_rollouts=self.lo, estimator=self.estimator)
        if self.curve is not None:
            kwargs["curve"] = in_some_layout(rng, self.curve) if isinstance(self.curve, np.ndarray) else self.curve
        elif self.hi is not None:
            kwargs["max_rollouts"] = self.hi
        weights = self.weights
        if isinstance(weights, np.ndarray) and weights.dtype == np.float64 and rng.random() < 0.5:
            if rng.random() < 0.2 and np.all(np.abs(weights) < 1e38):  # another dtype; the reference sees its values
                weights = weights.astype(np.float32)
                self.weights = weights.astype(np.float64)
            else:
                weights = in_some_layout(rng, weights)
        return weights, kwargs

    def costs(self):
        """[Q, width] costs of a well-formed problem with a bounded range (None when too large)."""
        hi = self.hi if self.curve is None else self.lo + self.curve.shape[-1] - 1
        if hi is None or hi - self.lo > 200:
            return None, hi
        curve = estimator_curve(self.estimator, self.lo, hi) if self.curve is None else self.curve
        return cost_table(self.weights, curve), hi


# ----------------------------------------------------------------------------------------
# Checks of valid results
# ----------------------------------------------------------------------------------------


def check_counts(problem: Problem, counts, relaxed: bool):
    q = problem.q
    if counts.shape != (q,) or counts.dtype != (np.float64 if relaxed else np.int64):
        raise Crash(f"result has shape {counts.shape} and dtype {counts.dtype}")
    total = float(counts.sum()) if relaxed else int(counts.sum())
    if abs(total - problem.budget) > (1e-9 * problem.budget if relaxed else 0):
        raise Crash(f"counts sum to {total}, not the budget {problem.budget}")
    costs, hi = problem.costs()
    slack = 1e-9 * max(1, problem.lo) if relaxed else 0
    if q and (counts.min() < problem.lo - slack or (hi is not None and counts.max() > hi + slack)):
        raise Crash(f"counts leave [{problem.lo}, {hi}]")
    if relaxed or costs is None or not np.all(np.isfinite(costs)):
        return
    got = objective(costs, counts, problem.lo)
    spare, width = problem.budget - q * problem.lo, costs.shape[1]
    if q <= 5 and width ** q <= 5000:
        best = brute_force_optimum(costs, problem.budget, problem.lo)
    elif q * spare * width <= 400_000:
        best = dynamic_programming_optimum(costs, problem.budget, problem.lo)
    elif spare <= 50_000:
        best = objective(costs, heap_greedy(costs, problem.budget, problem.lo), problem.lo)
    else:
        return
    scale = np.abs(costs).max(initial=0.0) * max(q, 1)
    if got > best + 1e-12 * max(abs(best), scale, 1e-300):
        raise Crash(f"objective {got!r} above the optimum {best!r}")


def call_allocate(problem: Problem, rng, relaxed: bool):
    weights, kwargs = problem.kwargs(rng)
    solver = vipfast.allocate_relaxed if relaxed else vipfast.allocate
    counts = solver(weights, problem.budget, **kwargs)
    check_counts(problem, counts, relaxed)


def call_objective(problem: Problem, rng, _relaxed: bool):
    weights, kwargs = problem.kwargs(rng)
    q = problem.q
    costs, hi = problem.costs() if problem.valid else (None, problem.hi)
    upper = hi if hi is not None else problem.lo + 50
    counts = rng.integers(problem.lo, upper + 1, q) if problem.valid is not None else None
    if counts is None:  # a damaged problem: damage the counts too, sometimes
        counts = rng.choice([
            rng.integers(problem.lo, upper + 1, q), np.full(q, 2**64 - 1, dtype=np.uint64), np.full(q, 1e19),
            rng.integers(problem.lo, upper + 1, q + 1), np.full(q, 0.5), np.zeros((q, 2), dtype=np.int64)])
        counts = in_some_layout(rng, np.asarray(counts)) if rng.random() < 0.5 else counts
    elif rng.random() < 0.5:
        counts = in_some_layout(rng, counts)
    value = vipfast.allocation_objective(weights, counts, **kwargs)
    if problem.valid and costs is not None and np.all(np.isfinite(costs)):
        expected = objective(costs, np.asarray(counts, dtype=np.int64), problem.lo)
        if not abs(value - expected) <= 1e-12 * max(np.abs(costs).sum(), 1e-300):
            raise Crash(f"objective {value!r} differs from the reference {expected!r}")


ENTRIES = {
    "allocate": (call_allocate, False),
    "allocate_relaxed": (call_allocate, True),
    "allocation_objective": (call_objective, False),
}


def fuzz(entry: str, calls: int, rng) -> int:
    run, relaxed = ENTRIES[entry]
    valid = invalid = crashes = 0
    for i in range(calls):
        problem = Problem(rng, force_valid=i % 3 == 0)
        try:
            run(problem, rng, relaxed)
            valid += 1
        except (ValueError, TypeError) as error:
            if problem.valid:  # a well-formed problem was refused
                crashes += 1
                print(f"{entry}: call {i} refused a valid problem: {error!r}", file=sys.stderr)
            else:
                invalid += 1
        except Exception:  # noqa: BLE001 - anything else is a crash
            crashes += 1
            print(f"{entry}: call {i} crashed on {problem.describe()}:\n{traceback.format_exc()}", file=sys.stderr)
    print(f"fuzz {entry}: {calls} calls ({valid} valid, {invalid} invalid), {crashes} crashes")
    return crashes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per entry point")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    crashes = sum(fuzz(entry, args.calls, np.random.default_rng([args.seed, i])) for i, entry in enumerate(ENTRIES))
    print(f"fuzz: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
