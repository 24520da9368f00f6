"""Allocators: budget and bounds, reward parsing, checkpoints, and the simulator."""

from __future__ import annotations

import numpy as np
import pytest

import vipfast
from vipfast.allocator import UniformAllocator, VIPAllocator, load_allocator, make_allocator, successes_per_group
from vipfast.sim import ClusterOracleAllocator, OracleAllocator, Population, Scenario, rloo_logit_gradients, simulate

ALLOCATOR_NAMES = ["uniform", "knapsack", "vipfast", "paper"]
SMALL = dict(num_prompts=300, num_clusters=12, dim=16, batch_size=48, steps=8)


def build(name, **options):
    defaults = dict(budget_per_prompt=6.0, min_rollouts=2, max_rollouts=16, embedding_dim=16)
    defaults.update(options)
    return make_allocator(name, **defaults)


def random_batch(rng, q, dim=16):
    embeddings = rng.normal(size=(q, dim)).astype(np.float32)
    return rng.integers(0, 2**63, size=q, dtype=np.uint64), embeddings


def plan_and_learn(allocator, rng, keys, embeddings, steps, success_rate):
    """`steps` rounds of plan + update on the same batch with Bernoulli(success_rate) rewards; the last counts."""
    for _ in range(steps):
        counts = allocator.plan(keys=keys, embeddings=embeddings)
        allocator.update(keys, (rng.random(counts.sum()) < success_rate).astype(float), counts)
    return counts


@pytest.mark.parametrize("name", ALLOCATOR_NAMES)
def test_every_allocator_respects_budget_and_bounds(name):
    rng = np.random.default_rng()
    allocator = build(name)
    for _ in range(3):
        q = int(rng.integers(1, 40))
        keys, embeddings = random_batch(rng, q)
        counts = allocator.plan(keys=keys, embeddings=embeddings)
        assert counts.sum() == round(6.0 * q) and counts.min() >= 2 and counts.max() <= 16
        rewards = (rng.random(counts.sum()) < 0.4).astype(float)
        allocator.update(keys, rewards, counts)


@pytest.mark.parametrize("name", ALLOCATOR_NAMES)
def test_resume_after_save_gives_identical_plans(name, tmp_path):
    rng = np.random.default_rng()
    allocator = build(name)
    keys, embeddings = random_batch(rng, 30)
    plan_and_learn(allocator, rng, keys, embeddings, steps=3, success_rate=0.3)
    path = tmp_path / "allocator.npz"
    allocator.save(path)
    restored = load_allocator(path)
    assert type(restored) is type(allocator)
    np.testing.assert_array_equal(restored.plan(keys=keys, embeddings=embeddings),
                                  allocator.plan(keys=keys, embeddings=embeddings))


@pytest.mark.parametrize("name", ALLOCATOR_NAMES)
def test_stats_report_the_last_plan_and_latency(name):
    rng = np.random.default_rng()
    allocator = build(name)
    keys, embeddings = random_batch(rng, 20)
    counts = plan_and_learn(allocator, rng, keys, embeddings, steps=2, success_rate=0.5)
    stats = allocator.stats()
    assert stats["name"] == name and stats["config"]["min_rollouts"] == 2
    np.testing.assert_array_equal(stats["last_plan"]["counts"], counts)
    np.testing.assert_array_equal(stats["last_plan"]["keys"], keys)
    assert stats["last_plan"]["weights"].shape == (20,)
    assert stats["latency_s"]["plan"] > 0 and stats["latency_s"]["update"] > 0
    if name in ("vipfast", "paper"):
        calibration = stats["calibration"]
        assert np.isfinite(calibration["offset"]) and calibration["scale"] > 0
        if name == "paper":  # the published predictor is not recalibrated
            assert (calibration["offset"], calibration["scale"]) == (0.0, 1.0)
    else:
        assert "calibration" not in stats


def test_fixed_total_budget():
    allocator = UniformAllocator(budget=100, min_rollouts=2, max_rollouts=16)
    counts = allocator.plan(keys=np.arange(7, dtype=np.uint64))
    assert counts.sum() == 100
    np.testing.assert_array_equal(counts, [15, 15, 14, 14, 14, 14, 14])


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
    ],
)
def test_bad_configuration(options, message):
    with pytest.raises(ValueError, match=message):
        UniformAllocator(**options)


