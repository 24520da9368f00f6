"""CoBA-RL and GRESO: each formula against a float64 reference written from the papers' descriptions,
the exact optimum against brute force and a heap greedy, GRESO's screen statistics, exact resume."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque

import numpy as np
import pytest
from scipy import stats

import vipfast
from vipfast.allocators import CobaAllocator, GresoAllocator, load_allocator, make_allocator
from vipfast.allocators.coba import coba_costs, coba_shape, coba_tau, coba_values
from vipfast.allocators.greso import greso_adapt, greso_keep_probability
from vipfast.sampling import Outcomes, Prompts, make_sampler

# ---------------------------------------------------------------------------------------------------
# References, written from the papers' descriptions (float64, plain Python where it reads clearer)
# ---------------------------------------------------------------------------------------------------


def value_reference(n, p, alpha, beta, tau, eps=0.01):
    """CoBA-RL: V(n, p) = (1 - exp(-n/tau p(1-p))) BetaPDF(p; alpha, beta), p clipped to [eps, 1-eps]."""
    p = min(max(p, eps), 1 - eps)
    if p in (0.0, 1.0):
        return 0.0  # no uncertainty left to reduce, whatever the density says
    return -math.expm1(-n / tau * p * (1 - p)) * stats.beta.pdf(p, alpha, beta)  # 1 - exp(-x), exact for tiny x


def shape_reference(failure, total):
    """Failure rates up to one half pass through 1/(1+exp(-10(F-1/2))); alpha = 1 + (S-2) F', beta = S - alpha."""
    f = 1 / (1 + math.exp(-10 * (failure - 0.5))) if failure <= 0.5 else failure
    alpha = min(max(1 + (total - 2) * f, 1), total - 1)
    return alpha, total - alpha


def tau_reference(p, tau_min=3.0, tau_max=12.0, var_max=1 / 6, eps=0.01):
    clipped = [min(max(x, eps), 1 - eps) for x in p]
    mean = sum(clipped) / len(clipped)
    var = sum((x - mean) ** 2 for x in clipped) / len(clipped)
    return tau_min + (tau_max - tau_min) * min(var / var_max, 1.0)


def heap_greedy(values, lo, budget):
    """The published CoBA allocation: start every prompt at lo, then give each further rollout to the
    prompt with the largest marginal gain V(n+1) - V(n), up to the table's end. values: [Q, hi-lo+1]."""
    counts = [lo] * len(values)
    heap = [(-(row[1] - row[0]), q) for q, row in enumerate(values) if len(row) > 1]
    heapq.heapify(heap)
    for _ in range(budget - lo * len(values)):
        _, q = heapq.heappop(heap)
        counts[q] += 1
        k = counts[q] - lo
        if k + 1 < len(values[q]):
            heapq.heappush(heap, (-(values[q][k + 1] - values[q][k]), q))
    return np.array(counts)


def total_value(values, counts, lo):
    return sum(row[n - lo] for row, n in zip(values, counts))


class CobaReference:
    """CoBA-RL's state: each prompt's last `window` visits, the last `window` updates' failure rates."""

    def __init__(self, window=3, total=7.0):
        self.window, self.total = window, total
        self.visits, self.failures = {}, deque(maxlen=window)

    def rate(self, key):
        visits = self.visits.get(key, [])
        trials = sum(t for _, t in visits)
        return sum(s for s, _ in visits) / trials if trials else 0.5

    def shape(self):
        if not self.failures:
            return self.total - 2, 2.0
        return shape_reference(sum(self.failures) / len(self.failures), self.total)

    def update(self, keys, rewards, sizes):
        per_key, start = {}, 0
        for key, size in zip(keys.tolist(), sizes.tolist()):
            s, t = per_key.get(key, (0.0, 0))
            per_key[key] = (s + float(np.sum(rewards[start:start + size])), t + size)
            start += size
        seen = {k: v for k, v in per_key.items() if v[1] > 0}
        if not seen:
            return
        self.failures.append(sum(1 - s / t for s, t in seen.values()) / len(seen))
        for key, visit in seen.items():
            self.visits[key] = (self.visits.get(key, []) + [visit])[-self.window:]


