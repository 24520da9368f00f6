"""Reinforce-Ada (Xiong et al., arXiv 2510.04996): sample in rounds until each prompt's exit rule holds,
then down-sample every prompt's pool to a fixed-size group balanced between successes and failures.

Defaults are the published ones: 4 rounds of 8 rollouts per still-active prompt (at most 32), final groups
of 4, a rollout succeeding when its reward exceeds 0.7, baselines from every response drawn for the prompt.
"""

from __future__ import annotations

import numpy as np

from .base import Sampler, plan_for, register_sampler
from .batch import Generate, Observation, PromptSource, StepBatch
from .ledger import RolloutLedger, check_choice, check_count, check_num_prompts, check_number

__all__ = ["ReinforceAdaSampler", "exits", "balanced_downsample"]

EXIT_RULES = ("balanced", "positive")
BASELINES = ("all", "group")
UNRESOLVED = ("filter", "keep")


def exits(rule: str, successes, failures, group_size: int) -> np.ndarray:
    """bool: whether a prompt with these counts so far leaves the active set.

    "positive": at least one success. "balanced": at least ⌊k/2⌋ successes and ⌈k/2⌉ failures, k = group_size.
    """
    check_choice("exit_rule", rule, EXIT_RULES)
    successes, failures = np.asarray(successes), np.asarray(failures)
    if rule == "positive":
        return successes >= 1
    return (successes >= group_size // 2) & (failures >= group_size - group_size // 2)


def balanced_downsample(success: np.ndarray, group_size: int) -> np.ndarray:
    """Positions (ascending) of the rollouts a pool keeps: up to ⌊k/2⌋ successes, failures for the rest of the
    k slots, successes again where failures run short; the earliest of each kind first. A pool of at most k
    rollouts is kept whole."""
    success = np.asarray(success, dtype=bool)
    group_size = check_count("group_size", group_size, 1)
    positives, negatives = np.flatnonzero(success), np.flatnonzero(~success)
    take_positive = min(len(positives), group_size // 2)
    take_negative = min(len(negatives), group_size - take_positive)
    take_positive = min(len(positives), group_size - take_negative)
    return np.sort(np.concatenate([positives[:take_positive], negatives[:take_negative]]))


class ReinforceAdaSampler(Sampler):
    """Rounds of `per_round` rollouts for every still-active prompt, at most `rounds` rounds.

    exit_rule  "balanced" (Reinforce-Ada-balance) or "positive" (Reinforce-Ada-pos), checked after each round
    threshold  a rollout succeeds when its reward > threshold
    group_size the trained group per prompt (balanced_downsample of its pool)
    baseline   "all": a prompt's advantage group is every rollout drawn for it, of which the down-sampled ones
               train (the published global statistics); "group": the down-sampled rollouts are the group
    unresolved prompts still active after the last round are down-sampled the same way; "filter" (the paper)
               drops those whose advantage group has all rewards equal, "keep" (the public code) keeps them
    """

    name = "reinforce_ada"

    def __init__(self, *, exit_rule: str = "balanced", rounds: int = 4, per_round: int = 8, group_size: int = 4,
                 threshold: float = 0.7, baseline: str = "all", unresolved: str = "filter", max_draws: float = 8.0):
        super().__init__(max_draws=max_draws)
        self.exit_rule = check_choice("exit_rule", exit_rule, EXIT_RULES)
        self.rounds = check_count("rounds", rounds, 1)
        self.per_round = check_count("per_round", per_round, 1)
        self.group_size = check_count("group_size", group_size, 2)
        self.threshold = check_number("threshold", threshold)
        self.baseline = check_choice("baseline", baseline, BASELINES)
        self.unresolved = check_choice("unresolved", unresolved, UNRESOLVED)

    def options(self) -> dict:
        return dict(super().options(), exit_rule=self.exit_rule, rounds=self.rounds, per_round=self.per_round,
                    group_size=self.group_size, threshold=self.threshold, baseline=self.baseline,
                    unresolved=self.unresolved)

    def sample(self, allocator, source: PromptSource, generate: Generate, num_prompts: int) -> StepBatch:
        num_prompts = check_num_prompts(num_prompts)
        prompts, drawn = self.draw(allocator, source, num_prompts)
        ledger = RolloutLedger()
        if len(prompts) == 0:
            return ledger.empty_batch(prompts, drawn)
        plan = plan_for(allocator, prompts)  # the allocator only learns from this mode's rollouts
        pools, active = self._collect(ledger, generate, prompts)
        rewards = ledger.rewards
        trained = np.zeros(ledger.total, dtype=bool)
        groups, kept = [], []
        for q, pool in enumerate(pools):
            chosen = pool[balanced_downsample(rewards[pool] > self.threshold, self.group_size)]
            group = pool if self.baseline == "all" else chosen
            if active[q] and self.unresolved == "filter" and np.ptp(rewards[group]) == 0:
                continue
            trained[chosen] = True
            groups.append(group)
            kept.append(q)
        observation = Observation(plan, rewards[np.concatenate(pools)],
                                  np.array([len(pool) for pool in pools], dtype=np.int64))
        return ledger.batch(prompts.take(kept), np.arange(len(kept)), groups, prompts_drawn=drawn,
                            complete=len(kept) == num_prompts, pending=[observation], trained=trained)

    def _collect(self, ledger: RolloutLedger, generate: Generate, prompts) -> tuple[list[np.ndarray], np.ndarray]:
        """(each prompt's rollout numbers in generation order, which prompts are still active)."""
        parts: list[list[np.ndarray]] = [[] for _ in range(len(prompts))]
        successes = np.zeros(len(prompts), dtype=np.int64)
        failures = np.zeros(len(prompts), dtype=np.int64)
        active = np.ones(len(prompts), dtype=bool)
        for _ in range(self.rounds):
            rows = np.flatnonzero(active)
            if not len(rows):
                break
            numbers, rewards = ledger.generate(generate, prompts, np.where(active, self.per_round, 0))
            wins = (rewards > self.threshold).reshape(len(rows), self.per_round).sum(axis=1)
            successes[rows] += wins
            failures[rows] += self.per_round - wins
            for row, chunk in zip(rows.tolist(), numbers.reshape(len(rows), self.per_round)):
                parts[row].append(chunk)
            active[rows] = ~exits(self.exit_rule, successes[rows], failures[rows], self.group_size)
        return [np.concatenate(part) for part in parts], active


register_sampler("reinforce_ada", ReinforceAdaSampler)
