"""PODS (Xu et al., arXiv 2504.13818): generate the allocator's plan, train on each group's max-variance subset.

Max-variance down-sampling. Among all subsets of size m of a group's rewards x_1..x_n, one of largest
variance consists of the i lowest and the m − i highest rewards for some i in 0..m. Proof: let S be optimal
with mean μ. Exchanging an included x_s for an excluded x_e changes m·Var by
    D = (u − v)·[u(1 − 1/m) + v(1 + 1/m)],   u = x_e − μ, v = x_s − μ.
If, in sorted order, an included x_s lies between two excluded rewards x_a ≤ x_s ≤ x_b, exchange it for
x_b when x_s ≥ μ (then u ≥ v ≥ 0, so D ≥ 0) or for x_a when x_s < μ (the mirror case). S being optimal,
D = 0, which for m ≥ 2 forces x_b = x_s (resp. x_a = x_s): the exchange swaps equal values, leaving the
multiset, μ and the variance unchanged while strictly increasing
Σ_{s ∈ S, x_s ≥ μ} rank(s) − Σ_{s ∈ S, x_s < μ} rank(s).
So exchanges terminate, at an optimal S whose excluded rewards are contiguous in sorted order: a prefix and
a suffix. Sorting once and scoring the m + 1 candidates from prefix sums of x and x² costs O(n log n).
"""

from __future__ import annotations

import numpy as np

from .base import Sampler, plan_for, register_sampler
from .batch import Generate, Observation, PromptSource, StepBatch
from .ledger import RolloutLedger, check_count, check_groups, check_num_prompts

__all__ = ["PODSSampler", "max_variance_selection"]


def max_variance_selection(rewards, group_sizes, keep: int) -> np.ndarray:
    """bool [N]: in each group (consecutive runs of `group_sizes` rewards), the min(keep, n) rollouts of largest
    reward variance: the i lowest and the rest highest, for the best i (ties: the fewest lowest; among equal
    rewards, the earlier rollout counts as lower)."""
    rewards, sizes = check_groups(rewards, group_sizes)
    keep = check_count("keep", keep, 1)
    if not len(rewards):
        return np.zeros(0, dtype=bool)
    width = int(sizes.max())
    keep = min(keep, width)
    valid = np.arange(width)[None, :] < sizes[:, None]                       # [Q, width]
    padded = np.full(valid.shape, np.inf)
    padded[valid] = rewards
    order = np.argsort(padded, axis=1, kind="stable")                        # padding sorts last
    values = np.where(valid, np.take_along_axis(padded, order, axis=1), 0.0)
    # Shifting and positive scaling rank subsets alike: scale each group into [-1, 1] and centre it, so that
    # squares neither overflow nor cancel.
    values /= np.maximum(np.abs(values).max(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    values = np.where(valid, values - values.sum(axis=1, keepdims=True) / np.maximum(sizes, 1)[:, None], 0.0)
    first = np.concatenate([np.zeros((len(sizes), 1)), np.cumsum(values, axis=1)], axis=1)       # [Q, width + 1]
    second = np.concatenate([np.zeros((len(sizes), 1)), np.cumsum(values**2, axis=1)], axis=1)
    taken = np.minimum(sizes, keep)[:, None]                                 # m of each group
    lowest = np.arange(keep + 1)                                             # candidate i
    high_start = np.clip(sizes[:, None] - taken + lowest, 0, width)          # [Q, keep + 1]
    end = sizes[:, None]
    clipped = np.minimum(lowest, width)
    sums = first[:, clipped] + np.take_along_axis(first, end, 1) - np.take_along_axis(first, high_start, 1)
    squares = second[:, clipped] + np.take_along_axis(second, end, 1) - np.take_along_axis(second, high_start, 1)
    spread = np.where(lowest <= taken, squares - sums**2 / np.maximum(taken, 1), -np.inf)
    best = np.argmax(spread, axis=1)[:, None]
    position = np.arange(width)[None, :]
    chosen_sorted = valid & ((position < best) | (position >= sizes[:, None] - taken + best))
    chosen = np.zeros(valid.shape, dtype=bool)
    np.put_along_axis(chosen, order, chosen_sorted, axis=1)
    return chosen[valid]


class PODSSampler(Sampler):
    """Generate the allocator's plan; in each group train on the `keep` rollouts of largest reward variance.

    The kept rollouts are the advantage group (the update sees only the subset); a group with at most
    `keep` rollouts is kept whole. Every generated rollout counts and reaches the allocator.
    """

    name = "pods"

    def __init__(self, *, keep: int = 4, max_draws: float = 8.0):
        super().__init__(max_draws=max_draws)
        self.keep = check_count("keep", keep, 2)

    def options(self) -> dict:
        return dict(super().options(), keep=self.keep)

    def sample(self, allocator, source: PromptSource, generate: Generate, num_prompts: int) -> StepBatch:
        num_prompts = check_num_prompts(num_prompts)
        prompts, drawn = self.draw(allocator, source, num_prompts)
        ledger = RolloutLedger()
        if len(prompts) == 0:
            return ledger.empty_batch(prompts, drawn)
        plan = plan_for(allocator, prompts)
        numbers, rewards = ledger.generate(generate, prompts, plan.counts)
        chosen = max_variance_selection(rewards, plan.counts, self.keep)
        bounds = np.concatenate([[0], np.cumsum(plan.counts)])
        with_rollouts = np.flatnonzero(plan.counts > 0)
        groups = [numbers[bounds[q]:bounds[q + 1]][chosen[bounds[q]:bounds[q + 1]]] for q in with_rollouts]
        return ledger.batch(prompts, with_rollouts, groups, prompts_drawn=drawn,
                            complete=len(with_rollouts) == num_prompts,
                            pending=[Observation(plan, rewards, plan.counts)])


register_sampler("pods", PODSSampler)
