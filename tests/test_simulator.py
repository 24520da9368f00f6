"""The synthetic RLVR population (`vipfast simulate`): determinism, oracles, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from vipfast.allocators import make_allocator
from vipfast.experiments import ClusterOracleAllocator, OracleAllocator, Population, Scenario, simulate
from vipfast.experiments.simulator import rloo_logit_gradients

SMALL = dict(num_prompts=300, num_clusters=12, dim=16, batch_size=48, steps=8)
SHARED = dict(budget_per_prompt=6.0, min_rollouts=2, max_rollouts=16, embedding_dim=16, embedder="hashing")


def test_rloo_logit_gradients_match_a_per_group_loop(rng):
    counts = rng.integers(2, 9, size=20)
    p = rng.uniform(0, 1, size=20)
    rewards = (rng.random(counts.sum()) < np.repeat(p, counts)).astype(float)
    expected, start = [], 0
    for n, pi in zip(counts, p):
        y = rewards[start:start + n]
        start += n
        baseline = np.array([(y.sum() - y[j]) / (n - 1) for j in range(n)])
        expected.append(np.mean((y - baseline) * (y - pi)))
    np.testing.assert_allclose(rloo_logit_gradients(rewards, counts, p), expected, rtol=1e-12, atol=1e-15,
                               err_msg=rng.seed_for_message)


@pytest.mark.parametrize("name", ["uniform", "vipfast", "knapsack", "beta"])
def test_simulation_is_deterministic_per_seed(name):
    scenario = Scenario(**SMALL, seed=3)
    first = simulate(make_allocator(name, **SHARED), scenario, progress=False)
    second = simulate(make_allocator(name, **SHARED), scenario, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "latency"} for r in rows]  # noqa: E731
    assert strip(first.steps) == strip(second.steps)
    other = simulate(make_allocator(name, **SHARED), Scenario(**SMALL, seed=4), progress=False)
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
    with pytest.raises(ValueError, match="only run inside vipfast.experiments.simulate"):
        oracle.plan(keys=[1, 2, 3])
    uniform = simulate(make_allocator("uniform", **SHARED), scenario, progress=False).summary()
    best = simulate(oracle, scenario, progress=False).summary()
    assert best["objective_vs_uniform"] < 1.0
    assert best["wasted_fraction"] < uniform["wasted_fraction"]


def test_cluster_oracle_averages_the_prompt_offset_out(rng):
    """Its p is E_b[sigmoid(a_c + b)] over b ~ N(0, spread^2), checked by scipy quadrature."""
    from scipy import integrate

    scenario = Scenario(**SMALL, seed=int(rng.integers(1000)))
    oracle = ClusterOracleAllocator(budget_per_prompt=8.0, min_rollouts=2, max_rollouts=32)
    oracle.population = Population(scenario)
    picked = rng.choice(scenario.num_prompts, 5, replace=False)
    prediction = oracle.weigh(oracle.population.keys[picked], None, None)
    for i, p, w in zip(picked, prediction["p"], prediction["weights"]):
        a = oracle.population.skill[oracle.population.cluster[i]]
        density = lambda b: np.exp(-0.5 * (b / scenario.prompt_spread) ** 2) / (np.sqrt(2 * np.pi) * scenario.prompt_spread)  # noqa: E731
        sig = lambda b: 1 / (1 + np.exp(-(a + b)))  # noqa: E731
        np.testing.assert_allclose(p, integrate.quad(lambda b: sig(b) * density(b), -30, 30)[0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(w, integrate.quad(lambda b: sig(b) * (1 - sig(b)) * density(b), -30, 30)[0],
                                   rtol=1e-6, atol=1e-9)


def test_simulate_cli_prints_seed_statistics_and_writes_its_files(tmp_path, capsys):
    from vipfast.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "--allocators", "uniform", "vipfast", "oracle", "uniform+dynamic", "--seeds", "0", "1",
                 "--num-prompts", "256", "--batch-size", "64", "--steps", "6", "--num-clusters", "8",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in printed.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"uniform", "vipfast", "oracle", "uniform+dynamic"}
    assert " ± " in rows["vipfast"] and "seeds [0, 1]" in printed
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "summary.md").read_text().startswith("scenario default")
    assert (out / "summary.csv").read_text().count("\n") == 1 + 4 * 2


def test_simulate_writes_under_runs_by_default(tmp_path, monkeypatch, capsys):
    """Nothing lands in the working directory itself: the default output is runs/simulate/."""
    from vipfast.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--allocators", "uniform", "--num-prompts", "64", "--batch-size", "16", "--steps", "2",
                 "--num-clusters", "4"]) == 0
    capsys.readouterr()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]
    assert sorted(path.name for path in (tmp_path / "runs" / "simulate").iterdir()) == [
        "curves.png", "summary.csv", "summary.md"]


def test_a_bad_arm_is_refused_before_any_run():
    from vipfast.experiments.runner import parse_arm

    with pytest.raises(ValueError, match="allocator must be one of"):
        parse_arm("magic")
    with pytest.raises(ValueError, match="sampling mode must be one of"):
        parse_arm("uniform+twice")


def test_fractional_rewards_reach_the_gp_as_fractional_successes(rng):
    import vipfast

    prompts = [f"prompt {i}" for i in range(5)]
    for preset in ("gp", "vipfast"):
        alloc = vipfast.VIPAllocator(8.0, preset=preset, embedder="hashing", min_rollouts=2, max_rollouts=16)
        plan = alloc.plan(prompts)
        rewards = rng.uniform(0, 1, size=plan.total)
        alloc.update(plan, rewards, ends_step=False)
        sums = np.add.reduceat(rewards, np.concatenate([[0], np.cumsum(plan.counts)[:-1]]))
        gp = alloc.predictor if preset == "gp" else alloc.predictor.gp
        stored = gp.pseudo_observations()
        order = np.argsort(stored["keys"])
        np.testing.assert_allclose(stored["successes"][order], sums[np.argsort(plan.keys)], rtol=1e-12)
        np.testing.assert_array_equal(stored["trials"][order], plan.counts[np.argsort(plan.keys)])
        if preset == "vipfast":
            successes, trials = alloc.predictor.own_counts(plan.keys)
            np.testing.assert_allclose(successes, sums, rtol=1e-6)
            np.testing.assert_array_equal(trials, plan.counts)
