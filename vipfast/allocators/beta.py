"""A per-prompt Beta(1, 1) counter: each prompt's own successes and failures, no embeddings.

After k successes in n rollouts (tempered by `forgetting` per update when < 1) a prompt's success
probability has the posterior Beta(1 + k, 1 + n − k), whose E[p(1 − p)] = αβ / ((α + β)(α + β + 1))
is its allocation weight: an unseen prompt weighs 1/6, the most of any. Cheap, strong when prompts
come back often, blind to prompts it has not seen.
"""

from __future__ import annotations

import numpy as np

from .._validation import as_int64, as_real
from .base import AllocatorBase, Weighing
from .prompt_table import PromptTable, count_bounds, merge_duplicate_keys, saved_count
from .registry import register

__all__ = ["BetaAllocator", "beta_moments"]


def beta_moments(successes: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(posterior mean of p, E[p(1 − p)]) under Beta(1 + k, 1 + n − k)."""
    alpha, beta = 1.0 + successes, 1.0 + trials - successes
    total = alpha + beta
    return alpha / total, alpha * beta / (total * (total + 1.0))


class BetaAllocator(AllocatorBase):
    """Weights E[p(1 − p)] from each prompt's own counts; `forgetting` in (0, 1] per update."""

    name = "beta"

    def __init__(self, *, forgetting: float = 1.0, capacity: int = 1 << 21, **options):
        super().__init__(**options)
        forgetting = as_real(forgetting, "forgetting")
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must lie in (0, 1], got {forgetting}")
        self.forgetting, self.capacity = forgetting, as_int64(capacity, "capacity")
        self.counts = PromptTable({"successes": 0.0, "trials": 0.0, "step": 0.0}, capacity=self.capacity,
                                  bounds=count_bounds(lambda: self.step), whole=("step",), name="counts")
        self.step = 0

    def init_options(self) -> dict:
        return dict(forgetting=self.forgetting, capacity=self.capacity)

    def forgotten_counts(self, keys) -> tuple[np.ndarray, np.ndarray]:
        rows = self.counts.rows(keys)
        decay = self.forgetting ** (self.step - self.counts.read("step", rows=rows))
        return self.counts.read("successes", rows=rows) * decay, self.counts.read("trials", rows=rows) * decay

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        p, weights = beta_moments(*self.forgotten_counts(keys))
        return Weighing(p=p, weights=weights)

    def learn(self, plan, successes, trials) -> None:
        keys, successes, trials = merge_duplicate_keys(plan.keys, successes, trials)
        old_successes, old_trials = self.forgotten_counts(keys)
        rows = self.counts.insert(keys)
        self.counts.write("successes", rows, old_successes + successes)
        self.counts.write("trials", rows, old_trials + trials)
        self.counts.write("step", rows, self.step)

    def advance(self) -> None:
        self.step += 1

    def rule_stats(self) -> dict:
        return dict(prompts_held=len(self.counts), memory_bytes=self.counts.memory_bytes)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"step": np.array(self.step), **{f"counts/{k}": v for k, v in self.counts.state_arrays().items()}}

    def load_state_arrays(self, arrays, version) -> None:
        self.step = saved_count(arrays["step"], "step")
        self.counts.load_state_arrays({k.removeprefix("counts/"): v for k, v in arrays.items() if k != "step"})


register("beta", BetaAllocator, "per-prompt Beta(1, 1) counter, weights E[p(1-p)], no embeddings")