class GresoReference:
    """GRESO's state: each prompt's visits as 'easy' / 'hard' / 'mixed', and the two adapted bases."""

    def __init__(self, p_easy=0.5, p_hard=0.5, target=0.25):
        self.history, self.p = {}, {"easy": p_easy, "hard": p_hard}
        self.target = {"easy": target / 3, "hard": 2 * target / 3}

    def streak(self, key):
        visits = self.history.get(key, [])
        if not visits or visits[-1] == "mixed":
            return "easy", 0
        kind = visits[-1]
        return kind, next((i for i, v in enumerate(reversed(visits)) if v != kind), len(visits))

    def keep(self, key):
        kind, count = self.streak(key)
        return 1.0 if count == 0 else max(self.p[kind] ** count, 0.01)

    def update(self, keys, rewards, sizes):
        groups, start = {}, 0
        for key, size in zip(keys.tolist(), sizes.tolist()):
            if size:
                groups.setdefault(key, []).append(rewards[start:start + size])
            start += size
        if not groups:
            return
        kinds = {}
        for key, parts in groups.items():  # a visit is zero-variance when each of its groups is, on one side
            sides = {"mixed" if g.max() != g.min() else "easy" if g[0] >= 0.5 else "hard" for g in parts}
            kinds[key] = sides.pop() if len(sides) == 1 else "mixed"
        if any(key in self.history for key in kinds):
            for kind in ("easy", "hard"):
                share = sum(k == kind for k in kinds.values()) / len(kinds)
                step = -0.01 if share >= self.target[kind] else 0.01
                self.p[kind] = min(max(self.p[kind] + step, 0.05), 0.95)
        for key, kind in kinds.items():
            self.history.setdefault(key, []).append(kind)


def without_memory(stats_):
    return {k: v for k, v in stats_.items() if k != "memory_bytes"}


def random_rewards(rng, rates, counts):
    return (rng.random(int(np.sum(counts))) < np.repeat(rates, counts)).astype(float)


# ---------------------------------------------------------------------------------------------------
# CoBA-RL: formulas
# ---------------------------------------------------------------------------------------------------


def test_coba_value_matches_the_reference_on_random_inputs(rng):
    p = np.r_[rng.uniform(0, 1, 40), 0.0, 1.0, 0.005, 0.995]
    counts = np.arange(0, 40)
    for _ in range(5):
        alpha, beta, tau = rng.uniform(0.2, 9), rng.uniform(0.2, 9), rng.uniform(0.5, 20)
        values = coba_values(p, counts, alpha, beta, tau)
        expected = [[value_reference(n, x, alpha, beta, tau) for n in counts] for x in p]
        np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-300, err_msg=rng.seed_for_message)
        np.testing.assert_array_equal(coba_costs(p, 2, 39, alpha, beta, tau), -values[:, 2:])


@pytest.mark.parametrize("alpha, beta", [(0.3, 2.0), (2.0, 0.3), (0.5, 0.5), (1.0, 1.0), (1.0, 4.0)])
def test_coba_value_without_smoothing_is_zero_at_the_ends_even_where_the_density_is_infinite(alpha, beta):
    """V -> 0 toward p = 0 and p = 1 (like n p^alpha / (tau B) near 0) and is 0 there, not inf or nan."""
    toward_zero, toward_one = 10.0 ** -np.arange(2, 12, 3), 1 - 10.0 ** -np.arange(2, 12, 3)
    p = np.r_[0.0, 1.0, toward_zero, toward_one]
    values = coba_values(p, np.arange(2, 33), alpha, beta, 3.0, smoothing=0.0)
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    np.testing.assert_array_equal(values[:2], 0.0)
    expected = [[value_reference(n, x, alpha, beta, 3.0, eps=0.0) for n in range(2, 33)] for x in p[2:]]
    np.testing.assert_allclose(values[2:], expected, rtol=1e-9)
    assert np.all(np.diff(values[2:6, 0]) < 0) and np.all(np.diff(values[6:, 0]) < 0)


