"""Knapsack-RL (arXiv 2509.25849): each prompt's value of n rollouts, solved exactly.

Value of n rollouts for a prompt with success rate p: the probability that its group is not
all-equal, 1 − pⁿ − (1 − p)ⁿ, times the informativeness p(1 − p)², with p the prompt's empirical
success rate when it was last seen (0.5 if never; over all its rollouts of that batch when a batch holds
it twice). The value is concave in n, so the exact solver maximises its sum under the budget
(vipfast.knapsack_costs).
"""

from __future__ import annotations

import numpy as np

from ..allocation import allocate, knapsack_costs
from .._validation import as_int64
from .base import AllocatorBase, Weighing
from .prompt_table import PromptTable, merge_duplicate_keys
from .registry import register

__all__ = ["KnapsackAllocator"]

UNSEEN_RATE = 0.5


class KnapsackAllocator(AllocatorBase):
    """Knapsack-RL's value with last-seen success rates; remembers at most `capacity` prompts (LRU)."""

    name = "knapsack"

    def __init__(self, *, capacity: int = 1 << 21, **options):
        super().__init__(**options)
        self.capacity = as_int64(capacity, "capacity")
        self.rates = PromptTable({"rate": UNSEEN_RATE}, capacity=self.capacity, bounds={"rate": (0.0, 1.0)},
                                 name="rates")

    def init_options(self) -> dict:
        return dict(capacity=self.capacity)

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        p = self.rates.read("rate", keys)
        return Weighing(p=p, weights=p * (1 - p))

    def solve(self, weighing: Weighing, budget: int) -> np.ndarray:
        lo, hi = self.table_range(len(weighing["p"]), budget)
        return allocate(None, budget, min_rollouts=lo, curve=knapsack_costs(weighing["p"], lo, hi))

    def learn(self, plan, successes, trials) -> None:
        seen = trials > 0
        keys, successes, trials = merge_duplicate_keys(plan.keys[seen], successes[seen], trials[seen])
        rows = self.rates.insert(keys)
        self.rates.write("rate", rows, successes / trials)

    def rule_stats(self) -> dict:
        return dict(prompts_held=len(self.rates), memory_bytes=self.rates.memory_bytes)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"rates/{k}": v for k, v in self.rates.state_arrays().items()}

    def load_state_arrays(self, arrays, version) -> None:
        if version == 1:  # a plain dict of last rates, oldest first: one table state, all touched at once
            keys, values = arrays["rates/keys"], arrays["rates/values"]
            arrays = {"rates/keys": keys, "rates/touched": np.ones(np.shape(keys), np.int64),
                      "rates/clock": np.array(1), "rates/column/rate": values}
        self.rates.load_state_arrays({k.removeprefix("rates/"): v for k, v in arrays.items()})


register("knapsack", KnapsackAllocator, "Knapsack-RL: value of a non-degenerate group, last-seen success rates")
