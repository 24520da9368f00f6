"""Run an allocator (and a sampling mode) on a synthetic population, step by step, and measure it.

Each step: the sampling mode draws prompts from the pool (epoch by epoch), asks the allocator for
counts, "generates" Bernoulli(p_i) rewards, and returns a batch; the policy learns from the trained
rollouts by Adam on each cluster's skill with leave-one-out (RLOO) logit gradients; the allocator learns
from every rollout generated. docs/simulator.md defines every metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..allocation import allocation_objective
from ..sampling import Outcomes, Prompts, make_sampler
from .oracles import OracleAllocator
from .population import Population, Scenario

__all__ = ["simulate", "RunResult", "PoolSource", "rloo_logit_gradients"]


class PoolSource:
    """The population's prompts, each once per epoch in a fresh order ("epoch"), or a fresh sample per draw."""

    def __init__(self, population: Population, rng: np.random.Generator):
        self.population, self.rng = population, rng
        self.order, self.position = np.zeros(0, np.int64), 0

    def reset(self) -> None:
        self.order, self.position = np.zeros(0, np.int64), 0

    def draw(self, count: int) -> Prompts:
        n = len(self.population.keys)
        if self.population.scenario.order == "random":
            index = self.rng.choice(n, size=min(count, n), replace=False)
        else:
            parts = []
            while count > 0:
                if self.position == len(self.order):
                    self.order, self.position = self.rng.permutation(n), 0
                take = self.order[self.position:self.position + count]
                self.position += len(take)
                count -= len(take)
                parts.append(take)
            index = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return Prompts(ids=index, keys=self.population.keys[index], embeddings=self.population.embeddings[index])


def rloo_logit_gradients(rewards, counts, p):
    """Per group: mean_j A_j (y_j − p) with leave-one-out advantages; 0 for all-equal groups."""
    group = np.repeat(np.arange(len(counts)), counts)
    terms = _advantages(rewards, counts, "rloo") * (rewards - np.repeat(p, counts))
    return np.bincount(group, weights=terms, minlength=len(counts)) / counts


