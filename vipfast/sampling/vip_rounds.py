"""VIP in two rounds: plan part of the budget, learn from its outcomes within the step, re-plan the rest exactly.

Round 1 splits ⌊first_fraction · B⌉ rollouts (at least every prompt's minimum) by the allocator's weights w⁰;
the allocator then learns from round 1 (`allocator.update`), plans the same prompts again, and of that plan
only its weights w are used: the remaining rollouts Δ_q ≥ 0 minimise Σ_q w_q φ(n1_q + Δ_q) subject to
Σ_q Δ_q = B − Σ_q n1_q and n1_q + Δ_q ≤ max_rollouts, solved exactly by `vipfast.allocate` on per-prompt cost
tables (see `extra_rollouts`).

A prompt's second-round size depends on its first-round rewards, so the group-mean baseline over both rounds
no longer has the i.i.d. structure that makes leave-one-out advantages unbiased. `groups="round"` makes each
round its own advantage group: given the earlier round, a round's rollouts are i.i.d., so a leave-one-out
baseline within it keeps every rollout's advantage-weighted score unbiased (docs/sampling.md).
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np

from .._validation import as_float64_array, as_int64, as_int64_array
from ..allocation import allocate, allocation_objective
from .base import Sampler, plan_for, register_sampler
from .batch import Generate, Observation, PromptSource, StepBatch
from .ledger import RolloutLedger, check_choice, check_num_prompts, check_number

__all__ = ["VIPRoundsSampler", "extra_rollouts"]

GROUPINGS = ("prompt", "round")


def extra_rollouts(weights, first, extra: int, *, max_rollouts: int, estimator: str = "rloo") -> np.ndarray:
    """int64 [Q]: Δ ≥ 0 minimising Σ_q w_q φ(first_q + Δ_q), Σ Δ = extra, first_q + Δ_q ≤ max_rollouts.

    The solver takes one table of costs per prompt over a common range, so row q holds w_q φ(first_q + j) for
    j = 0..max_rollouts − first_q and past that a continuation whose marginal gains are negative and falling
    (convex), below every real gain (those are ≥ 0 because φ decreases): no optimum takes a padded unit while
    a real one is left, and there are enough real units whenever the request is feasible.
    """
    weights = as_float64_array(weights, "weights", 1)
    first = as_int64_array(first, "first")
    extra, max_rollouts = as_int64(extra, "extra"), as_int64(max_rollouts, "max_rollouts")
    if not np.all(np.isfinite(weights) & (weights >= 0)):
        bad = int(np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))[0])
        raise ValueError(f"weights[{bad}] = {weights[bad]}; weights must be finite and >= 0")
    if len(weights) != len(first) or (first.size and first.max() > max_rollouts):
        raise ValueError(f"need one weight per first count ({len(weights)} and {len(first)}) and first counts "
                         f"<= max_rollouts = {max_rollouts}")
    room = max_rollouts - first
    if not 0 <= extra <= int(room.astype(np.float64).sum()):
        raise ValueError(f"extra = {extra} rollouts cannot be placed: the prompts have room for {int(room.sum())}")
    if extra == 0:
        return np.zeros(len(first), dtype=np.int64)
    room = np.minimum(room, extra)                                            # no prompt can take more than extra
    low, span = int(first.min()), int(room.max())
    curve = _variance_curve(estimator, low, int((first + room).max()))
    if weights.max() > 1:  # the argmin ignores scale; costs <= 1 keep the padding below overflow
        weights = weights / weights.max()
    step = np.arange(span + 1)[None, :]
    real = step <= room[:, None]                                              # [Q, span + 1]
    counts = np.minimum(first[:, None] + step, first[:, None] + room[:, None])
    costs = weights[:, None] * curve[counts - low]
    past = np.maximum(step - room[:, None], 0)
    steep = 1.0 + float(np.abs(costs[real]).max())
    costs = np.where(real, costs, costs[np.arange(len(first)), room][:, None] + steep * past * (past + 1) / 2)
    return allocate(None, extra + len(first), min_rollouts=1, curve=costs) - 1


@lru_cache(maxsize=64)
def _variance_curve(estimator: str, low: int, high: int) -> np.ndarray:
    """φ(low..high) of the estimator, read from the solver's own objective."""
    curve = np.array([allocation_objective([1.0], [n], min_rollouts=n, max_rollouts=n, estimator=estimator)
                      for n in range(low, high + 1)])
    curve.flags.writeable = False
    return curve


