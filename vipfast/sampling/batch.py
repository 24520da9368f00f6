"""The values a sampling mode works with: the prompts of a step, a generation call's outcomes, the final batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..allocators import Plan

__all__ = ["Prompts", "Outcomes", "Observation", "StepBatch", "PromptSource", "Generate"]


@dataclass(frozen=True, eq=False)
class Prompts:
    """Prompts drawn for a step. ids: the caller's handle of each (a dataset index), int64 [k];
    keys: uint64 [k]; texts: list of str or None; embeddings: [k, d] or None (rules embed texts)."""

    ids: np.ndarray
    keys: np.ndarray
    texts: tuple[str, ...] | None = None
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows) -> Prompts:
        rows = np.asarray(rows, dtype=np.int64)
        return Prompts(ids=self.ids[rows], keys=self.keys[rows],
                       texts=None if self.texts is None else tuple(self.texts[i] for i in rows.tolist()),
                       embeddings=None if self.embeddings is None else self.embeddings[rows])

    @staticmethod
    def concat(parts: list[Prompts]) -> Prompts:
        first = parts[0]
        return Prompts(ids=np.concatenate([p.ids for p in parts]), keys=np.concatenate([p.keys for p in parts]),
                       texts=None if first.texts is None else tuple(t for p in parts for t in p.texts),
                       embeddings=None if first.embeddings is None else np.concatenate([p.embeddings for p in parts]))


@dataclass(frozen=True, eq=False)
class Outcomes:
    """What one generation call returned, grouped prompt by prompt in request order.

    rewards: float64 [n] (binary or in [0, 1], or any scale with the allocator's reward_threshold);
    tokens: int64 [n] response lengths (zeros when the caller does not count tokens)."""

    rewards: np.ndarray
    tokens: np.ndarray


class PromptSource(Protocol):
    """Where a step's prompts come from (a shuffled dataset epoch by epoch, a simulated pool...)."""

    def draw(self, count: int) -> Prompts:
        """The next `count` prompts (fewer, or none, when the source runs dry; none for count 0)."""


class Generate(Protocol):
    def __call__(self, prompts: Prompts, counts: np.ndarray) -> Outcomes:
        """Generate counts[i] rollouts for prompts[i] (each count >= 1), verify them, return their outcomes."""


@dataclass(frozen=True, eq=False)
class Observation:
    """Outcomes an allocator still has to learn: allocator.update(plan, rewards, group_sizes)."""

    plan: Plan
    rewards: np.ndarray
    group_sizes: np.ndarray


@dataclass(eq=False)
class StepBatch:
    """One step's training batch and what it cost.

    The rollouts of the step are numbered in the order they were generated (all rounds). The batch
    lists, for each advantage group, its rollouts; advantages are computed over every rollout of a
    group, and the loss counts only the `trained` ones. A prompt may have several groups.

    prompts        the P prompts the batch trains on
    group_prompt   int64 [G]  row of `prompts` of each advantage group
    group_sizes    int64 [G]  rollouts per group (>= 1)
    rollouts       int64 [N]  generated-rollout numbers, grouped, N = group_sizes.sum()
    rewards        float64 [N]
    trained        bool [N]   rollouts that enter the loss
    generated_rollouts / generated_tokens   everything generated this step, kept or not
    rounds         generation calls made
    prompts_drawn  prompts taken from the source (screened out, dropped and kept ones)
    complete       False when the mode stopped at its round limit short of its target (the batch is smaller)
    pending        observations the allocator has not learned yet (the caller runs allocator.update on them)
    """

    prompts: Prompts
    group_prompt: np.ndarray
    group_sizes: np.ndarray
    rollouts: np.ndarray
    rewards: np.ndarray
    trained: np.ndarray
    generated_rollouts: int
    generated_tokens: int
    rounds: int
    prompts_drawn: int
    complete: bool = True
    pending: list[Observation] = field(default_factory=list)

    @property
    def trained_rollouts(self) -> int:
        return int(self.trained.sum())

    def learn(self, allocator) -> None:
        """Feed the pending observations to the allocator (in order; the last one ends the step); then nothing
        is pending."""
        for i, observation in enumerate(self.pending):
            allocator.update(observation.plan, observation.rewards, observation.group_sizes,
                             ends_step=i == len(self.pending) - 1)
        self.pending = []
