"""What the multi-round modes share: the step's rollouts numbered across rounds, option checks, the batch they build."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from .._validation import as_float64_array, as_int64_array
from .base import _check_outcomes
from .batch import Generate, Observation, Prompts, StepBatch

__all__ = ["RolloutLedger", "check_num_prompts", "check_choice", "check_count", "check_number", "check_groups"]


class RolloutLedger:
    """Every rollout a step generates, numbered in generation order (round after round), with its reward and tokens."""

    def __init__(self):
        self._rewards: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self.total = 0
        self.rounds = 0

    def generate(self, generate: Generate, prompts: Prompts, counts) -> tuple[np.ndarray, np.ndarray]:
        """Generate counts[i] rollouts for prompts[i] in one call; prompts with count 0 are not sent.

        Returns (rollout numbers, rewards), both [sum(counts)], grouped prompt by prompt in the given order.
        """
        counts = np.asarray(counts, dtype=np.int64)
        requested = int(counts.sum())
        if requested == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        rows = np.flatnonzero(counts > 0)
        sent = prompts if len(rows) == len(prompts) else prompts.take(rows)
        outcomes = generate(sent, counts[rows])
        _check_outcomes(outcomes, requested)
        rewards = np.asarray(outcomes.rewards, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(rewards)):
            bad = int(np.flatnonzero(~np.isfinite(rewards))[0])
            raise ValueError(f"generate returned reward {rewards[bad]} for rollout {bad} of the round; "
                             "rewards must be finite")
        numbers = np.arange(self.total, self.total + requested, dtype=np.int64)
        self._rewards.append(rewards)
        self._tokens.append(np.asarray(outcomes.tokens, dtype=np.int64).reshape(-1))
        self.total += requested
        self.rounds += 1
        return numbers, rewards

    @property
    def rewards(self) -> np.ndarray:
        """float64 [total]: the reward of each rollout number."""
        return np.concatenate(self._rewards) if self._rewards else np.empty(0, dtype=np.float64)

    def empty_batch(self, prompts: Prompts, prompts_drawn: int) -> StepBatch:
        """The StepBatch of a step whose source gave no prompts: nothing generated, incomplete."""
        return self.batch(prompts, [], [], prompts_drawn=prompts_drawn, complete=False, pending=[])

    def batch(self, prompts: Prompts, group_prompt, groups: list[np.ndarray], *, prompts_drawn: int, complete: bool,
              pending: list[Observation], trained: np.ndarray | None = None) -> StepBatch:
        """The StepBatch of advantage groups `groups` (rollout numbers each) of prompts[group_prompt[g]].

        trained: bool [total] over rollout numbers (default: every grouped rollout trains).
        """
        rollouts = np.concatenate(groups).astype(np.int64) if groups else np.empty(0, dtype=np.int64)
        trained_rows = np.ones(len(rollouts), dtype=bool) if trained is None else trained[rollouts]
        return StepBatch(prompts=prompts, group_prompt=np.asarray(group_prompt, dtype=np.int64).reshape(-1),
                         group_sizes=np.array([len(g) for g in groups], dtype=np.int64), rollouts=rollouts,
                         rewards=self.rewards[rollouts], trained=trained_rows, generated_rollouts=self.total,
                         generated_tokens=int(sum(int(t.sum()) for t in self._tokens)), rounds=self.rounds,
                         prompts_drawn=int(prompts_drawn), complete=bool(complete), pending=pending)


def check_num_prompts(num_prompts) -> int:
    if isinstance(num_prompts, bool) or not isinstance(num_prompts, (int, np.integer)) or num_prompts < 1:
        raise ValueError(f"num_prompts must be an integer >= 1, got {num_prompts!r}")
    return int(num_prompts)


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, *, open_low: bool = False) -> float:
    """A finite real option in [low, high] ((low, high] with open_low); bools are refused."""
    real = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not (real and (low < value if open_low else low <= value) and value <= high):
        lower = "" if low == -math.inf else f" {'>' if open_low else '>='} {low:g}"
        upper = "" if high == math.inf else f"{' and' if lower else ''} <= {high:g}"
        raise ValueError(f"{name} must be a finite number{lower}{upper}, got {value!r}")
    return float(value)


def check_groups(rewards, group_sizes) -> tuple[np.ndarray, np.ndarray]:
    """(rewards float64 [N], sizes int64 [G]) of ragged groups: finite rewards, sizes >= 0 adding up to N."""
    rewards = as_float64_array(rewards, "rewards", 1)
    sizes = as_int64_array(group_sizes, "group_sizes")
    if (sizes.size and sizes.min() < 0) or int(sizes.sum()) != len(rewards):
        raise ValueError(f"group_sizes must be >= 0 and add up to the {len(rewards)} rewards, got {sizes}")
    if not np.all(np.isfinite(rewards)):
        raise ValueError(f"rewards[{int(np.flatnonzero(~np.isfinite(rewards))[0])}] is not finite")
    return rewards, sizes


def check_count(name: str, value, minimum: int) -> int:
    """An integer option >= minimum (bools and floats such as 4.0 are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