class VIPRoundsSampler(Sampler):
    """Two rounds per step under one budget: round 1 by the allocator's weights, round 2 re-planned after the
    allocator has learned round 1's outcomes.

    first_fraction  share of the step's budget B spent in round 1 (at least every prompt's min_rollouts)
    groups          "prompt": one advantage group per prompt (both rounds); "round": one group per prompt and
                    round (unbiased leave-one-out advantages, see the module docstring)

    The allocator must be one of vipfast's (it needs `bounds` and `config["estimator"]`). It learns round 1
    inside the step; round 2 is left pending. Rules that age their evidence per update (GP forgetting, the
    beta counter's step) age it twice per step under this mode.
    """

    name = "vip_rounds"

    def __init__(self, *, first_fraction: float = 0.5, groups: str = "prompt", max_draws: float = 8.0):
        super().__init__(max_draws=max_draws)
        self.first_fraction = check_number("first_fraction", first_fraction, 0.0, 1.0, open_low=True)
        self.groups = check_choice("groups", groups, GROUPINGS)

    def options(self) -> dict:
        return dict(super().options(), first_fraction=self.first_fraction, groups=self.groups)

    def sample(self, allocator, source: PromptSource, generate: Generate, num_prompts: int) -> StepBatch:
        num_prompts = check_num_prompts(num_prompts)
        low, high, estimator = _solver_settings(allocator)
        prompts, drawn = self.draw(allocator, source, num_prompts)
        ledger = RolloutLedger()
        if len(prompts) == 0:
            return ledger.empty_batch(prompts, drawn)
        plan = plan_for(allocator, prompts)
        budget = plan.total
        first_budget = min(budget, max(len(prompts) * low, math.floor(self.first_fraction * budget + 0.5)))
        first = allocate(plan.weights, first_budget, min_rollouts=low, max_rollouts=high, estimator=estimator)
        first_numbers, first_rewards = ledger.generate(generate, prompts, first)
        allocator.update(replace(plan, counts=first), first_rewards, first, ends_step=False)
        extra = np.zeros(len(prompts), dtype=np.int64)
        second_numbers = np.empty(0, dtype=np.int64)
        pending = []
        if budget > first_budget:
            replan = plan_for(allocator, prompts)
            extra = extra_rollouts(replan.weights, first, budget - first_budget, max_rollouts=high, estimator=estimator)
            second_numbers, second_rewards = ledger.generate(generate, prompts, extra)
            rows = np.flatnonzero(extra > 0)
            pending = [Observation(replace(replan, counts=extra).select(rows), second_rewards, extra[rows])]
        rounds = [np.split(first_numbers, np.cumsum(first)[:-1]), np.split(second_numbers, np.cumsum(extra)[:-1])]
        if self.groups == "prompt":
            groups = [np.concatenate(parts) for parts in zip(*rounds)]
            group_prompt = np.arange(len(prompts))
        else:
            groups, group_prompt = [], []
            for q, parts in enumerate(zip(*rounds)):
                groups += [part for part in parts if len(part)]
                group_prompt += [q] * sum(len(part) > 0 for part in parts)
        return ledger.batch(prompts, group_prompt, groups, prompts_drawn=drawn, complete=len(prompts) == num_prompts,
                            pending=pending)


def _solver_settings(allocator) -> tuple[int, int, str]:
    """(min_rollouts, max_rollouts, estimator) of a vipfast allocator."""
    try:
        bounds, estimator = allocator.bounds, allocator.config["estimator"]
    except (AttributeError, KeyError, TypeError):
        raise TypeError(f"vip_rounds needs a vipfast allocator (with .bounds and .config['estimator']), "
                        f"got {type(allocator).__name__}") from None
    return int(bounds["min_rollouts"]), int(bounds["max_rollouts"]), estimator


register_sampler("vip_rounds", VIPRoundsSampler)