def test_rewards_are_parsed_per_group():
    rewards = np.array([1, 0, 1, 0.5, 1, 0, 0])
    successes, trials = successes_per_group(rewards, [3, 2, 2])
    np.testing.assert_allclose(successes, [2.0, 1.5, 0.0])
    np.testing.assert_array_equal(trials, [3, 2, 2])
    thresholded, _ = successes_per_group(np.array([3.0, -1.0, 7.0]), [1, 2], threshold=2.5)
    np.testing.assert_allclose(thresholded, [1.0, 1.0])


@pytest.mark.parametrize(
    "rewards, sizes, message",
    [
        ([1, 0, 1], [2, 2], "group_sizes add up to 4 but there are 3 rewards"),
        ([1, np.nan], [2], r"rewards\[1\] is nan"),
        ([1, 2.0], [2], r"rewards\[1\] = 2.0 is outside \[0, 1\]"),
        ([1, 0], [2, 0], "group_sizes must be >= 1"),
        ([1, 0], np.array([2.0]), "group_sizes must be a 1-D integer array"),
    ],
)
def test_bad_rewards(rewards, sizes, message):
    allocator = UniformAllocator(min_rollouts=2, max_rollouts=16)
    keys = np.arange(len(sizes), dtype=np.uint64)
    with pytest.raises(ValueError, match=message):
        allocator.update(keys, rewards, sizes)


def test_update_needs_one_group_per_prompt():
    with pytest.raises(ValueError, match="2 prompts but 1 group sizes"):
        UniformAllocator().update(["a", "b"], [1, 0], [2])


def test_knapsack_follows_last_seen_success_rates():
    allocator = VIPAllocator(8, preset="knapsack", min_rollouts=2, max_rollouts=32)
    prompts = ["never", "sometimes", "always"]
    allocator.update(prompts, np.r_[np.zeros(8), np.ones(2), np.zeros(6), np.ones(8)], [8, 8, 8])
    counts = allocator.plan(prompts)
    p = np.array([0.0, 0.25, 1.0])
    expected = vipfast.allocate(None, 24, min_rollouts=2, curve=vipfast.knapsack_costs(p, 2, 32))
    np.testing.assert_array_equal(counts, expected)
    assert counts[1] == 20


def test_corrupt_and_foreign_checkpoints_are_rejected(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable vipfast allocator checkpoint"):
        load_allocator(corrupt)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, header=np.array('{"format": "something-else", "version": 1}'))
    with pytest.raises(ValueError, match="is not a vipfast allocator checkpoint"):
        load_allocator(foreign)
    future = tmp_path / "future.npz"
    np.savez(future, header=np.array('{"format": "vipfast-allocator", "version": 99}'))
    with pytest.raises(ValueError, match="checkpoint version 99"):
        load_allocator(future)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "allocator.npz"
    allocator = VIPAllocator(preset="knapsack", min_rollouts=2, max_rollouts=16)
    allocator.update(["a"], [1, 0, 0, 0], [4])
    allocator.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut while writing")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        allocator.save(path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_loading_as_the_wrong_class_is_refused(tmp_path):
    path = tmp_path / "uniform.npz"
    UniformAllocator().save(path)
    with pytest.raises(ValueError, match="holds a UniformAllocator, not a VIPAllocator"):
        VIPAllocator.load(path)


def test_rloo_logit_gradients_match_a_per_group_loop():
    rng = np.random.default_rng()
    counts = rng.integers(2, 9, size=20)
    p = rng.uniform(0, 1, size=20)
    rewards = (rng.random(counts.sum()) < np.repeat(p, counts)).astype(float)
    expected, start = [], 0
    for n, pi in zip(counts, p):
        y = rewards[start:start + n]
        start += n
        baseline = np.array([(y.sum() - y[j]) / (n - 1) for j in range(n)])
        expected.append(np.mean((y - baseline) * (y - pi)))
    np.testing.assert_allclose(rloo_logit_gradients(rewards, counts, p), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ALLOCATOR_NAMES)
