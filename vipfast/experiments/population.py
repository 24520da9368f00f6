"""A synthetic RLVR population: prompts in clusters of embedding space, a policy with a skill per cluster.

Prompt i of cluster c succeeds with p_i = σ(a_c + b_i): a_c is the policy's skill on cluster c, b_i the
prompt's own offset. What an embedding reveals is controlled: `embedding_signal` (1: embeddings come
from the clusters; 0: they are random, independent of difficulty) and `visible_offset` (the fraction of
the offsets' variance that a direction of each cluster's embedding shows). docs/simulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

__all__ = ["Scenario", "Population"]


@dataclass
class Scenario:
    """Every knob of a simulated run (each is a `vipfast simulate` flag)."""

    num_prompts: int = 2048        # the training pool
    num_clusters: int = 64
    dim: int = 32
    batch_size: int = 256          # prompts per step
    steps: int = 64
    rollout_budget: int = 0        # > 0: stop once this many rollouts were generated (steps is then a cap)
    order: str = "epoch"           # "epoch": each prompt once per epoch, reshuffled; "random": a fresh sample per step
    budget_per_prompt: float = 8.0
    min_rollouts: int = 2
    max_rollouts: int = 32
    hard_fraction: float = 0.3     # clusters the policy (nearly) never solves
    easy_fraction: float = 0.35    # clusters it (nearly) always solves
    prompt_spread: float = 1.0     # std of the per-prompt logit offsets b_i
    embedding_noise: float = 0.35  # scatter of a prompt's embedding around its cluster centre
    embedding_signal: float = 1.0  # 1: embeddings from the clusters; 0: random (they say nothing)
    visible_offset: float = 0.0    # fraction of the offsets' variance the embeddings reveal
    estimator: str = "rloo"        # the policy's advantages: "rloo" (leave-one-out) or "grpo" (normalised by the group std)
    learning_rate: float = 0.05    # Adam step on the policy's parameters (0: a frozen policy)
    parameters: int = 256          # dimension of the policy's parameters; each cluster's skill is one direction
    response_noise: float = 4.0    # norm of a response's own score-gradient direction, relative to its skill's
    shift_step: int = -1           # at this step the skills are redrawn (a sudden policy shift); -1: never
    new_pool_step: int = -1        # at this step the pool is replaced by fresh prompts (cold start); -1: never
    round_cost: float = 64.0       # wall-clock of one generation call, in rollouts (its tail latency)
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.batch_size <= self.num_prompts:
            raise ValueError(f"batch_size must be in [1, num_prompts={self.num_prompts}], got {self.batch_size}")
        if self.hard_fraction < 0 or self.easy_fraction < 0 or self.hard_fraction + self.easy_fraction > 1:
            raise ValueError(f"hard_fraction ({self.hard_fraction}) and easy_fraction ({self.easy_fraction}) "
                             "must be >= 0 and add up to at most 1")
        for name in ("num_prompts", "num_clusters", "dim", "steps", "parameters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("embedding_signal", "visible_offset"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.rollout_budget < 0:
            raise ValueError(f"rollout_budget must be >= 0, got {self.rollout_budget}")
        for name in ("prompt_spread", "embedding_noise", "learning_rate", "round_cost", "response_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.estimator not in ("rloo", "grpo"):
            raise ValueError(f"estimator must be 'rloo' or 'grpo', got {self.estimator!r}")
        if self.order not in ("epoch", "random"):
            raise ValueError(f"order must be 'epoch' or 'random', got {self.order!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Population:
    """The pool (keys, embeddings, clusters, offsets), the policy's skills and its Adam state."""

    scenario: Scenario
    pool: int = field(default=0, init=False)  # how many pools have been drawn (new_pool_step draws a second)

    def __post_init__(self):
        s = self.scenario
        rng = np.random.default_rng([s.seed, 0])
        self.centres = _unit_rows(rng.normal(size=(s.num_clusters, s.dim)))
        self.offset_directions = _unit_rows(rng.normal(size=(s.num_clusters, s.dim)))
        kind = rng.random(s.num_clusters)
        self.hard, self.easy = kind < s.hard_fraction, kind >= 1 - s.easy_fraction
        self.initial_skill = self._draw_skills(rng)
        self.skill_directions = _unit_rows(rng.normal(size=(s.num_clusters, s.parameters)))
        self.theta = np.zeros(s.parameters)
        self._adam = (np.zeros(s.parameters), np.zeros(s.parameters), 0)
        self._noise = np.random.default_rng([s.seed, 5])
        self._draw_pool()

    def _draw_skills(self, rng) -> np.ndarray:
        n = self.scenario.num_clusters
        return np.where(self.hard, rng.uniform(-8, -5, n), np.where(self.easy, rng.uniform(4, 7, n), rng.uniform(-3.5, 0.5, n)))

    def _draw_pool(self) -> None:
        """Prompts of the current pool: clusters, offsets, embeddings and keys unique across pools."""
        s = self.scenario
        rng = np.random.default_rng([s.seed, 1, self.pool])
        n = s.num_prompts
        self.cluster = rng.integers(0, s.num_clusters, size=n)
        visible = rng.normal(size=n)
        hidden = rng.normal(size=n)
        self.hidden_offset = s.prompt_spread * np.sqrt(1 - s.visible_offset) * hidden
        self.offset = s.prompt_spread * np.sqrt(s.visible_offset) * visible + self.hidden_offset
        noise = rng.normal(size=(n, s.dim)) * s.embedding_noise / np.sqrt(s.dim)
        shown = (self.centres[self.cluster] + noise
                 + s.embedding_noise * visible[:, None] * self.offset_directions[self.cluster])
        random = _unit_rows(rng.normal(size=(n, s.dim)))
        mixed = s.embedding_signal * _unit_rows(shown) + (1 - s.embedding_signal) * random
        self.embeddings = _unit_rows(mixed).astype(np.float32)
        # Keys increase with the prompt index and never repeat across pools (Knuth's multiplicative spread).
        first = self.pool * n
        self.keys = (np.arange(first, first + n, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(1))
        self.seen = np.zeros(n, dtype=bool)

    def mark_seen(self, prompts: np.ndarray) -> float:
        """The fraction of these prompts never drawn before (a first visit); marks them drawn."""
        fresh = float(np.mean(~self.seen[prompts])) if len(prompts) else 0.0
        self.seen[prompts] = True
        return fresh

    # -- the policy -------------------------------------------------------------------------------
    def success_probability(self, prompts=None) -> np.ndarray:
        index = slice(None) if prompts is None else prompts
        return _sigmoid(self.skill[self.cluster[index]] + self.offset[index])

    @property
    def skill(self) -> np.ndarray:
        """a_c: each cluster's initial skill plus what the parameters learned along its direction."""
        return self.initial_skill + self.skill_directions @ self.theta

    def learn(self, prompts: np.ndarray, gradients: np.ndarray, noise_energy: float) -> None:
        """One Adam step (β1 0.9, β2 0.99, bias-corrected) on the batch's policy gradient.

        Each trained prompt pushes its cluster's skill direction by its gradient estimate g_i (mean over
        prompts); each response also has a direction of its own, of norm `response_noise` times its skill
        component, random in the parameter space. Their sum over the batch is isotropic Gaussian noise of
        total energy response_noise² × `noise_energy` (Σ over trained rollouts of their squared
        coefficients), which Adam's second moment sees: the noisier the batch's estimates, the shorter the
        steps along every skill. So allocations with lower gradient variance learn faster.
        """
        s = self.scenario
        if s.learning_rate == 0 or len(prompts) == 0:
            return
        signal = np.bincount(self.cluster[prompts], weights=gradients, minlength=s.num_clusters) / len(prompts)
        noise = self._noise.normal(size=s.parameters) * s.response_noise * np.sqrt(noise_energy / s.parameters)
        gradient = signal @ self.skill_directions + noise
        m, v, t = self._adam
        t += 1
        m = 0.9 * m + 0.1 * gradient
        v = 0.99 * v + 0.01 * gradient**2
        self._adam = (m, v, t)
        self.theta += s.learning_rate * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)

    def shift(self) -> None:
        """A sudden policy shift: every cluster's skill redrawn from its kind's range."""
        self.initial_skill = self._draw_skills(np.random.default_rng([self.scenario.seed, 2])) - \
            self.skill_directions @ self.theta

    def replace_pool(self) -> None:
        """Fresh prompts from the same clusters: the predictors have seen none of them."""
        self.pool += 1
        self._draw_pool()


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
