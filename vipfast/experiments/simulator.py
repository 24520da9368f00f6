"""A fast synthetic RLVR population for comparing allocators at equal budget.

Model (documented in docs/simulator.md):
- Prompts live in clusters of embedding space ("skills"). Prompt i of cluster c succeeds with
  p_i = sigmoid(a_c + b_i): a_c is the policy's skill, b_i the prompt's fixed offset.
  Clusters are hard (a_c far below 0), easy (far above) or learnable (near 0).
- Each step samples a batch of prompts, asks the allocator for counts, draws Bernoulli rewards,
  and forms each prompt's RLOO policy-gradient estimate for its logit,
  g_i = mean_j A_ij (y_ij - p_i) with A_ij = y_ij - mean of the others (unbiased for p_i(1-p_i)).
- Each skill a_c moves by Adam on the batch-mean gradient of its prompts. A lower-variance
  allocation gives a higher signal-to-noise ratio, hence faster, steadier learning; groups whose
  rewards are all equal contribute exactly zero.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from ..allocation import allocation_objective
from ..allocators import AllocatorBase
from ..allocators.base import Weighing

__all__ = ["Scenario", "Population", "OracleAllocator", "ClusterOracleAllocator", "simulate", "RunResult"]


@dataclass
class Scenario:
    num_prompts: int = 2048
    num_clusters: int = 64
    dim: int = 32
    batch_size: int = 256
    steps: int = 60
    budget_per_prompt: float = 8.0
    min_rollouts: int = 2
    max_rollouts: int = 32
    hard_fraction: float = 0.3
    easy_fraction: float = 0.3
    prompt_spread: float = 1.0    # std of the per-prompt logit offsets b_i
    embedding_noise: float = 0.35  # prompt embeddings scatter around the cluster centre
    learning_rate: float = 0.15
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.batch_size <= self.num_prompts:
            raise ValueError(f"batch_size must be in [1, num_prompts={self.num_prompts}], got {self.batch_size}")
        if self.hard_fraction < 0 or self.easy_fraction < 0 or self.hard_fraction + self.easy_fraction > 1:
            raise ValueError(f"hard_fraction ({self.hard_fraction}) and easy_fraction ({self.easy_fraction}) "
                             "must be >= 0 and add up to at most 1")
        for name in ("num_prompts", "num_clusters", "dim", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Population:
    """The prompts, their embeddings and the policy's per-cluster skills."""

    scenario: Scenario
    rng: np.random.Generator = field(init=False)

    def __post_init__(self):
        s = self.scenario
        rng = np.random.default_rng(s.seed)
        centres = rng.normal(size=(s.num_clusters, s.dim))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        self.cluster = rng.integers(0, s.num_clusters, size=s.num_prompts)
        noise = rng.normal(size=(s.num_prompts, s.dim)) * s.embedding_noise / np.sqrt(s.dim)
        embeddings = centres[self.cluster] + noise
        self.embeddings = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
        kind = rng.random(s.num_clusters)
        hard, easy = kind < s.hard_fraction, kind >= 1 - s.easy_fraction
        self.skill = np.where(hard, rng.uniform(-8, -5, s.num_clusters),
                              np.where(easy, rng.uniform(4, 7, s.num_clusters), rng.uniform(-3.5, 0.5, s.num_clusters)))
        self.offset = rng.normal(0, s.prompt_spread, size=s.num_prompts)
        self.keys = np.arange(s.num_prompts, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(1)
        self._adam_m = np.zeros(s.num_clusters)
        self._adam_v = np.zeros(s.num_clusters)
        self._adam_t = 0
        self.rng = np.random.default_rng([s.seed, 1])

    def success_probability(self, prompts=None):
        index = slice(None) if prompts is None else prompts
        return _sigmoid(self.skill[self.cluster[index]] + self.offset[index])

    def success_probability_of(self, keys):
        """True p of the prompts with these keys (keys are increasing in the prompt index)."""
        index = np.searchsorted(self.keys, keys)
        if not np.array_equal(self.keys[np.minimum(index, len(self.keys) - 1)], keys):
            raise ValueError("keys that are not prompts of this population")
        return self.success_probability(index)

    def learn(self, prompts, gradients):
        """Adam (beta1 0.9, beta2 0.99, bias-corrected) on each skill's batch-mean gradient."""
        totals = np.bincount(self.cluster[prompts], weights=gradients, minlength=len(self.skill)) / len(prompts)
        self._adam_t += 1
        self._adam_m = 0.9 * self._adam_m + 0.1 * totals
        self._adam_v = 0.99 * self._adam_v + 0.01 * totals**2
        m_hat = self._adam_m / (1 - 0.9**self._adam_t)
        v_hat = self._adam_v / (1 - 0.99**self._adam_t)
        self.skill += self.scenario.learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)