def test_simulation_is_deterministic_per_seed(name):
    scenario = Scenario(**SMALL, seed=3)
    first = simulate(build(name), scenario, progress=False)
    second = simulate(build(name), scenario, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "latency"} for r in rows]  # noqa: E731
    assert strip(first.steps) == strip(second.steps)
    other = simulate(build(name), Scenario(**SMALL, seed=4), progress=False)
    assert strip(other.steps) != strip(first.steps)


def test_bad_scenario():
    with pytest.raises(ValueError, match="batch_size must be in"):
        Scenario(num_prompts=10, batch_size=20)
    with pytest.raises(ValueError, match="must be >= 0 and add up to at most 1"):
        Scenario(hard_fraction=0.7, easy_fraction=0.5)


@pytest.mark.parametrize("oracle_class", [OracleAllocator, ClusterOracleAllocator])
def test_oracle_is_bound_to_the_simulated_population(oracle_class):
    scenario = Scenario(**SMALL, seed=5)
    oracle = oracle_class(budget_per_prompt=8.0, min_rollouts=2, max_rollouts=32)
    with pytest.raises(ValueError, match="only runs inside vipfast.sim.simulate"):
        oracle.plan(keys=[1, 2, 3])
    uniform = simulate(build("uniform"), scenario, progress=False).summary()
    best = simulate(oracle, scenario, progress=False).summary()
    assert best["objective_vs_uniform"] < 1.0
    assert best["wasted_fraction"] < uniform["wasted_fraction"]


def test_cluster_oracle_averages_the_prompt_offset_out():
    """Its p is E_b[sigmoid(a_c + b)] over b ~ N(0, spread^2), checked by scipy quadrature."""
    from scipy import integrate

    scenario = Scenario(**SMALL, seed=int(np.random.default_rng().integers(1000)))
    oracle = ClusterOracleAllocator(budget_per_prompt=8.0, min_rollouts=2, max_rollouts=32)
    oracle.population = Population(scenario)
    picked = np.random.default_rng().choice(scenario.num_prompts, 5, replace=False)
    prediction = oracle.predict(oracle.population.keys[picked], None, None)
    for i, p, w in zip(picked, prediction["p"], prediction["weights"]):
        a = oracle.population.skill[oracle.population.cluster[i]]
        density = lambda b: np.exp(-0.5 * (b / scenario.prompt_spread) ** 2) / (np.sqrt(2 * np.pi) * scenario.prompt_spread)  # noqa: E731
        sig = lambda b: 1 / (1 + np.exp(-(a + b)))  # noqa: E731
        np.testing.assert_allclose(p, integrate.quad(lambda b: sig(b) * density(b), -30, 30)[0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(w, integrate.quad(lambda b: sig(b) * (1 - sig(b)) * density(b), -30, 30)[0],
                                   rtol=1e-6, atol=1e-9)


def test_simulate_cli_prints_seed_statistics_and_writes_a_plot(tmp_path, capsys):
    from vipfast.cli import main

    plot = tmp_path / "sim.png"
    assert main(["simulate", "--allocators", "uniform", "vipfast", "oracle", "--seeds", "0", "1",
                 "--num-prompts", "256", "--batch-size", "64", "--steps", "6", "--num-clusters", "8",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"uniform", "vipfast", "oracle"}
    assert " ± " in rows["vipfast"] and "seeds [0, 1]" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fractional_rewards_reach_the_gp_as_fractional_successes():
    rng = np.random.default_rng()
    alloc = vipfast.VIPAllocator(8.0, embedder="hashing", min_rollouts=2, max_rollouts=16)
    prompts = [f"prompt {i}" for i in range(5)]
    counts = alloc.plan(prompts)
    rewards = rng.uniform(0, 1, size=int(counts.sum()))
    alloc.update(prompts, rewards, counts)
    stored = alloc.gp.pseudo_observations()
    order = np.argsort(stored["keys"])
    keys = vipfast.prompt_keys(prompts)
    sums = np.add.reduceat(rewards, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    np.testing.assert_allclose(stored["successes"][order], sums[np.argsort(keys)], rtol=1e-12)
    np.testing.assert_array_equal(stored["trials"][order], counts[np.argsort(keys)])
