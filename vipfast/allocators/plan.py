"""What an allocator decided for one batch (`Plan`) and the rewards that come back for it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._validation import as_float64_array

__all__ = ["Plan", "successes_per_group"]


@dataclass(frozen=True, eq=False)
class Plan:
    """One batch's allocation: `allocator.plan(...)` returns it, `allocator.update(plan, rewards)` takes it back.

    keys        uint64 [Q]   the prompts' stable keys (vipfast.prompt_keys of the texts, or the caller's)
    counts      int64 [Q]    rollouts per prompt; sums to the budget (0 for a prompt a rule skips)
    weights     float64 [Q]  what the solver weighed (E[p(1-p)] for the variance rules)
    p           float64 [Q]  predicted success probability, or None for rules that predict none
    embeddings  float32 [Q, d] or None: the embeddings the prediction used
    prediction  the predictor's own summary of this batch (e.g. a GPPrediction), handed back to update
    prompts     the prompt texts, when plan() was given texts

    `np.asarray(plan)` is `plan.counts`, so code that only wants counts can keep treating it as an array.
    """

    keys: np.ndarray
    counts: np.ndarray
    weights: np.ndarray
    p: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    prediction: Any = None
    prompts: tuple[str, ...] | None = None

    def __post_init__(self):
        q = len(self.keys)
        for name in ("counts", "weights", "p", "embeddings"):
            value = getattr(self, name)
            if value is not None and len(value) != q:
                raise ValueError(f"Plan.{name} has {len(value)} rows for {q} keys")
        if self.prompts is not None and len(self.prompts) != q:
            raise ValueError(f"Plan.prompts has {len(self.prompts)} entries for {q} keys")

    def __len__(self) -> int:
        return len(self.keys)

    def __array__(self, dtype=None, copy=None):
        return self.counts if dtype is None else self.counts.astype(dtype)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def select(self, rows) -> Plan:
        """The plan of a subset of its prompts (a boolean mask [Q] or indices), e.g. those a filter kept."""
        index = np.asarray(rows)
        if index.size == 0 and index.ndim == 1:
            index = index.astype(np.intp)  # np.asarray([]) is float64
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ValueError(f"a boolean selection must have shape ({len(self)},), got {index.shape}")
            index = np.flatnonzero(index)
        elif index.dtype.kind not in "iu" or index.ndim != 1:
            raise TypeError(f"rows must be a boolean mask or 1-D integer indices, got dtype {index.dtype}")
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise ValueError(f"row indices must lie in [0, {len(self)}), got {index.min()}..{index.max()}")
        take = lambda array: None if array is None else array[index]  # noqa: E731
        return replace(self, keys=self.keys[index], counts=self.counts[index], weights=self.weights[index],
                       p=take(self.p), embeddings=take(self.embeddings),
                       prediction=_rows_of(self.prediction, index, len(self)),
                       prompts=None if self.prompts is None else tuple(self.prompts[i] for i in index.tolist()))


def _rows_of(value, index, rows):
    """A prediction's per-row arrays at `index`, through nested named tuples. A prediction that carries more than
    its named fields (a GP's feature basis, tied to all its rows) becomes None: its predictor predicts the
    selected rows again when it learns them."""
    if isinstance(value, np.ndarray) and value.ndim and len(value) == rows:
        return value[index]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        if getattr(value, "__dict__", None):
            return None
        return type(value)(*(_rows_of(field, index, rows) for field in value))
    return value


def successes_per_group(rewards, group_sizes, threshold=None) -> tuple[np.ndarray, np.ndarray]:
    """(successes float64 [Q], trials int64 [Q]) from rewards [N] (1-D, grouped) and group sizes [Q] (each >= 0).

    Rewards are binary or fractional in [0, 1] (a rollout counts as that fraction of a success), or
    anything finite with `threshold=t` (a rollout succeeds when its reward >= t).
    """
    sizes = np.asarray(group_sizes)
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu":
        raise ValueError(f"group_sizes must be a 1-D integer array, got dtype {sizes.dtype} shape {sizes.shape}")
    rewards = as_float64_array(rewards, "rewards", 1)
    if sizes.size and sizes.min() < 0:
        raise ValueError(f"group_sizes must be >= 0, got {int(sizes.min())} at index {int(np.argmin(sizes))}")
    if sizes.size and sizes.max() > len(rewards):
        raise ValueError(f"group_sizes[{int(np.argmax(sizes))}] = {int(sizes.max())} exceeds the {len(rewards)} rewards")
    if int(sizes.astype(np.int64).sum()) != len(rewards):
        raise ValueError(f"group_sizes add up to {int(sizes.astype(np.int64).sum())} but there are {len(rewards)} rewards")
    if not np.all(np.isfinite(rewards)):
        bad = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise ValueError(f"rewards[{bad}] is {rewards[bad]}; rewards must be finite")
    if threshold is not None:
        rewards = (rewards >= threshold).astype(np.float64)
    elif rewards.size and (rewards.min() < 0 or rewards.max() > 1):
        bad = int(np.flatnonzero((rewards < 0) | (rewards > 1))[0])
        raise ValueError(f"rewards[{bad}] = {rewards[bad]} is outside [0, 1]; pass reward_threshold= for other scales")
    sizes = sizes.astype(np.int64)
    group = np.repeat(np.arange(len(sizes)), sizes)
    successes = np.bincount(group, weights=rewards, minlength=len(sizes)).astype(np.float64)
    return successes, sizes