def _advantages(rewards, sizes, estimator):
    """Per rollout: leave-one-out (rloo) or group-std-normalised (grpo, eps 1e-6) advantages; 0 in size-1 groups."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    sums = np.bincount(group, weights=rewards, minlength=len(sizes))
    n = np.repeat(sizes, sizes).astype(np.float64)
    if estimator == "rloo":
        return np.where(n > 1, rewards - (sums[group] - rewards) / np.maximum(n - 1, 1), 0.0)
    mean = sums / np.maximum(sizes, 1)
    squares = np.bincount(group, weights=(rewards - mean[group]) ** 2, minlength=len(sizes))
    std = np.sqrt(squares / np.maximum(sizes - 1, 1))
    return np.where(n > 1, (rewards - mean[group]) / (std[group] + 1e-6), 0.0)


def _rollout_gradients(batch, p: np.ndarray, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """(per prompt of the batch: its logit-gradient estimate g_i, per rollout: its term c_j of that mean).

    Advantages come from each rollout's group; a prompt's estimate is the mean of A_j (y_j − p_i) over its
    trained rollouts (all its groups), so c_j = A_j (y_j − p_i) / T_i for trained rollouts, else 0."""
    prompt = np.repeat(batch.group_prompt, batch.group_sizes)
    trained = batch.trained.astype(np.float64)
    per_prompt_trained = np.bincount(prompt, weights=trained, minlength=len(batch.prompts))
    terms = _advantages(batch.rewards, batch.group_sizes, estimator) * (batch.rewards - p[prompt]) * trained
    terms /= np.maximum(per_prompt_trained, 1)[prompt]
    return np.bincount(prompt, weights=terms, minlength=len(batch.prompts)), terms


def expected_calibration_error(predicted, outcomes, bins=10):
    edges = np.minimum((predicted * bins).astype(int), bins - 1)
    total = np.bincount(edges, minlength=bins)
    gap = np.abs(np.bincount(edges, weights=outcomes, minlength=bins) - np.bincount(edges, weights=predicted, minlength=bins))
    return float(gap.sum() / max(total.sum(), 1))


class _OutcomeLog:
    """Per-prompt counts of every outcome so far (a Beta(1, 1) counter for comparison) and first visits."""

    def __init__(self):
        self.successes, self.trials, self.total = {}, {}, [0.0, 0.0]

    def beta_p(self, keys):
        return np.array([(self.successes.get(k, 0.0) + 1) / (self.trials.get(k, 0.0) + 2) for k in keys.tolist()])

    def global_p(self):
        return (self.total[0] + 1) / (self.total[1] + 2)

    def seen(self, keys) -> np.ndarray:
        return np.array([k in self.trials for k in keys.tolist()], dtype=bool)

    def add(self, keys, successes, trials):
        for key, k, n in zip(keys.tolist(), successes.tolist(), trials.tolist()):
            self.successes[key] = self.successes.get(key, 0.0) + k
            self.trials[key] = self.trials.get(key, 0.0) + n
        self.total[0] += float(np.sum(successes))
        self.total[1] += float(np.sum(trials))


@dataclass
class RunResult:
    allocator: str
    steps: list[dict]

    def summary(self) -> dict:
        rows = self.steps
        generated = sum(r["generated"] for r in rows)
        scored = [r for r in rows if r["brier"] is not None]
        single = [r for r in rows if r["objective_vs_uniform"] is not None]
        fresh = [r for r in single if r["fresh"] >= 0.9]
        mean = lambda key, sel: float(np.mean([r[key] for r in sel])) if sel else None  # noqa: E731
        return dict(
            allocator=self.allocator,
            wasted_fraction=sum(r["wasted"] for r in rows) / generated,
            informative_groups=float(np.mean([r["informative_groups"] for r in rows])),
            objective_vs_uniform=mean("objective_vs_uniform", single),
            fresh_objective_vs_uniform=mean("objective_vs_uniform", fresh),
            brier=mean("brier", scored), beta_brier=mean("beta_brier", scored), ece=mean("ece", scored),
            p_spread=mean("p_spread", scored),
            final_mean_p=rows[-1]["mean_p"], generated=generated, wall=sum(r["wall"] for r in rows),
            latency_ms=float(np.median([r["latency"] for r in rows]) * 1e3),
        )


def simulate(allocator, scenario: Scenario, *, sampler=None, label=None, progress=True) -> RunResult:
    """Run `allocator` under `sampler` (default: one round) for scenario.steps steps, or until
    scenario.rollout_budget rollouts were generated; deterministic per seed."""
    sampler = sampler or make_sampler("single")
    population = Population(scenario)
    if isinstance(allocator, OracleAllocator):  # the oracles read the simulated policy
        allocator.bind(population)
    rng = np.random.default_rng([scenario.seed, 3])
    source = PoolSource(population, np.random.default_rng([scenario.seed, 4]))
    log = _OutcomeLog()
    rows = []
    name = label or getattr(allocator, "name", type(allocator).__name__)
    for step in tqdm(range(scenario.steps), desc=f"simulate {name}", disable=not progress, leave=False):
        if step == scenario.shift_step:
            population.shift()
        if step == scenario.new_pool_step:
            population.replace_pool()
            source.reset()
        rows.append(_step(step, allocator, sampler, population, source, rng, log, scenario))
        if scenario.rollout_budget and sum(r["generated"] for r in rows) >= scenario.rollout_budget:
            break
    return RunResult(name, rows)


def _step(step, allocator, sampler, population, source, rng, log, scenario) -> dict:
    def generate(prompts: Prompts, counts: np.ndarray) -> Outcomes:
        p = population.success_probability(prompts.ids)
        rewards = (rng.random(int(counts.sum())) < np.repeat(p, counts)).astype(np.float64)
        return Outcomes(rewards=rewards, tokens=np.ones(len(rewards), np.int64))

    started = time.perf_counter()
    batch = sampler.sample(allocator, source, generate, scenario.batch_size)
    observed = list(batch.pending)
    objective = _objective(batch, population, scenario)
    batch.learn(allocator)
    latency = time.perf_counter() - started
    prompts = batch.prompts
    per_prompt, terms = _rollout_gradients(batch, population.success_probability(prompts.ids), scenario.estimator)
    informative = _informative(batch.rewards, batch.group_sizes)
    trained_per_group = np.bincount(np.repeat(np.arange(len(batch.group_sizes)), batch.group_sizes),
                                    weights=batch.trained, minlength=len(batch.group_sizes))
    row = dict(step=step, generated=batch.generated_rollouts, trained=batch.trained_rollouts, rounds=batch.rounds,
               prompts_drawn=batch.prompts_drawn, complete=batch.complete,
               informative_groups=int(np.sum(informative & (trained_per_group > 0))),
               wasted=batch.generated_rollouts - int(np.sum(trained_per_group * informative)),
               wall=batch.generated_rollouts + batch.rounds * scenario.round_cost, latency=latency,
               fresh=population.mark_seen(prompts.ids),
               **_prediction_scores(observed, log), **objective)
    for observation in observed:
        successes = np.bincount(np.repeat(np.arange(len(observation.group_sizes)), observation.group_sizes),
                                weights=observation.rewards, minlength=len(observation.group_sizes))
        log.add(observation.plan.keys, successes, observation.group_sizes)
    population.learn(prompts.ids, per_prompt, float(np.sum(terms**2)) / max(len(prompts), 1) ** 2)
    row["mean_p"] = float(population.success_probability().mean())
    return row


def _informative(rewards, sizes) -> np.ndarray:
    """Per group: do its rewards differ (a non-zero advantage)?"""
    group = np.repeat(np.arange(len(sizes)), sizes)
    low = np.full(len(sizes), np.inf)
    high = np.full(len(sizes), -np.inf)
    np.minimum.at(low, group, rewards)
    np.maximum.at(high, group, rewards)
    return high > low


# Bins of the true success probability for "where the rollouts went".
P_BINS = np.array([0.0, 0.02, 0.1, 0.3, 0.7, 0.9, 0.98, 1.0])


def _by_true_p(p: np.ndarray, counts: np.ndarray, predicted) -> dict:
    """Per bin of true p: prompts, rollouts, and the sum of predicted p (to compare means)."""
    bins = np.clip(np.searchsorted(P_BINS, p, side="right") - 1, 0, len(P_BINS) - 2)
    width = len(P_BINS) - 1
    return dict(bin_prompts=np.bincount(bins, minlength=width).tolist(),
                bin_rollouts=np.bincount(bins, weights=counts, minlength=width).tolist(),
                bin_predicted=None if predicted is None else np.bincount(bins, weights=predicted, minlength=width).tolist())


def _objective(batch, population, scenario) -> dict:
    """The true variance objective of a one-round batch against the same budget split uniformly."""
    if batch.rounds != 1 or len(batch.group_prompt) != len(batch.prompts):
        return dict(objective=None, objective_vs_uniform=None, bin_prompts=None, bin_rollouts=None, bin_predicted=None)
    p = population.success_probability(batch.prompts.ids)
    counts = batch.group_sizes
    weights = p * (1 - p)
    uniform = np.full(len(counts), counts.sum() // len(counts))
    uniform[: counts.sum() - uniform.sum()] += 1
    bounds = dict(min_rollouts=min(scenario.min_rollouts, int(counts.min())))
    base = allocation_objective(weights, np.maximum(uniform, bounds["min_rollouts"]), **bounds)
    value = allocation_objective(weights, counts, **bounds)
    predicted = batch.pending[0].plan.p if len(batch.pending) == 1 else None
    return dict(objective=value, objective_vs_uniform=value / base if base > 0 else 1.0,
                **_by_true_p(p, counts, predicted))


def _prediction_scores(observed, log) -> dict:
    """Brier and ECE of the plans' predicted p on the rollouts that came back, beside a per-prompt Beta counter."""
    predicted, beta, outcomes = [], [], []
    for observation in observed:
        if observation.plan.p is None:
            return dict(brier=None, beta_brier=None, global_brier=None, ece=None, p_spread=None)
        sizes = observation.group_sizes
        predicted.append(np.repeat(observation.plan.p, sizes))
        beta.append(np.repeat(log.beta_p(observation.plan.keys), sizes))
        outcomes.append(observation.rewards)
    if not outcomes:
        return dict(brier=None, beta_brier=None, global_brier=None, ece=None, p_spread=None)
    spread = float(np.ptp(np.quantile(np.concatenate([o.plan.p for o in observed]), [0.05, 0.95])))
    predicted, beta, outcomes = map(np.concatenate, (predicted, beta, outcomes))
    return dict(brier=float(np.mean((predicted - outcomes) ** 2)), beta_brier=float(np.mean((beta - outcomes) ** 2)),
                global_brier=float(np.mean((log.global_p() - outcomes) ** 2)),
                ece=expected_calibration_error(predicted, outcomes), p_spread=spread)