def test_coba_value_is_concave_in_n_for_every_p_and_shape(rng):
    """Second differences <= 0 (to roundoff) and allocate accepts the cost tables, also near the ends."""
    p = np.r_[rng.uniform(0, 1, 200), 0.0, 1.0, 1e-12, 1 - 1e-12, 0.5]
    for smoothing in (0.0, 0.01):
        for _ in range(20):
            alpha, beta, tau = rng.uniform(0.05, 12), rng.uniform(0.05, 12), rng.uniform(0.1, 30)
            values = coba_values(p, np.arange(1, 65), alpha, beta, tau, smoothing)
            second = np.diff(values, 2, axis=1)
            assert np.all(second <= 1e-13 * np.maximum(values[:, 2:], 1)), rng.seed_for_message
            assert np.all(np.diff(values, axis=1) >= 0), rng.seed_for_message
            vipfast.allocate(None, 8 * len(p), min_rollouts=1, curve=-values)


def test_coba_shape_and_tau_match_the_reference(rng):
    for failure in np.r_[rng.uniform(0, 1, 50), 0.0, 0.5, 1.0]:
        for total in (2.0, 3.0, 7.0, 11.0, rng.uniform(2, 30)):
            np.testing.assert_allclose(coba_shape(failure, total), shape_reference(failure, total), rtol=1e-14)
    for _ in range(20):
        p = rng.uniform(0, 1, int(rng.integers(1, 50)))
        p[rng.random(len(p)) < 0.2] = rng.choice([0.0, 1.0])
        assert coba_tau(p, 3.0, 12.0, 1 / 6, 0.01) == pytest.approx(tau_reference(p), rel=1e-12)
    assert coba_tau(np.full(9, 0.3), 3.0, 12.0, 1 / 6, 0.01) == 3.0
    assert coba_tau(np.r_[np.zeros(5), np.ones(5)], 3.0, 12.0, 1 / 6, 0.01) == 12.0  # spread capped at v_max


# ---------------------------------------------------------------------------------------------------
# CoBA-RL: the exact optimum
# ---------------------------------------------------------------------------------------------------


def test_coba_exact_optimum_equals_brute_force_and_the_heap_greedy(rng):
    for _ in range(60):
        q, lo = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        hi = lo + int(rng.integers(0, 6))
        p = rng.uniform(0, 1, q)
        p[rng.random(q) < 0.25] = rng.choice([0.0, 0.5, 1.0])
        alpha, beta, tau = rng.uniform(0.3, 9), rng.uniform(0.3, 9), rng.uniform(0.5, 15)
        values = coba_values(p, np.arange(lo, hi + 1), alpha, beta, tau)
        budget = int(rng.integers(q * lo, q * hi + 1))
        counts = vipfast.allocate(None, budget, min_rollouts=lo, curve=-values)
        assert counts.sum() == budget and counts.min() >= lo and counts.max() <= hi
        feasible = (c for c in itertools.product(range(lo, hi + 1), repeat=q) if sum(c) == budget)
        best = max(total_value(values, c, lo) for c in feasible)
        greedy = total_value(values, heap_greedy(values, lo, budget), lo)
        found = total_value(values, counts, lo)
        assert found == pytest.approx(best, rel=1e-12, abs=1e-15), rng.seed_for_message
        assert greedy == pytest.approx(best, rel=1e-12, abs=1e-15), rng.seed_for_message


