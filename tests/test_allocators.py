"""Allocators: the shared contract (budget, bounds, Plan, update, checkpoints) and what each rule allocates."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

import vipfast
from vipfast.allocators import (
    BetaAllocator,
    KnapsackAllocator,
    Plan,
    UniformAllocator,
    VIPAllocator,
    allocator_names,
    load_allocator,
    make_allocator,
    successes_per_group,
)
from vipfast.allocators.beta import beta_moments

SHARED = dict(budget_per_prompt=6.0, min_rollouts=2, max_rollouts=16, embedding_dim=16, embedder="hashing")


def build(name, **options):
    return make_allocator(name, **{**SHARED, **options})


def random_batch(rng, q, dim=16):
    embeddings = rng.normal(size=(q, dim)).astype(np.float32)
    return rng.integers(0, 2**63, size=q, dtype=np.uint64), embeddings


def learn_rates(allocator, rng, keys, embeddings, rates, steps):
    """`steps` rounds of plan + update with Bernoulli(rates[q]) rewards; returns the last plan."""
    for _ in range(steps):
        plan = allocator.plan(keys=keys, embeddings=embeddings)
        allocator.update(plan, (rng.random(plan.total) < np.repeat(rates, plan.counts)).astype(float))
    return allocator.plan(keys=keys, embeddings=embeddings)


def test_the_registry_lists_every_rule():
    assert set(allocator_names()) >= {"uniform", "vipfast", "paper", "knapsack", "beta"}
    with pytest.raises(ValueError, match="allocator must be one of"):
        make_allocator("ppo")
    with pytest.raises(TypeError, match="unexpected keyword"):
        make_allocator("uniform", budgett=3)
    with pytest.raises(TypeError, match="fixes"):
        make_allocator("paper", preset="vipfast")


@pytest.mark.parametrize("name", allocator_names())
def test_every_allocator_respects_budget_and_bounds(name, rng):
    allocator = build(name)
    for _ in range(3):
        q = int(rng.integers(1, 40))
        keys, embeddings = random_batch(rng, q)
        plan = allocator.plan(keys=keys, embeddings=embeddings)
        assert isinstance(plan, Plan) and plan.counts.dtype == np.int64, rng.seed_for_message
        assert plan.total == round(6.0 * q) and plan.counts.min() >= 2 and plan.counts.max() <= 16, rng.seed_for_message
        np.testing.assert_array_equal(np.asarray(plan), plan.counts)
        allocator.update(plan, (rng.random(plan.total) < 0.4).astype(float))


@pytest.mark.parametrize("name", allocator_names())
def test_resume_after_save_gives_identical_plans(name, rng, tmp_path):
    allocator = build(name)
    keys, embeddings = random_batch(rng, 30)
    learn_rates(allocator, rng, keys, embeddings, np.full(30, 0.3), steps=3)
    path = tmp_path / "allocator.npz"
    allocator.save(path)
    restored = load_allocator(path)
    assert type(restored) is type(allocator) and restored.name == name
    first, second = restored.plan(keys=keys, embeddings=embeddings), allocator.plan(keys=keys, embeddings=embeddings)
    np.testing.assert_array_equal(first.counts, second.counts)
    np.testing.assert_array_equal(first.weights, second.weights)
    rewards = (rng.random(first.total) < 0.6).astype(float)
    restored.update(first, rewards)
    allocator.update(second, rewards)
    np.testing.assert_array_equal(restored.plan(keys=keys, embeddings=embeddings).weights,
                                  allocator.plan(keys=keys, embeddings=embeddings).weights)
    assert restored.stats()["predictions"] == allocator.stats()["predictions"]


@pytest.mark.slow
def test_a_gp_with_a_short_lengthscale_saves_and_loads_after_evictions(rng, tmp_path):
    """A fixed lengthscale of 0.1 and more prompts than the 4096-key store: the saved state must load."""
    allocator = vipfast.VIPAllocator(8.0, preset="gp", gp_options=dict(lengthscale=0.1), embedder=None,
                                     min_rollouts=2, max_rollouts=16)
    for _ in range(9):
        keys, embeddings = random_batch(rng, 512)
        plan = allocator.plan(keys=keys, embeddings=embeddings)
        allocator.update(plan, (rng.random(plan.total) < 0.4).astype(float))
    assert allocator.stats()["prompts_held"] == 4096
    allocator.save(tmp_path / "allocator.npz")
    restored = load_allocator(tmp_path / "allocator.npz")
    keys, embeddings = random_batch(rng, 64)
    np.testing.assert_array_equal(restored.plan(keys=keys, embeddings=embeddings).weights,
                                  allocator.plan(keys=keys, embeddings=embeddings).weights)


@pytest.mark.parametrize("name", ["vipfast", "gp", "paper", "knapsack", "beta", "coba"])
def test_prompts_near_one_half_get_more_rollouts_than_settled_ones(name, rng):
    """Fails for a uniform split and for inverted weights: the rule must read the outcomes."""
    allocator = build(name, budget_per_prompt=8.0, max_rollouts=32)
    keys, embeddings = random_batch(rng, 24)
    rates = np.repeat([0.0, 0.5, 1.0], 8)
    plan = learn_rates(allocator, rng, keys, embeddings, rates, steps=6)
    middle, settled = plan.counts[8:16].mean(), np.r_[plan.counts[:8], plan.counts[16:]].mean()
    assert middle > settled + 2, (plan.counts, rng.seed_for_message)


def test_vipfast_lowers_the_variance_objective_on_a_simulated_population():
    """The preset's plans weigh less than uniform's under the true p (a uniform or inverted stub fails)."""
    from vipfast.experiments import Scenario, simulate

    scenario = Scenario(num_prompts=256, num_clusters=8, dim=16, batch_size=64, steps=12, seed=11)
    vip = simulate(build("vipfast", budget_per_prompt=8.0, max_rollouts=32), scenario, progress=False).summary()
    assert vip["objective_vs_uniform"] < 0.9, vip


def test_fixed_total_budget():
    allocator = UniformAllocator(budget=100, min_rollouts=2, max_rollouts=16)
    plan = allocator.plan(keys=np.arange(7, dtype=np.uint64))
    np.testing.assert_array_equal(plan.counts, [15, 15, 14, 14, 14, 14, 14])


def test_infeasible_budget_is_named():
    allocator = UniformAllocator(budget_per_prompt=40, min_rollouts=2, max_rollouts=16)
    with pytest.raises(ValueError, match=r"budget 120 is infeasible for 3 prompts .* \[6, 48\]"):
        allocator.plan(["a", "b", "c"])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(estimator="ppo"), "estimator must be one of"),
        (dict(estimator="drgrpo", min_rollouts=2), "below estimator 'drgrpo''s domain"),
        (dict(min_rollouts=8, max_rollouts=4), r"min_rollouts \(8\) exceeds max_rollouts \(4\)"),
        (dict(budget_per_prompt=float("nan")), "budget_per_prompt must be a positive number"),
        (dict(reward_threshold=float("inf")), "reward_threshold must be a finite number"),
    ],
)
def test_bad_configuration(options, message):
    with pytest.raises(ValueError, match=message):
        UniformAllocator(**options)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(budget=20.7), "budget must be an integer, got float 20.7"),
        (dict(budget="20"), "budget must be an integer, got str '20'"),
        (dict(budget=True), "budget must be an integer, got bool True"),
        (dict(budget=float("nan")), "budget must be an integer, got float nan"),
        (dict(min_rollouts=4.7), "min_rollouts must be an integer, got float 4.7"),
        (dict(min_rollouts="4"), "min_rollouts must be an integer, got str '4'"),
        (dict(max_rollouts=8.9), "max_rollouts must be an integer, got float 8.9"),
        (dict(max_rollouts=float("inf")), "max_rollouts must be an integer, got float inf"),
        (dict(max_rollouts=None), "max_rollouts must be an integer, got None: an allocator needs an upper bound"),
        (dict(budget_per_prompt="8"), "budget_per_prompt must be a real number, got str '8'"),
        (dict(budget_per_prompt=True), "budget_per_prompt must be a real number, got bool True"),
        (dict(reward_threshold="0.5"), "reward_threshold must be a real number, got str '0.5'"),
        (dict(capacity=2.5), "capacity must be an integer, got float 2.5"),
        (dict(forgetting="0.5"), "forgetting must be a real number, got str '0.5'"),
    ],
)
def test_options_of_the_wrong_type_are_named(options, message):
    with pytest.raises(TypeError, match=message):
        make_allocator("beta", **options)


def test_integer_options_take_numpy_integers_as_plain_ints():
    allocator = make_allocator("uniform", budget=np.int64(20), min_rollouts=np.int32(4), max_rollouts=np.uint8(8),
                               budget_per_prompt=np.float32(6))
    assert allocator.config["budget"] == 20 and type(allocator.config["budget"]) is int
    assert (allocator.config["min_rollouts"], allocator.config["max_rollouts"]) == (4, 8)
    np.testing.assert_array_equal(allocator.plan(keys=[1, 2, 3]).counts, [7, 7, 6])


def test_a_checkpoint_with_a_fractional_bound_is_refused_at_load(tmp_path):
    path = tmp_path / "fractional.npz"
    header = {"format": "vipfast-allocator", "version": 2, "allocator": "beta", "config": {"max_rollouts": 16.9}}
    np.savez(path, header=np.array(json.dumps(header)))
    with pytest.raises(ValueError, match=r"fractional.npz .*max_rollouts must be an integer, got float 16.9"):
        load_allocator(path)


@pytest.mark.parametrize("name", ["knapsack", "coba"])
def test_budgets_too_big_for_value_tables_are_value_errors(name):
    for budget in (2**62, 2**40):
        allocator = make_allocator(name, budget=budget, min_rollouts=4, max_rollouts=budget)
        with pytest.raises(ValueError, match=f"budget {budget} is too big to plan for 4 prompts"):
            allocator.plan(keys=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="does not fit in int64"):
        make_allocator(name, budget=2**70, max_rollouts=2**62)


@pytest.mark.parametrize("name", ["knapsack", "coba"])
def test_value_tables_stop_at_what_one_prompt_can_get(name, rng):
    """max_rollouts far above the budget plans as max_rollouts = what one prompt gets when the rest have the
    minimum: no count above that is possible."""
    keys = rng.integers(0, 2**63, 5, dtype=np.uint64)
    wide, exact = (make_allocator(name, budget=40, min_rollouts=4, max_rollouts=hi) for hi in (10**6, 40 - 4 * 4))
    rewards = (rng.random(40) < 0.3).astype(float)
    for allocator in (wide, exact):
        allocator.update(allocator.plan(keys=keys), rewards)
    np.testing.assert_array_equal(wide.plan(keys=keys).counts, exact.plan(keys=keys).counts,
                                  err_msg=rng.seed_for_message)


def test_every_allocator_accepts_the_shared_options():
    for name in allocator_names():
        make_allocator(name, budget=64, estimator="grpo", min_rollouts=3, max_rollouts=9, reward_threshold=0.5,
                       embedder="hashing", embedding_dim=8, embedding_cache_size=10)


def test_rewards_are_parsed_per_group():
    rewards = np.array([1, 0, 1, 0.5, 1, 0, 0])
    successes, trials = successes_per_group(rewards, [3, 2, 0, 2])
    np.testing.assert_allclose(successes, [2.0, 1.5, 0.0, 0.0])
    np.testing.assert_array_equal(trials, [3, 2, 0, 2])
    thresholded, _ = successes_per_group(np.array([3.0, -1.0, 7.0]), [1, 2], threshold=2.5)
    np.testing.assert_allclose(thresholded, [1.0, 1.0])


@pytest.mark.parametrize(
    "rewards, sizes, message",
    [
        ([1, 0, 1], [2, 2], "group_sizes add up to 4 but there are 3 rewards"),
        ([1, np.nan], [2], r"rewards\[1\] is nan"),
        ([1, 2.0], [2], r"rewards\[1\] = 2.0 is outside \[0, 1\]"),
        ([1, 0], [3, -1], "group_sizes must be >= 0"),
        ([1, 0], [2**63 - 1, 2**63 - 1], "exceeds the 2 rewards"),
        ([1, 0], np.array([2.0]), "group_sizes must be a 1-D integer array"),
    ],
)
def test_bad_rewards(rewards, sizes, message):
    allocator = UniformAllocator(min_rollouts=2, max_rollouts=16)
    plan = allocator.plan(keys=np.arange(len(sizes), dtype=np.uint64), )
    with pytest.raises(ValueError, match=message):
        allocator.update(plan, rewards, sizes)


@pytest.mark.parametrize(
    "rewards, error, message",
    [
        (["1"] * 12, TypeError, "rewards must hold real numbers, got dtype <U1"),
        (np.ones((2, 6)), ValueError, r"rewards must be 1-D, got shape \(2, 6\)"),
        ([1j] * 12, TypeError, "rewards must hold real numbers"),
    ],
)
def test_rewards_must_be_a_flat_array_of_numbers(rewards, error, message):
    allocator = make_allocator("beta", budget=12, min_rollouts=6, max_rollouts=6)
    plan = allocator.plan(keys=[1, 2])
    with pytest.raises(error, match=message):
        allocator.update(plan, rewards)
    assert allocator.stats()["prompts_held"] == 0


def test_rewards_that_require_grad_are_read_as_constants():
    torch = pytest.importorskip("torch")
    allocator = make_allocator("beta", budget=8, min_rollouts=4, max_rollouts=4)
    plan = allocator.plan(keys=[1, 2])
    allocator.update(plan, torch.tensor([1.0] * 4 + [0.0] * 4, requires_grad=True))
    np.testing.assert_array_equal(allocator.forgotten_counts(plan.keys)[0], [4.0, 0.0])


@pytest.mark.parametrize("p", [[np.nan, 0.5], [2.0, 0.5], [0.5, -0.1]])
def test_a_hand_built_plan_with_improbable_p_is_refused(p):
    allocator = make_allocator("beta", budget=8, min_rollouts=4, max_rollouts=4)
    plan = Plan(keys=np.array([1, 2], dtype=np.uint64), counts=np.array([4, 4]), weights=np.ones(2), p=np.array(p))
    with pytest.raises(ValueError, match=r"plan.p must hold probabilities in \[0, 1\], got plan.p\[\d\] ="):
        allocator.update(plan, np.ones(8))
    assert allocator.stats()["predictions"]["updates"] == 0 and allocator.stats()["prompts_held"] == 0


def test_update_takes_a_plan_with_one_group_per_prompt():
    allocator = UniformAllocator(min_rollouts=2, max_rollouts=16)
    with pytest.raises(TypeError, match="update takes the Plan"):
        allocator.update(["a", "b"], [1, 0], [2])
    plan = allocator.plan(["a", "b"])
    with pytest.raises(ValueError, match="the plan has 2 prompts but group_sizes has 1"):
        allocator.update(plan, [1, 0], [2])


@pytest.mark.parametrize("name", ["vipfast", "gp", "beta", "knapsack"])
def test_any_planned_batch_can_be_updated_in_any_order(name, rng):
    """Plans carry what update needs: two batches planned, then updated newest first, both are learned."""
    allocator = build(name, embedding_dim=None)
    batch_a, batch_b = [f"a {i}" for i in range(6)], [f"b {i}" for i in range(6)]
    plan_a, plan_b = allocator.plan(batch_a), allocator.plan(batch_b)
    allocator.update(plan_b, np.ones(plan_b.total))
    allocator.update(plan_a, np.zeros(plan_a.total))
    after = allocator.plan(batch_a + batch_b)
    assert allocator.stats()["predictions"]["updates"] == 2
    assert after.p[:6].max() < after.p[6:].min(), (after.p, rng.seed_for_message)


def test_a_subset_of_a_plan_can_be_learned(rng):
    allocator = build("beta")
    plan = allocator.plan([f"p{i}" for i in range(5)])
    kept = np.array([True, False, True, True, False])
    sizes = plan.counts[kept] - 1
    allocator.update(plan.select(kept), np.ones(int(sizes.sum())), sizes)
    successes, trials = allocator.forgotten_counts(plan.keys)
    np.testing.assert_array_equal(trials, np.where(kept, plan.counts - 1, 0))
    np.testing.assert_array_equal(successes, trials)
    with pytest.raises(ValueError, match="boolean selection must have shape"):
        plan.select(np.ones(3, bool))
    empty = plan.select([])
    assert len(empty) == 0 and empty.keys.dtype == np.uint64
    allocator.update(empty, [])


def test_knapsack_follows_last_seen_success_rates():
    allocator = KnapsackAllocator(budget_per_prompt=8, min_rollouts=2, max_rollouts=32)
    prompts = ["never", "sometimes", "always"]
    allocator.update(allocator.plan(prompts), np.r_[np.zeros(8), np.ones(2), np.zeros(6), np.ones(8)], [8, 8, 8])
    plan = allocator.plan(prompts)
    p = np.array([0.0, 0.25, 1.0])
    expected = vipfast.allocate(None, 24, min_rollouts=2, curve=vipfast.knapsack_costs(p, 2, 32))
    np.testing.assert_array_equal(plan.counts, expected)
    assert plan.counts[1] == 20


@pytest.mark.parametrize("first", [0, 1])
def test_knapsack_pools_a_prompt_planned_twice_in_one_batch(first):
    """Prompt 7 twice: 2 of 3 rollouts succeed in one group, 1 of 1 in the other, in either order. Its rate is
    (2 + 1) / (3 + 1) = 0.75 over all its rollouts, as beta and coba count them (not 2/3 or 1 by the order)."""
    allocator = make_allocator("knapsack", budget=8, min_rollouts=4, max_rollouts=4)
    plan = allocator.plan(keys=[7, 7])
    groups = [([1.0, 1.0, 0.0], 3), ([1.0], 1)]
    groups = groups if first == 0 else groups[::-1]
    allocator.update(plan, [r for rewards, _ in groups for r in rewards], [size for _, size in groups])
    np.testing.assert_array_equal(allocator.plan(keys=[7, 8]).p, [0.75, 0.5])


def test_knapsack_memory_is_bounded_and_keeps_recent_prompts(rng):
    allocator = KnapsackAllocator(budget_per_prompt=4, min_rollouts=2, max_rollouts=8, capacity=1000)
    for step in range(30):
        keys = np.arange(step * 100, step * 100 + 100, dtype=np.uint64)
        plan = allocator.plan(keys=keys)
        allocator.update(plan, np.zeros(plan.total))
        assert allocator.stats()["prompts_held"] <= 1000
    assert allocator.rates.rows(keys).min() >= 0  # the latest batch is held
    assert allocator.rates.rows(np.arange(100, dtype=np.uint64)).max() == -1  # the first is gone


def test_checkpoint_state_is_one_consistent_snapshot_under_concurrent_updates(rng, tmp_path):
    import threading

    allocator = KnapsackAllocator(budget_per_prompt=4, min_rollouts=2, max_rollouts=8)
    stop = threading.Event()

    def learn():
        step = 0
        while not stop.is_set():
            keys = np.arange(step * 50, step * 50 + 50, dtype=np.uint64)
            plan = allocator.plan(keys=keys)
            allocator.update(plan, np.ones(plan.total))
            step += 1

    worker = threading.Thread(target=learn)
    worker.start()
    try:
        for i in range(30):
            allocator.save(tmp_path / "a.npz")
            arrays = np.load(tmp_path / "a.npz")
            assert len(arrays["state/rates/keys"]) == len(arrays["state/rates/column/rate"])
    finally:
        stop.set()
        worker.join()


def test_beta_counts_match_the_posterior_of_each_prompts_outcomes(rng):
    allocator = BetaAllocator(budget_per_prompt=8, min_rollouts=2, max_rollouts=32, forgetting=0.9)
    prompts = [f"q{i}" for i in range(7)]
    totals = np.zeros((2, 7))
    for _ in range(4):
        plan = allocator.plan(prompts)
        rewards = (rng.random(plan.total) < 0.3).astype(float)
        successes, trials = successes_per_group(rewards, plan.counts)
        totals = 0.9 * (totals + [successes, trials])  # evidence one step old weighs 0.9
        allocator.update(plan, rewards)
    plan = allocator.plan(prompts)
    alpha, beta = 1 + totals[0], 1 + totals[1] - totals[0]
    np.testing.assert_allclose(plan.p, alpha / (alpha + beta), rtol=1e-12, err_msg=rng.seed_for_message)
    # E[p(1-p)] of Beta(alpha, beta) by quadrature, independent of the closed form
    from scipy import integrate, stats

    for a, b, w in zip(alpha, beta, plan.weights):
        value = integrate.quad(lambda x: x * (1 - x) * stats.beta.pdf(x, a, b), 0, 1)[0]
        np.testing.assert_allclose(w, value, rtol=1e-7)
    np.testing.assert_allclose(beta_moments(np.zeros(1), np.zeros(1))[1], 1 / 6)


class TestCheckpointFiles:
    def test_corrupt_truncated_and_foreign_files_are_value_errors(self, tmp_path):
        good = tmp_path / "good.npz"
        build("beta").save(good)
        data = good.read_bytes()
        cases = {
            "garbage.npz": b"\x00not a checkpoint",
            "truncated.npz": data[: len(data) // 2],
            "flipped.npz": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        }
        for name, content in cases.items():
            (tmp_path / name).write_bytes(content)
            with pytest.raises(ValueError, match=name):
                load_allocator(tmp_path / name)
        np.save(tmp_path / "array.npy", np.zeros(3))
        with pytest.raises(ValueError, match=r"array.npy .*single array"):
            load_allocator(tmp_path / "array.npy")
        with pytest.raises(ValueError, match="no such allocator checkpoint"):
            load_allocator(tmp_path / "missing.npz")

    def test_every_damaged_byte_of_the_zip_directory_is_a_value_error_or_changes_nothing(self, tmp_path, rng):
        """One byte flipped in the central directory (where zipfile reads compression methods and encryption
        flags), or anywhere else in a sample: the load fails with a ValueError naming the file, or restores
        the same allocator."""
        allocator = build("beta")
        plan = allocator.plan(keys=np.arange(3, dtype=np.uint64))
        allocator.update(plan, np.ones(plan.total))
        good = tmp_path / "good.npz"
        allocator.save(good)
        data = good.read_bytes()
        directory = data.find(b"PK\x01\x02")
        assert directory > 0
        flips = [(offset, 0x01) for offset in range(directory, len(data))]
        flips += zip(rng.choice(directory, size=min(directory, 200), replace=False).tolist(),
                     rng.integers(1, 256, size=200).tolist())
        expected = {k: np.asarray(v) for k, v in allocator.state_arrays().items()}
        damaged = tmp_path / "damaged.npz"
        for offset, mask in flips:
            damaged.write_bytes(data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1:])
            try:
                restored = load_allocator(damaged)
            except ValueError as error:
                assert "damaged.npz" in str(error), (offset, mask, error, rng.seed_for_message)
                continue
            state = restored.state_arrays()
            assert restored.config == allocator.config, (offset, mask, rng.seed_for_message)
            assert sorted(state) == sorted(expected), (offset, mask, rng.seed_for_message)
            for key, value in expected.items():
                np.testing.assert_array_equal(state[key], value, err_msg=f"{key}, byte {offset} ^ {mask}")

    @pytest.mark.parametrize(
        "name, entry, change, message",
        [
            ("beta", "counts/column/trials", lambda v: -v - 1, r"counts/column/trials\[0\] = -\d+.0 is below 0"),
            ("beta", "counts/column/successes", lambda v: v + 100, r"counts/column/successes\[0\] = .* is above "
             r"counts/column/trials\[0\]"),
            ("beta", "counts/column/successes", lambda v: v * np.nan, r"counts/column/successes\[0\] = nan"),
            ("beta", "counts/column/step", lambda v: v + 10**6, r"counts/column/step\[0\] = 100000\d.0 is above 2.0"),
            ("beta", "counts/touched", lambda v: v + 0.5, r"counts/touched\[0\] = 2.5 is not a whole number"),
            ("beta", "counts/clock", lambda v: np.array([v, v]), "counts/clock must be a scalar count"),
            ("beta", "step", lambda v: np.array(-1), "step must be a whole number >= 0, got -1"),
            ("knapsack", "rates/column/rate", lambda v: v + 2, r"rates/column/rate\[0\] = .* is above 1.0"),
            ("knapsack", "rates/column/rate", lambda v: -v - 1, r"rates/column/rate\[0\] = .* is below 0.0"),
            ("coba", "visits/column/trials/0", lambda v: -v, r"visits/column/trials/0\[0\] = -\d+.0 is below 0"),
            ("coba", "visits/column/trials/1", lambda v: v + 0.5, r"visits/column/trials/1\[0\] = .* whole number"),
            ("greso", "streaks/column/easy", lambda v: v - 10**9, r"streaks/column/easy\[0\] = .* is below 0"),
            ("vipfast", "model/prompt_var_scores", lambda v: v[:, :3], r"prompt_var_scores must hold finite scores"),
            ("vipfast", "model/prompt_var_scores", lambda v: -v - 1, r"prompt_var_scores must hold finite scores"),
            ("vipfast", "model/prompt_var", lambda v: np.array(np.nan), "prompt_var must be a finite number > 0"),
            ("vipfast", "model/prompt_var", lambda v: np.array(-0.5), "prompt_var must be a finite number > 0"),
            ("vipfast", "model/counts/column/trials", lambda v: -v - 1, r"counts/column/trials\[0\] = .* below 0"),
            ("vipfast", "model/counts/column/cavity_var", lambda v: -v - 1, r"counts/column/cavity_var\[0\] .* below"),
            ("vipfast", "model/counts/column/step", lambda v: v + 0.5, r"counts/column/step\[0\] .* whole number"),
            ("vipfast", "model/step", lambda v: np.array(2.5), "step must be a whole number >= 0, got 2.5"),
        ],
    )
    def test_crafted_state_values_are_refused_at_load(self, tmp_path, rng, name, entry, change, message):
        """A well-formed file whose state could not have been saved (negative counts, rates outside [0, 1],
        steps from the future, mis-shaped scores) fails at load, naming the file and the entry, not at plan()."""
        allocator = build(name)
        keys, embeddings = random_batch(rng, 6)
        for _ in range(2):
            plan = allocator.plan(keys=keys, embeddings=embeddings)
            allocator.update(plan, (rng.random(plan.total) < 0.5).astype(float))
        good, crafted = tmp_path / "good.npz", tmp_path / "crafted.npz"
        allocator.save(good)
        with np.load(good) as data:
            arrays = dict(data)
        arrays[f"state/{entry}"] = change(arrays[f"state/{entry}"])
        np.savez(crafted, **arrays)
        load_allocator(good).plan(keys=keys, embeddings=embeddings)
        with pytest.raises(ValueError, match=f"crafted.npz .*{message}"):
            load_allocator(crafted)

    def test_a_version_1_knapsack_checkpoint_loads_its_rates_and_refuses_bad_ones(self, tmp_path):
        header = {"format": "vipfast-allocator", "version": 1, "allocator": "knapsack", "config": {}}
        keys = np.array([5, 9], dtype=np.uint64)
        for name, rates in (("v1.npz", [0.25, 1.0]), ("bad_v1.npz", [0.25, 1.5])):
            np.savez(tmp_path / name, header=np.array(json.dumps(header)), **{"state/rates/keys": keys,
                                                                              "state/rates/values": np.array(rates)})
        np.testing.assert_array_equal(load_allocator(tmp_path / "v1.npz").plan(keys=[5, 9, 1]).p, [0.25, 1.0, 0.5])
        with pytest.raises(ValueError, match=r"bad_v1.npz .*rates/column/rate\[1\] = 1.5 is above 1.0"):
            load_allocator(tmp_path / "bad_v1.npz")

    @pytest.mark.parametrize(
        "header, message",
        [
            ('{"format": "something-else", "version": 2}', "is not a vipfast allocator checkpoint"),
            ('{"format": "vipfast-allocator", "version": 99}', "checkpoint version 99"),
            ('[1, 2]', r"format 'list'"),
            ('not json', "header is not JSON"),
            ('{"format": "vipfast-allocator", "version": 2, "allocator": "beta"}', "'config' must be a dict"),
            ('{"format": "vipfast-allocator", "version": 2, "allocator": "nope", "config": {}}', "unknown allocator"),
            ('{"format": "vipfast-allocator", "version": 2, "allocator": "beta", "config": {"bogus": 1}}',
             "cannot restore.*bogus"),
            ('{"format": "vipfast-allocator", "version": 2, "allocator": "beta", "config": {}}',
             "cannot restore"),
        ],
    )
    def test_bad_headers_are_named(self, tmp_path, header, message):
        path = tmp_path / "bad.npz"
        np.savez(path, header=np.array(header))
        with pytest.raises(ValueError, match=message):
            load_allocator(path)

    def test_interrupted_save_keeps_the_previous_checkpoint(self, tmp_path, monkeypatch):
        path = tmp_path / "allocator.npz"
        allocator = build("knapsack")
        allocator.update(allocator.plan(["a"]), [1, 0, 0, 0, 0, 0])
        allocator.save(path)
        before = path.read_bytes()

        def crash(*args, **kwargs):
            raise KeyboardInterrupt("power cut while writing")

        monkeypatch.setattr(np, "savez", crash)
        with pytest.raises(KeyboardInterrupt):
            allocator.save(path)
        assert path.read_bytes() == before
        assert list(tmp_path.iterdir()) == [path]

    def test_a_killed_save_leaves_no_temporaries_behind_the_next_save(self, tmp_path):
        path = tmp_path / "allocator.npz"
        (tmp_path / ".allocator.npz.abc123.tmp").write_bytes(b"half a checkpoint")
        build("uniform").save(path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["allocator.npz"]

    def test_saves_keep_the_file_mode(self, tmp_path):
        path = tmp_path / "allocator.npz"
        old = os.umask(0o022)
        try:
            build("uniform").save(path)
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        build("uniform").save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640

    def test_loading_as_the_wrong_class_is_refused(self, tmp_path):
        path = tmp_path / "uniform.npz"
        UniformAllocator().save(path)
        with pytest.raises(ValueError, match="holds a UniformAllocator, not a VIPAllocator"):
            VIPAllocator.load(path)


def test_stats_report_predictions_and_latency(rng):
    allocator = build("vipfast")
    keys, embeddings = random_batch(rng, 20)
    learn_rates(allocator, rng, keys, embeddings, np.full(20, 0.5), steps=3)
    stats = allocator.stats()
    assert stats["name"] == "vipfast" and stats["config"]["min_rollouts"] == 2
    assert stats["latency_s"]["plan"] > 0 and stats["latency_s"]["update"] > 0
    predictions = stats["predictions"]
    assert predictions["updates"] == 3 and predictions["rollouts"] == 3 * 120
    assert 0 <= predictions["brier"] <= 1 and 0 <= predictions["ece"] <= 1 and predictions["p_spread"] >= 0
    assert stats["prompts_held"] == 20 and stats["calibration"]["scale"] > 0
    assert build("uniform").stats()["predictions"]["brier"] is None


def test_prediction_monitor_matches_a_direct_computation(rng):
    from vipfast.allocators.monitor import PredictionMonitor

    monitor = PredictionMonitor(window=3)
    records, seen = [], (0.0, 0.0)
    for _ in range(5):
        p = rng.uniform(0, 1, 9)
        trials = rng.integers(0, 6, 9)
        outcomes = [rng.random(n) < pi for pi, n in zip(p, trials)]
        successes = np.array([o.sum() for o in outcomes], dtype=float)
        base = (seen[0] + 1) / (seen[1] + 2)
        records.append((p, outcomes, base))
        seen = (seen[0] + successes.sum(), seen[1] + trials.sum())
        monitor.record(p, successes, trials)
    flat_p = np.concatenate([np.repeat(p, [len(o) for o in outs]) for p, outs, _ in records[-3:]])
    flat_y = np.concatenate([np.concatenate(outs) for _, outs, _ in records[-3:]]).astype(float)
    flat_base = np.concatenate([np.full(sum(len(o) for o in outs), b) for _, outs, b in records[-3:]])
    summary = monitor.summary()
    np.testing.assert_allclose(summary["brier"], np.mean((flat_p - flat_y) ** 2), rtol=1e-12, err_msg=rng.seed_for_message)
    np.testing.assert_allclose(summary["global_rate_brier"], np.mean((flat_base - flat_y) ** 2), rtol=1e-12)
    bins = np.minimum((flat_p * 10).astype(int), 9)
    ece = sum(abs(flat_p[bins == b].sum() - flat_y[bins == b].sum()) for b in range(10)) / len(flat_p)
    np.testing.assert_allclose(summary["ece"], ece, rtol=1e-12)


@pytest.mark.parametrize("name", ["vipfast", "gp"])
def test_a_selected_plan_carries_a_prediction_of_its_own_rows(name, rng):
    allocator = build(name)
    keys, embeddings = random_batch(rng, 12)
    plan = allocator.plan(keys=keys, embeddings=embeddings)
    kept = plan.select(np.arange(12) % 3 == 0)
    if name == "vipfast":  # its own summary sliced; the GP's basis, tied to all 12 rows, dropped
        assert len(kept.prediction.mean) == 4 and kept.prediction.gp is None
    else:
        assert kept.prediction is None
    allocator.update(kept, np.ones(kept.total))  # the GP checks that a prediction it gets is of these rows
    assert allocator.stats()["predictions"]["updates"] == 1