class OracleAllocator(AllocatorBase):
    """The exact solver fed the simulator's true p: the headroom any predictor could reach."""

    name = "oracle"

    def __init__(self, **options):
        super().__init__(**options)
        self.population: Population | None = None

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        if self.population is None:
            raise ValueError("the oracle allocator only runs inside vipfast.experiments.simulate")
        p = self.population.success_probability_of(keys)
        return Weighing(p=p, weights=p * (1 - p))


class ClusterOracleAllocator(OracleAllocator):
    """The solver fed each prompt's cluster skill a_c exactly but not its own offset b_i, which no
    embedding shows: p = E_b[sigmoid(a_c + b)], weight E_b[p(1 - p)], b ~ N(0, prompt_spread^2).
    The headroom of any predictor that learns from embeddings (its own past rollouts aside)."""

    name = "cluster-oracle"

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        if self.population is None:
            raise ValueError("the oracle allocator only runs inside vipfast.experiments.simulate")
        index = np.searchsorted(self.population.keys, np.asarray(keys, dtype=np.uint64))
        nodes, weights = np.polynomial.hermite_e.hermegauss(32)  # probabilists': E over N(0, 1)
        logits = self.population.skill[self.population.cluster[index]][:, None] + \
            self.population.scenario.prompt_spread * nodes[None, :]
        p = _sigmoid(logits)
        weights = weights / weights.sum()
        return Weighing(p=p @ weights, weights=(p * (1 - p)) @ weights)


def rloo_logit_gradients(rewards, counts, p):
    """Per group: mean_j A_j (y_j - p) with leave-one-out advantages; 0 for all-equal groups."""
    offsets = np.concatenate([[0], np.cumsum(counts)])[:-1]
    n = np.repeat(counts, counts).astype(np.float64)
    sums = np.repeat(np.add.reduceat(rewards, offsets), counts)
    advantages = rewards - (sums - rewards) / (n - 1)
    return np.add.reduceat(advantages * (rewards - np.repeat(p, counts)), offsets) / counts