def test_coba_plans_follow_the_reference_rule_step_by_step(rng):
    """p, the Beta shape, τ and the optimum value of every plan against CobaReference + the heap greedy,
    over batches drawn from a pool, with a duplicated prompt and groups that came back empty."""
    allocator = make_allocator("coba", budget_per_prompt=7.0, min_rollouts=2, max_rollouts=20)
    reference = CobaReference()
    pool = rng.integers(0, 2**64, size=30, dtype=np.uint64)
    rates = rng.uniform(0, 1, 30)
    rates[:4] = [0.0, 0.0, 1.0, 1.0]
    for step in range(12):
        rows = rng.choice(30, size=10, replace=False)
        rows[-1] = rows[0]  # a prompt twice in one batch
        keys = pool[rows]
        plan = allocator.plan(keys=keys)
        p = np.array([reference.rate(k) for k in keys.tolist()])
        alpha, beta = reference.shape()
        tau = tau_reference(p)
        values = np.array([[value_reference(n, x, alpha, beta, tau) for n in range(2, 21)] for x in p])
        np.testing.assert_allclose(plan.p, p, rtol=1e-13, err_msg=rng.seed_for_message)
        assert allocator.shape() == pytest.approx((alpha, beta), rel=1e-13)
        np.testing.assert_allclose(plan.weights, stats.beta.pdf(np.clip(p, 0.01, 0.99), alpha, beta), rtol=1e-12)
        greedy = heap_greedy(values, 2, plan.total)
        assert total_value(values, plan.counts, 2) == pytest.approx(total_value(values, greedy, 2), rel=1e-12)
        sizes = plan.counts.copy()
        sizes[rng.random(10) < 0.15] = 0
        rewards = random_rewards(rng, rates[rows], sizes)
        allocator.update(plan, rewards, sizes)
        reference.update(keys, rewards, sizes)
    assert allocator.failure_rate == pytest.approx(sum(reference.failures) / len(reference.failures), rel=1e-13)


def test_coba_moves_rollouts_from_easy_to_hard_prompts_as_the_failure_rate_falls():
    """The density's mode follows the failure rate: a weak policy favours nearly solved prompts, a strong one
    the hard prompts. A uniform split or a shape that ignores the failure rate fails this."""
    keys = np.arange(2, dtype=np.uint64)  # p = 0.2 (hard) and 0.8 (easy)
    plans = {}
    for failure in (0.9, 0.1):
        allocator = CobaAllocator(budget_per_prompt=10, min_rollouts=2, max_rollouts=32)
        for _ in range(3):
            plan = allocator.plan(keys=keys)
            allocator.update(plan, np.r_[np.ones(2), np.zeros(8), np.ones(8), np.zeros(2)], [10, 10])
        allocator.failure_rates.clear()
        allocator.failure_rates.append(failure)
        plans[failure] = allocator.plan(keys=keys).counts
    assert plans[0.9][1] > plans[0.9][0] + 6 and plans[0.1][0] > plans[0.1][1] + 6, plans


def test_coba_reads_each_prompts_last_three_visits_only():
    allocator = CobaAllocator(budget_per_prompt=4, min_rollouts=2, max_rollouts=8)
    key = np.array([7], dtype=np.uint64)
    for successes in (4, 0, 0, 2):  # the first visit drops out of the window
        plan = allocator.plan(keys=key)
        allocator.update(plan, np.r_[np.ones(successes), np.zeros(4 - successes)])
    assert allocator.success_rates(key)[0] == pytest.approx(2 / 12)
    allocator.update(allocator.plan(keys=key), np.zeros(0), [0])  # nothing came back: not a visit
    assert allocator.success_rates(key)[0] == pytest.approx(2 / 12)
    assert allocator.success_rates(np.array([8], dtype=np.uint64))[0] == 0.5


