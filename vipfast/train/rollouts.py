"""A step's rollouts as the trainer keeps them, and what its metrics say about the batch a sampling mode made.

The sampling layer numbers a step's rollouts in the order they were generated, round after round; the
trainer's `generate` callback appends them here in the same order, so a StepBatch's `rollouts` (numbers)
index straight into this store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..sampling import StepBatch

__all__ = ["StepRollouts", "batch_rows", "batch_statistics"]


class StepRollouts:
    """pool_ids int64 [N], response_ids [N] token lists, rewards float64 [N], in generation order."""

    def __init__(self):
        self._pool_ids: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self.response_ids: list[list[int]] = []

    def add(self, pool_ids: np.ndarray, response_ids: list[list[int]], rewards: np.ndarray) -> None:
        if not len(pool_ids) == len(response_ids) == len(rewards):
            raise RuntimeError(f"{len(pool_ids)} prompts, {len(response_ids)} responses and {len(rewards)} rewards "
                               f"for one generation round")
        self._pool_ids.append(np.asarray(pool_ids, dtype=np.int64))
        self._rewards.append(np.asarray(rewards, dtype=np.float64))
        self.response_ids += response_ids

    @property
    def total(self) -> int:
        return len(self.response_ids)

    @property
    def pool_ids(self) -> np.ndarray:
        return np.concatenate(self._pool_ids) if self._pool_ids else np.empty(0, dtype=np.int64)

    @property
    def rewards(self) -> np.ndarray:
        return np.concatenate(self._rewards) if self._rewards else np.empty(0, dtype=np.float64)

    @property
    def tokens(self) -> np.ndarray:
        return np.array([len(r) for r in self.response_ids], dtype=np.int64)


def batch_rows(batch: StepBatch) -> np.ndarray:
    """int64 [N]: the batch prompt (row of batch.prompts) of each of the batch's rollouts, group by group."""
    return np.repeat(batch.group_prompt, batch.group_sizes)


def _group_starts(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def informative_rollouts(batch: StepBatch) -> np.ndarray:
    """bool [N]: batch rollouts in a group whose rewards are not all equal (only those get a non-zero advantage)."""
    sizes = batch.group_sizes
    if not len(sizes):
        return np.zeros(0, dtype=bool)
    starts = _group_starts(sizes)
    spread = np.maximum.reduceat(batch.rewards, starts) > np.minimum.reduceat(batch.rewards, starts)
    return np.repeat(spread, sizes)


def batch_statistics(batch: StepBatch, rollouts: StepRollouts, families: Sequence[str] | None) -> dict:
    """Reward, solve rate, wasted rollouts and the allocation of one step, plus its budget accounting.

    Wasted: rollouts generated that move no weight, i.e. not trained on or in a group of all-equal rewards (zero
    advantage). solve_rate: groups of the batch with a positive mean reward. families: the family of each pool
    prompt, or None.
    """
    generated = rollouts.total
    useful = int((informative_rollouts(batch) & batch.trained).sum())
    sizes = batch.group_sizes
    group_means = (np.add.reduceat(batch.rewards, _group_starts(sizes)) / sizes) if len(sizes) else np.empty(0)
    values, frequency = np.unique(sizes, return_counts=True)
    rewards = rollouts.rewards
    row = dict(reward_mean=float(rewards.mean()) if generated else None,
               solve_rate=float((group_means > 0).mean()) if len(sizes) else None,
               wasted_rollouts=generated - useful, wasted_fraction=(generated - useful) / generated if generated else 0.0,
               allocation_histogram={int(v): int(f) for v, f in zip(values, frequency)},
               mean_response_tokens=float(rollouts.tokens.mean()) if generated else None,
               generated_rollouts=batch.generated_rollouts, generated_tokens=batch.generated_tokens,
               trained_rollouts=batch.trained_rollouts, rounds=batch.rounds, prompts_drawn=batch.prompts_drawn,
               complete=batch.complete)
    if families is not None:
        row["rollouts_by_family"] = dict(Counter(families[i] for i in rollouts.pool_ids.tolist()))
    return row
