"""DAPO dynamic sampling (Yu et al., arXiv 2503.14476): drop groups whose rewards are all equal, refill, repeat."""

from __future__ import annotations

import math

import numpy as np

from .base import Sampler, plan_for, register_sampler
from .batch import Generate, Observation, PromptSource, Prompts, StepBatch
from .ledger import RolloutLedger, check_count, check_groups, check_num_prompts, check_number

__all__ = ["DynamicSampler", "informative_groups"]


def informative_groups(rewards: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """bool [Q]: groups (consecutive runs of `sizes` rewards) whose rewards are not all equal.

    Compares max and min exactly: a standard deviation computed in floating point is not exactly 0 for
    every constant group (np.std([0.1] * 3) > 0), so it cannot decide "all equal".
    """
    rewards, sizes = check_groups(rewards, sizes)
    informative = np.zeros(len(sizes), dtype=bool)
    nonempty = sizes > 0
    if nonempty.any():
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[nonempty]
        informative[nonempty] = np.maximum.reduceat(rewards, starts) > np.minimum.reduceat(rewards, starts)
    return informative


class DynamicSampler(Sampler):
    """Draw ⌈oversample · missing⌉ prompts, generate the allocator's plan for them, keep the groups whose rewards
    are not all equal, and repeat until `num_prompts` groups are kept or `max_rounds` generation rounds ran.

    The first `num_prompts` informative groups in draw order are kept; informative groups past them and every
    dropped group still count as generated and reach the allocator. Stopping at the round limit (or when the
    source runs dry) returns what was kept with `complete=False`. Defaults are the DAPO recipe's: a generation
    batch three times the training batch, at most 10 generation batches per step.
    """

    name = "dynamic"

    def __init__(self, *, oversample: float = 3.0, max_rounds: int = 10, max_draws: float = 8.0):
        super().__init__(max_draws=max_draws)
        self.oversample = check_number("oversample", oversample, 1.0)
        self.max_rounds = check_count("max_rounds", max_rounds, 1)

    def options(self) -> dict:
        return dict(super().options(), oversample=self.oversample, max_rounds=self.max_rounds)

    def sample(self, allocator, source: PromptSource, generate: Generate, num_prompts: int) -> StepBatch:
        num_prompts = check_num_prompts(num_prompts)
        ledger = RolloutLedger()
        kept_prompts: list[Prompts] = []
        groups: list[np.ndarray] = []
        pending: list[Observation] = []
        drawn_total = 0
        for _ in range(self.max_rounds):
            prompts, drawn = self.draw(allocator, source, math.ceil(self.oversample * (num_prompts - len(groups))))
            drawn_total += drawn
            if len(prompts) == 0:
                break
            plan = plan_for(allocator, prompts)
            numbers, rewards = ledger.generate(generate, prompts, plan.counts)
            pending.append(Observation(plan, rewards, plan.counts))
            keep = np.flatnonzero(informative_groups(rewards, plan.counts))[: num_prompts - len(groups)]
            starts = np.concatenate([[0], np.cumsum(plan.counts)])
            groups += [numbers[starts[q]:starts[q + 1]] for q in keep]
            kept_prompts.append(prompts.take(keep))
            if len(groups) == num_prompts:
                break
        prompts = Prompts.concat(kept_prompts) if kept_prompts else _no_prompts()
        return ledger.batch(prompts, np.arange(len(groups)), groups, prompts_drawn=drawn_total,
                            complete=len(groups) == num_prompts, pending=pending)


def _no_prompts() -> Prompts:
    return Prompts(ids=np.empty(0, dtype=np.int64), keys=np.empty(0, dtype=np.uint64))


register_sampler("dynamic", DynamicSampler)