def test_coba_defaults_and_bounds():
    allocator = make_allocator("coba")
    assert allocator.bounds == dict(min_rollouts=2, max_rollouts=32)
    assert make_allocator("coba", estimator="grpo").bounds["min_rollouts"] == 3
    assert allocator.shape() == (5.0, 2.0)
    assert make_allocator("coba", min_rollouts=4, max_rollouts=12).bounds == dict(min_rollouts=4, max_rollouts=12)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(window=0), "window must be an integer >= 1"),
        (dict(window=2.5), "window must be an integer >= 1"),
        (dict(beta_sum=1.5), "beta_sum .* >= 2"),
        (dict(beta_sum=float("nan")), "beta_sum"),
        (dict(tau_min=5.0, tau_max=4.0), "0 < tau_min <= tau_max"),
        (dict(tau_min=0.0), "0 < tau_min <= tau_max"),
        (dict(variance_max=-1.0), "variance_max must be a positive number"),
        (dict(smoothing=0.5), r"smoothing must lie in \[0, 0.5\)"),
    ],
)
def test_coba_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        CobaAllocator(**options)


@pytest.mark.parametrize(
    "args, error, message",
    [
        (([0.5, np.nan], [2, 3], 2.0, 2.0, 3.0), ValueError, r"p\[1\] = nan is outside \[0, 1\]"),
        (([1.5], [2], 2.0, 2.0, 3.0), ValueError, r"p\[0\] = 1.5 is outside"),
        (([[0.5]], [2], 2.0, 2.0, 3.0), ValueError, "p must be 1-D"),
        ((["a"], [2], 2.0, 2.0, 3.0), TypeError, "p must hold real numbers"),
        (([0.5], [-1], 2.0, 2.0, 3.0), ValueError, "counts must be finite and >= 0"),
        (([0.5], [2], 0.0, 2.0, 3.0), ValueError, "alpha must be a finite number > 0"),
        (([0.5], [2], 2.0, np.inf, 3.0), ValueError, "beta must be a finite number > 0"),
        (([0.5], [2], 2.0, 2.0, -1.0), ValueError, "tau must be a finite number > 0"),
    ],
)
def test_coba_value_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        coba_values(*args)
    with pytest.raises(ValueError, match="min_rollouts <= max_rollouts"):
        coba_costs([0.5], 5, 4, 2.0, 2.0, 3.0)
    with pytest.raises(ValueError, match=r"failure_rate must lie in \[0, 1\]"):
        coba_shape(float("nan"), 7.0)


# ---------------------------------------------------------------------------------------------------
# GRESO
# ---------------------------------------------------------------------------------------------------


def greso_steps(allocator, reference, rng, pool, rates, steps, size=12):
    """Screen, plan and learn `steps` times, checking the keep probabilities and bases against the reference."""
    for _ in range(steps):
        candidates = pool[rng.choice(len(pool), size=size, replace=False)]
        expected = np.array([reference.keep(k) for k in candidates.tolist()])
        np.testing.assert_allclose(allocator.keep_probability(candidates), expected, rtol=1e-13,
                                   err_msg=rng.seed_for_message)
        keys = candidates[allocator.screen(candidates)]
        plan = allocator.plan(keys=keys)
        assert plan.total == allocator.budget_for(len(keys))
        assert len(plan) == 0 or np.ptp(plan.counts) <= 1
        index = np.searchsorted(pool, keys)
        sizes = plan.counts.copy()
        sizes[rng.random(len(sizes)) < 0.1] = 0
        sizes[rng.random(len(sizes)) < 0.1] = 1  # a single rollout is a zero-variance group too
        rewards = random_rewards(rng, rates[index], sizes)
        allocator.update(plan, rewards, sizes)
        reference.update(keys, rewards, sizes)
        assert (allocator.p_easy, allocator.p_hard) == pytest.approx((reference.p["easy"], reference.p["hard"]))


