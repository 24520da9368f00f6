"""What every allocator shares: the budget rule, the bounds, plan/update bookkeeping and checkpoints.

A rule is one subclass that says how it weighs a batch (`weigh`), how it turns weights into counts
(`solve`, the exact solver by default) and what it learns from outcomes (`learn`); its state goes to
checkpoints through `state_arrays` / `load_state_arrays`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._validation import as_float64_array, as_int64, as_real, as_uint64_keys
from ..allocation import allocate, estimator_min_rollouts
from ..embedders import prompt_keys
from .checkpoint import read_checkpoint, write_checkpoint
from .monitor import PredictionMonitor
from .plan import Plan, successes_per_group

__all__ = ["Allocator", "AllocatorBase", "Weighing"]

# Most values the per-prompt tables of one plan may hold (512 MiB of float64): rules that solve with
# value tables refuse larger batches with a ValueError rather than a numpy allocation error.
MAX_TABLE_VALUES = 1 << 26


@runtime_checkable
class Allocator(Protocol):
    """The interface every allocator implements; `make_allocator(name)` builds one by name."""

    name: str

    def plan(self, prompts=None, *, keys=None, embeddings=None) -> Plan: ...

    def update(self, plan: Plan, rewards, group_sizes=None, *, ends_step: bool = True) -> None: ...

    def budget_for(self, num_prompts: int) -> int: ...

    def stats(self) -> dict: ...

    def save(self, path) -> None: ...


class Weighing(dict):
    """What a rule's `weigh` returns: `weights` [Q], and optionally `p` [Q], `embeddings`, `prediction`."""