def _objective_vs_uniform(p, counts, min_rollouts):
    """The batch's true variance objective relative to splitting the same budget uniformly."""
    weights = p * (1 - p)
    uniform = np.full(len(counts), counts.sum() // len(counts))
    uniform[: counts.sum() - uniform.sum()] += 1
    base = allocation_objective(weights, np.maximum(uniform, min_rollouts), min_rollouts=min_rollouts)
    return allocation_objective(weights, counts, min_rollouts=min_rollouts) / base if base > 0 else 1.0


def expected_calibration_error(predicted, outcomes, bins=10):
    edges = np.minimum((predicted * bins).astype(int), bins - 1)
    total = np.bincount(edges, minlength=bins)
    gap = np.abs(np.bincount(edges, weights=outcomes, minlength=bins) - np.bincount(edges, weights=predicted, minlength=bins))
    return float(gap.sum() / max(total.sum(), 1))


class BetaBaseline:
    """Per-prompt Beta(1, 1) posterior mean over every past observation, for calibration comparisons."""

    def __init__(self):
        self.successes: dict[int, float] = {}
        self.trials: dict[int, float] = {}

    def predict(self, keys):
        return np.array([(self.successes.get(k, 0.0) + 1) / (self.trials.get(k, 0.0) + 2) for k in keys.tolist()])

    def observe(self, keys, successes, trials):
        for key, k, n in zip(keys.tolist(), successes.tolist(), trials.tolist()):
            self.successes[key] = self.successes.get(key, 0.0) + k
            self.trials[key] = self.trials.get(key, 0.0) + n


@dataclass
class RunResult:
    allocator: str
    steps: list[dict]

    def summary(self) -> dict:
        rows = self.steps
        rollouts = sum(r["rollouts"] for r in rows)
        outcomes = [r for r in rows if r["brier"] is not None]
        mean = lambda key: float(np.mean([r[key] for r in outcomes])) if outcomes else None  # noqa: E731
        return dict(
            allocator=self.allocator,
            wasted_fraction=sum(r["wasted"] for r in rows) / rollouts,
            objective=float(np.mean([r["objective"] for r in rows])),
            objective_vs_uniform=float(np.mean([r["objective_vs_uniform"] for r in rows])),
            brier=mean("brier"), beta_brier=mean("beta_brier"), global_brier=mean("global_brier"), ece=mean("ece"),
            final_mean_p=rows[-1]["mean_p"],
            latency_ms=float(np.median([r["latency"] for r in rows]) * 1e3),
        )


def simulate(allocator, scenario: Scenario, *, label=None, progress=True) -> RunResult:
    """Run one allocator for scenario.steps steps on a fresh population; deterministic per seed."""
    population = Population(scenario)
    if isinstance(allocator, OracleAllocator):  # the cluster oracle too
        allocator.population = population
    rng = np.random.default_rng([scenario.seed, 2])
    beta = BetaBaseline()
    observed_successes = observed_trials = 0.0
    rows = []
    name = label or getattr(allocator, "name", type(allocator).__name__)
    for step in tqdm(range(scenario.steps), desc=f"simulate {name}", disable=not progress, leave=False):
        batch = rng.choice(scenario.num_prompts, size=scenario.batch_size, replace=False)
        keys = population.keys[batch]
        started = time.perf_counter()
        plan = allocator.plan(keys=keys, embeddings=population.embeddings[batch])
        counts = plan.counts
        planned = time.perf_counter() - started
        p = population.success_probability(batch)
        rewards = (rng.random(int(counts.sum())) < np.repeat(p, counts)).astype(np.float64)
        offsets = np.concatenate([[0], np.cumsum(counts)])[:-1]
        successes = np.add.reduceat(rewards, offsets)
        degenerate = (successes == 0) | (successes == counts)
        predicted = plan.p
        outcome_row = dict(brier=None, beta_brier=None, global_brier=None, ece=None)
        if predicted is not None:
            per_rollout = np.repeat(predicted, counts)
            global_mean = (observed_successes + 1) / (observed_trials + 2)
            outcome_row = dict(
                brier=float(np.mean((per_rollout - rewards) ** 2)),
                beta_brier=float(np.mean((np.repeat(beta.predict(keys), counts) - rewards) ** 2)),
                global_brier=float(np.mean((global_mean - rewards) ** 2)),
                ece=expected_calibration_error(per_rollout, rewards),
            )
        started = time.perf_counter()
        allocator.update(plan, rewards)
        updated = time.perf_counter() - started
        beta.observe(keys, successes, counts)
        observed_successes += successes.sum()
        observed_trials += counts.sum()
        population.learn(batch, rloo_logit_gradients(rewards, counts, p))
        rows.append(dict(
            step=step, rollouts=int(counts.sum()), wasted=int(counts[degenerate].sum()),
            objective=allocation_objective(p * (1 - p), counts, min_rollouts=scenario.min_rollouts),
            objective_vs_uniform=_objective_vs_uniform(p, counts, scenario.min_rollouts),
            mean_p=float(population.success_probability().mean()), latency=planned + updated, **outcome_row,
        ))
    return RunResult(name, rows)


def scenario_dict(scenario: Scenario) -> dict:
    return asdict(scenario)