def test_greso_keep_probabilities_and_adaptation_follow_the_reference(rng):
    allocator = make_allocator("greso", budget_per_prompt=4.0, min_rollouts=2, max_rollouts=8,
                               seed=int(rng.integers(1000)))
    reference = GresoReference()
    pool = np.sort(rng.integers(0, 2**64, size=24, dtype=np.uint64))
    rates = np.r_[np.zeros(8), np.ones(8), rng.uniform(0.2, 0.8, 8)]
    greso_steps(allocator, reference, rng, pool, rates, steps=40)
    held = [k for k in pool.tolist() if reference.streak(k)[1] > 1]
    assert held, "the run built no streaks to test"


def test_greso_formulas(rng):
    easy = rng.integers(0, 12, 100)
    hard = np.where(easy > 0, 0, rng.integers(0, 12, 100))
    p_easy, p_hard = rng.uniform(0.05, 0.95, 2)
    expected = [1.0 if e == h == 0 else max((p_easy if e else p_hard) ** (e or h), 0.01) for e, h in zip(easy, hard)]
    np.testing.assert_allclose(greso_keep_probability(easy, hard, p_easy, p_hard), expected, rtol=1e-14)
    assert greso_adapt(0.5, 0.3, 0.25, 0.01, 0.05, 0.95) == pytest.approx(0.49)
    assert greso_adapt(0.5, 0.25, 0.25, 0.01, 0.05, 0.95) == pytest.approx(0.49)  # at the target: skip more
    assert greso_adapt(0.5, 0.1, 0.25, 0.01, 0.05, 0.95) == pytest.approx(0.51)
    assert greso_adapt(0.05, 0.9, 0.25, 0.01, 0.05, 0.95) == 0.05
    assert greso_adapt(0.95, 0.0, 0.25, 0.01, 0.05, 0.95) == 0.95


def streaked_greso(seed):
    """A GRESO allocator whose prompts 0..4 hold: no streak, easy 1, easy 3, hard 2, hard 9 (bases 0.5)."""
    allocator = GresoAllocator(budget_per_prompt=2, min_rollouts=2, max_rollouts=2, seed=seed)
    visits = {0: [[1.0, 0.0]], 1: [[1.0, 1.0]], 2: [[1.0, 1.0]] * 3, 3: [[0.0, 0.0]] * 2, 4: [[0.0, 0.0]] * 9}
    for key, groups in visits.items():
        for rewards in groups:
            allocator.update(allocator.plan(keys=np.array([key], dtype=np.uint64)), rewards)
    allocator.p_easy = allocator.p_hard = 0.5
    return allocator


def test_greso_screen_keeps_prompts_at_their_probabilities():
    """Binomial tests (fixed seed) per streak class; a screen that keeps everything, or ignores the streak
    length or the floor, fails them."""
    allocator = streaked_greso(seed=20250602)
    probabilities = np.array([1.0, 0.5, 0.125, 0.25, 0.01])
    np.testing.assert_allclose(allocator.keep_probability(np.arange(5, dtype=np.uint64)), probabilities)
    copies = 4000
    keys = np.tile(np.arange(5, dtype=np.uint64), copies)
    kept = np.zeros(5)
    for _ in range(5):
        keep = allocator.screen(keys)
        kept += np.bincount(keys[keep].astype(np.int64), minlength=5)
    assert kept[0] == 5 * copies
    for k in range(1, 5):
        assert stats.binomtest(int(kept[k]), 5 * copies, probabilities[k]).pvalue > 1e-3, (k, kept[k])
    assert allocator.stats()["skip_rate"] == pytest.approx(1 - keep.mean(), rel=1e-15)


def test_greso_screen_draws_one_uniform_per_prompt_from_its_seeded_generator(rng):
    seed = int(rng.integers(2**32))
    allocator = streaked_greso(seed=seed)
    stream = np.random.default_rng(seed)
    keys = rng.integers(0, 5, 300).astype(np.uint64)
    for _ in range(3):
        expected = stream.random(len(keys)) < allocator.keep_probability(keys)
        np.testing.assert_array_equal(allocator.screen(keys), expected, err_msg=rng.seed_for_message)