class AllocatorBase:
    """Budget rule, bounds, timing, monitoring and checkpoint plumbing shared by every allocator.

    Shared options, accepted by every allocator (each ignores those it does not use):
    budget_per_prompt / budget, estimator, min_rollouts, max_rollouts, reward_threshold,
    embedder, embedding_dim, embedding_cache_size.

    budget, min_rollouts and max_rollouts are integers (Python or numpy ints; not bools, floats or
    strings) checked as `allocate` checks them; budget_per_prompt and reward_threshold are finite
    real numbers. max_rollouts=None is refused: unlike `allocate`, where None means "up to the whole
    budget", an allocator keeps one upper bound for every batch (and per-prompt value tables as wide).
    """

    name = "base"

    def __init__(self, *, budget_per_prompt=8.0, budget=None, estimator="rloo", min_rollouts=4, max_rollouts=32,
                 reward_threshold=None, embedder=None, embedding_dim=None, embedding_cache_size=None):
        min_n = estimator_min_rollouts(estimator)
        min_rollouts = as_int64(min_rollouts, "min_rollouts")
        if max_rollouts is None:
            raise TypeError("max_rollouts must be an integer, got None: an allocator needs an upper bound "
                            "(only allocate() reads None as the whole budget)")
        max_rollouts = as_int64(max_rollouts, "max_rollouts")
        if min_rollouts < min_n:
            raise ValueError(f"min_rollouts = {min_rollouts} is below estimator '{estimator}''s domain n >= {min_n}")
        if max_rollouts < min_rollouts:
            raise ValueError(f"min_rollouts ({min_rollouts}) exceeds max_rollouts ({max_rollouts})")
        budget_per_prompt = as_real(budget_per_prompt, "budget_per_prompt")
        if budget is None and not (math.isfinite(budget_per_prompt) and budget_per_prompt > 0):
            raise ValueError(f"budget_per_prompt must be a positive number, got {budget_per_prompt}")
        if budget is not None:
            budget = as_int64(budget, "budget")
            if budget < 0:
                raise ValueError(f"budget must be >= 0, got {budget}")
        if reward_threshold is not None:
            reward_threshold = as_real(reward_threshold, "reward_threshold", finite=True)
        self.config = dict(budget_per_prompt=budget_per_prompt, budget=budget, estimator=estimator,
                           min_rollouts=min_rollouts, max_rollouts=max_rollouts, reward_threshold=reward_threshold)
        self.latency = {"plan": deque(maxlen=100), "update": deque(maxlen=100)}
        self.monitor = PredictionMonitor()
        # plan/update/save may run on different threads (the trainer learns beside the torch update).
        self._lock = threading.RLock()

    # -- the budget --------------------------------------------------------------------------------
    @property
    def bounds(self) -> dict:
        return dict(min_rollouts=self.config["min_rollouts"], max_rollouts=self.config["max_rollouts"])

    def budget_for(self, num_prompts: int) -> int:
        budget = self.config["budget"]
        if budget is None:
            budget = int(round(self.config["budget_per_prompt"] * num_prompts))
        lo, hi = num_prompts * self.config["min_rollouts"], num_prompts * self.config["max_rollouts"]
        if not lo <= budget <= hi:
            raise ValueError(f"budget {budget} is infeasible for {num_prompts} prompts with {self.config['min_rollouts']}"
                             f" <= n <= {self.config['max_rollouts']}: it must lie in [{lo}, {hi}]")
        return budget

    def table_range(self, num_prompts: int, budget: int) -> tuple[int, int]:
        """(lo, hi): the counts a per-prompt value table covers for this batch, max_rollouts capped at what
        one prompt can get once every other has min_rollouts (no count above it is ever chosen)."""
        lo = self.config["min_rollouts"]
        hi = min(self.config["max_rollouts"], budget - max(num_prompts - 1, 0) * lo)
        if num_prompts * (hi - lo + 1) > MAX_TABLE_VALUES:
            raise ValueError(f"budget {budget} is too big to plan for {num_prompts} prompts with rule {self.name!r}: "
                             f"its value tables would cover n = {lo}..{hi} for each prompt, more than "
                             f"{MAX_TABLE_VALUES} values in all; lower max_rollouts or the budget")
        return lo, hi

    # -- plan and update ---------------------------------------------------------------------------
    def plan(self, prompts=None, *, keys=None, embeddings=None) -> Plan:
        """Counts for one batch: prompt texts, or `keys=` (uint64 [Q]) and, for rules that embed, `embeddings=`."""
        started = time.perf_counter()
        keys, prompts = _resolve_keys(prompts, keys)
        with self._lock:
            weighing = self.weigh(keys, prompts, embeddings)
            counts = self.solve(weighing, self.budget_for(len(keys)))
        plan = Plan(keys=keys, counts=counts, weights=np.asarray(weighing["weights"], dtype=np.float64),
                    p=weighing.get("p"), embeddings=weighing.get("embeddings"), prediction=weighing.get("prediction"),
                    prompts=None if prompts is None else tuple(prompts))
        self.latency["plan"].append(time.perf_counter() - started)
        return plan

    def update(self, plan: Plan, rewards, group_sizes=None, *, ends_step: bool = True) -> None:
        """Learn from the rewards of a plan's rollouts (any plan this allocator made, in any order).

        rewards: flat [N], grouped prompt by prompt in the plan's order; group_sizes [Q] rollouts of
        each prompt (default: the planned counts; 0 for a prompt none of whose rollouts came back).
        Pass `plan.select(rows)` to learn from a subset of its prompts. ends_step=False for outcomes
        learned within a training step (a multi-round mode's earlier rounds): evidence ages by one step
        only at the update that ends a step.
        """
        started = time.perf_counter()
        if not isinstance(plan, Plan):
            raise TypeError(f"update takes the Plan that plan() returned, got {type(plan).__name__}")
        rewards = as_float64_array(rewards, "rewards", 1)
        sizes = plan.counts if group_sizes is None else group_sizes
        successes, trials = successes_per_group(rewards, sizes, self.config["reward_threshold"])
        if len(trials) != len(plan):
            raise ValueError(f"the plan has {len(plan)} prompts but group_sizes has {len(trials)} entries")
        _check_probabilities(plan.p)
        with self._lock:
            self.monitor.record(plan.p, successes, trials)
            self.learn_rollouts(plan, rewards, successes, trials)
            if ends_step:
                self.advance()
        self.latency["update"].append(time.perf_counter() - started)

    def stats(self) -> dict:
        with self._lock:
            return dict(name=self.name, config=dict(self.config), predictions=self.monitor.summary(),
                        latency_s={k: float(np.median(v)) if v else None for k, v in self.latency.items()},
                        **self.rule_stats())

    # -- what each rule provides -------------------------------------------------------------------
    def weigh(self, keys: np.ndarray, prompts, embeddings) -> Weighing:
        raise NotImplementedError

    def solve(self, weighing: Weighing, budget: int) -> np.ndarray:
        return allocate(weighing["weights"], budget, estimator=self.config["estimator"], **self.bounds)

    def learn(self, plan: Plan, successes: np.ndarray, trials: np.ndarray) -> None:
        """Default: nothing to learn."""

    def learn_rollouts(self, plan: Plan, rewards: np.ndarray, successes: np.ndarray, trials: np.ndarray) -> None:
        """What `update` calls: rewards float64 [N] (validated, grouped by `trials`) beside the group counts.

        The default learns from the counts alone (`learn`); a rule that needs each rollout's reward
        (GRESO asks whether a group's rewards were all equal) overrides this instead.
        """
        self.learn(plan, successes, trials)

    def advance(self) -> None:
        """A training step has ended: rules whose evidence ages (forgetting) age it here. Default: nothing."""

    def rule_stats(self) -> dict:
        return {}

    def unsaved_options(self) -> dict[str, Any]:
        """Options a checkpoint cannot hold (a custom embedder object): pass them to load_allocator again."""
        return {}

    def init_options(self) -> dict[str, Any]:
        """Constructor options beyond the shared ones, as saved in checkpoints (JSON values)."""
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], version: int) -> None:
        if arrays:
            raise ValueError(f"unexpected state entries {sorted(arrays)} for allocator {self.name!r}")

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Atomic: a crash while saving leaves the previous file at `path` intact."""
        with self._lock:
            write_checkpoint(path, self.name, self.config, self.init_options(), self.state_arrays(),
                             self.monitor.state_arrays())

    @classmethod
    def load(cls, path, **overrides):
        from .registry import load_allocator

        allocator = load_allocator(path, **overrides)
        if not isinstance(allocator, cls):
            raise ValueError(f"{path} holds a {type(allocator).__name__}, not a {cls.__name__}")
        return allocator

    def _restore(self, checkpoint) -> None:
        """Called by load_allocator with a checkpoint read by read_checkpoint."""
        self.monitor.load_state_arrays(checkpoint.monitor_arrays)
        self.load_state_arrays(checkpoint.arrays, checkpoint.version)


def _check_probabilities(p) -> None:
    """A plan's predicted success probabilities, when it has them, lie in [0, 1] (a hand-built Plan may not)."""
    if p is None:
        return
    p = as_float64_array(p, "plan.p", 1)
    outside = ~((p >= 0) & (p <= 1))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"plan.p must hold probabilities in [0, 1], got plan.p[{i}] = {p[i]}")


def _resolve_keys(prompts, keys) -> tuple[np.ndarray, list[str] | None]:
    if prompts is not None and (isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__len__")):
        raise TypeError(f"prompts must be a sequence of strings, got {type(prompts).__name__}")
    if keys is not None:
        keys = as_uint64_keys(keys)
        if prompts is not None and len(prompts) != len(keys):
            raise ValueError(f"{len(prompts)} prompts but {len(keys)} keys")
        return keys, None if prompts is None else list(prompts)
    if prompts is None:
        raise ValueError("plan needs prompt texts or keys=")
    prompts = list(prompts)
    return prompt_keys(prompts), prompts