def test_greso_zero_variance_means_all_rewards_equal_for_fractional_and_thresholded_rewards():
    allocator = GresoAllocator(budget_per_prompt=2, min_rollouts=2, max_rollouts=4, seed=0)
    keys = np.arange(4, dtype=np.uint64)
    plan = allocator.plan(keys=keys)
    allocator.update(plan, [0.7, 0.7, 0.3, 0.3, 0.7, 0.3, 1.0, 1.0])
    np.testing.assert_allclose(allocator.keep_probability(keys), [0.5, 0.5, 1.0, 0.5])
    assert allocator.streaks.read("easy", keys).tolist() == [1, 0, 0, 1]
    thresholded = GresoAllocator(budget_per_prompt=2, min_rollouts=2, max_rollouts=4, reward_threshold=2.5)
    thresholded.update(thresholded.plan(keys=keys[:3]), [3.0, 4.0, 3.0, 3.0, -1.0, -1.0])
    assert thresholded.streaks.read("easy", keys[:3]).tolist() == [0, 1, 0]  # 3 and 4 both pass, but differ
    assert thresholded.streaks.read("hard", keys[:3]).tolist() == [0, 0, 1]


def test_greso_merges_a_prompts_groups_within_one_update():
    allocator = GresoAllocator(budget_per_prompt=2, min_rollouts=2, max_rollouts=4, seed=0)
    keys = np.array([5, 5, 6, 6], dtype=np.uint64)
    allocator.update(allocator.plan(keys=keys), [1, 1, 0, 0, 1, 1, 1, 1])
    assert allocator.streaks.read("easy", keys[[0, 2]]).tolist() == [0, 1]
    assert allocator.streaks.read("hard", keys[[0, 2]]).tolist() == [0, 0]


class ListSource:
    """Prompts 0, 1, 2, ... in order, keyed by index."""

    def __init__(self):
        self.next = 0

    def draw(self, count):
        ids = np.arange(self.next, self.next + count, dtype=np.int64)
        self.next += count
        return Prompts(ids=ids, keys=(ids % 40).astype(np.uint64))


def test_greso_under_the_sampler_keeps_the_step_budget_while_skipping(rng):
    """The sampler refills skipped prompts: every step plans its full prompts and rollouts."""
    allocator = make_allocator("greso", budget_per_prompt=6.0, min_rollouts=2, max_rollouts=16, seed=3)
    rates = np.r_[np.zeros(20), np.ones(10), np.full(10, 0.5)]

    def generate(prompts, counts):
        rewards = random_rewards(rng, rates[prompts.keys.astype(np.int64)], counts)
        return Outcomes(rewards=rewards, tokens=np.zeros(len(rewards), dtype=np.int64))

    sampler, source = make_sampler("single"), ListSource()
    skipped, informative = 0, []
    for step in range(30):
        batch = sampler.sample(allocator, source, generate, num_prompts=16)
        assert batch.complete and len(batch.prompts) == 16 and batch.generated_rollouts == 96
        skipped += batch.prompts_drawn - 16
        informative.append(np.mean(batch.prompts.keys >= 30))
        batch.learn(allocator)
    # a quarter of the source is informative; screening raises its share of the trained prompts
    assert skipped > 100 and np.mean(informative[10:]) > 0.4, (skipped, informative)


def test_greso_resume_gives_identical_screens_and_plans(rng, tmp_path):
    allocator = make_allocator("greso", budget_per_prompt=4.0, min_rollouts=2, max_rollouts=8, seed=11)
    reference = GresoReference()
    pool = np.sort(rng.integers(0, 2**64, size=20, dtype=np.uint64))
    rates = np.r_[np.zeros(7), np.ones(7), np.full(6, 0.5)]
    greso_steps(allocator, reference, rng, pool, rates, steps=15)
    allocator.save(tmp_path / "greso.npz")
    restored = load_allocator(tmp_path / "greso.npz")
    for _ in range(5):
        screens = [a.screen(pool) for a in (allocator, restored)]
        np.testing.assert_array_equal(*screens)
        plans = [a.plan(keys=pool[s]) for a, s in zip((allocator, restored), screens)]
        np.testing.assert_array_equal(plans[0].counts, plans[1].counts)
        rewards = random_rewards(rng, rates[screens[0]], plans[0].counts)
        for a, plan in zip((allocator, restored), plans):
            a.update(plan, rewards)
    assert without_memory(restored.rule_stats()) == without_memory(allocator.rule_stats())


def test_coba_resume_gives_identical_plans(rng, tmp_path):
    allocator = make_allocator("coba", budget_per_prompt=6.0, window=2, beta_sum=9.0)
    keys = rng.integers(0, 2**64, size=25, dtype=np.uint64)
    rates = rng.uniform(0, 1, 25)
    for _ in range(4):
        plan = allocator.plan(keys=keys)
        allocator.update(plan, random_rewards(rng, rates, plan.counts))
    allocator.save(tmp_path / "coba.npz")
    restored = load_allocator(tmp_path / "coba.npz")
    assert restored.window == 2 and restored.beta_sum == 9.0
    for _ in range(3):
        plans = [a.plan(keys=keys) for a in (allocator, restored)]
        np.testing.assert_array_equal(plans[0].counts, plans[1].counts)
        rewards = random_rewards(rng, rates, plans[0].counts)
        for a, plan in zip((allocator, restored), plans):
            a.update(plan, rewards)
    assert without_memory(restored.rule_stats()) == without_memory(allocator.rule_stats())


def test_damaged_rule_state_is_a_value_error(tmp_path):
    path = tmp_path / "greso.npz"
    streaked_greso(seed=1).save(path)
    arrays = dict(np.load(path))
    arrays["state/p"] = np.array([0.5, 2.0])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"cannot restore.*p must hold"):
        load_allocator(tmp_path / "bad.npz")
    CobaAllocator().save(tmp_path / "coba.npz")
    arrays = dict(np.load(tmp_path / "coba.npz"))
    arrays["state/failure_rates"] = np.array([0.2, 0.3, 0.4, 0.5])
    np.savez(tmp_path / "bad_coba.npz", **arrays)
    with pytest.raises(ValueError, match="cannot restore.*at most 3 rates"):
        load_allocator(tmp_path / "bad_coba.npz")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(p_easy=0.01), r"p_easy must lie in \[min_p, max_p\]"),
        (dict(p_hard=float("nan")), "p_hard must lie in"),
        (dict(min_p=0.0), "0 < min_p <= max_p <= 1"),
        (dict(target_zero_variance=1.0), r"target_zero_variance must lie in \(0, 1\)"),
        (dict(step=0.0), "step must be a positive number"),
        (dict(min_keep=1.5), r"min_keep must lie in \[0, 1\]"),
        (dict(seed=-1), "seed must be a non-negative integer or None"),
        (dict(seed=1.5), "seed must be a non-negative integer or None"),
    ],
)
def test_greso_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        GresoAllocator(**options)


def test_greso_screen_input_and_empty_batches():
    allocator = GresoAllocator(seed=0)
    assert allocator.screen(np.zeros(0, dtype=np.uint64)).shape == (0,)
    assert allocator.stats()["skip_rate"] is None
    with pytest.raises(ValueError, match="keys must be 1-D"):
        allocator.screen(np.zeros((2, 2), dtype=np.uint64))
    with pytest.raises(ValueError, match="negative"):
        allocator.screen([-1])
    np.testing.assert_array_equal(allocator.screen([0, 2**64 - 1]), [True, True])
