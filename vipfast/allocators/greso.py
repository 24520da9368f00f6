"""GRESO (arXiv 2506.02177, "Act Only When It Pays"): skip prompts before rollout that keep giving groups
whose rewards are all equal, and split the budget uniformly among the prompts kept.

A group whose rewards are all equal has zero variance, so every advantage in it is 0 and it teaches
nothing. GRESO counts, per prompt, the consecutive latest visits that were zero-variance: an *easy*
streak (all equal with success fraction ≥ ½, i.e. all correct for binary rewards) or a *hard* streak
(all equal below ½: all wrong). Before rollout a prompt with streak count c is kept with probability

    max(p^c, 0.01)        p = p_easy for an easy streak, p_hard for a hard one (kept surely when c = 0)

and skipped otherwise (`screen`); the sampling layer draws replacements, so each step still plans its
full number of prompts and rollouts. After each update that revisits a prompt, p_easy and p_hard move
by 0.01 toward the targets: a share of easy zero-variance prompts at or above t/3 (hard: 2t/3,
t = `target_zero_variance` = 0.25) lowers p (skip more), a share below raises it, within [0.05, 0.95].
Start p_easy = p_hard = 0.5. These are the defaults of the authors' published implementation.
"""

from __future__ import annotations

import json

import numpy as np

from .._validation import as_int64, as_uint64_keys
from .base import AllocatorBase, Weighing
from .prompt_table import PromptTable
from .registry import register

__all__ = ["GresoAllocator", "greso_keep_probability", "greso_adapt"]


def greso_keep_probability(easy_streak, hard_streak, p_easy: float, p_hard: float, floor: float = 0.01) -> np.ndarray:
    """Probability that screening keeps each prompt: max(p^count, floor) for its streak, 1 without one."""
    easy, hard = np.asarray(easy_streak, dtype=np.float64), np.asarray(hard_streak, dtype=np.float64)
    keep = np.ones(np.broadcast(easy, hard).shape)
    keep = np.where(hard > 0, np.maximum(p_hard**hard, floor), keep)
    return np.where(easy > 0, np.maximum(p_easy**easy, floor), keep)


def greso_adapt(p: float, zero_variance_share: float, target: float, step: float, low: float, high: float) -> float:
    """One adaptation step: at or above the target share skip more (lower p), below it skip less."""
    return max(p - step, low) if zero_variance_share >= target else min(p + step, high)


class GresoAllocator(AllocatorBase):
    """Pre-rollout screening of prompts with zero-variance streaks (`screen`), a uniform split of the budget.

    p_easy, p_hard: starting keep bases (0.5); target_zero_variance: the share of zero-variance prompts
    aimed at, split 1/3 easy and 2/3 hard (0.25); step: the adaptation step (0.01); min_p, max_p: the
    range of p_easy and p_hard (0.05, 0.95); min_keep: the floor of the keep probability (0.01); seed: of
    the screening generator (its state is checkpointed); capacity: prompts remembered (LRU).
    """

    name = "greso"

    def __init__(self, *, p_easy: float = 0.5, p_hard: float = 0.5, target_zero_variance: float = 0.25,
                 step: float = 0.01, min_p: float = 0.05, max_p: float = 0.95, min_keep: float = 0.01,
                 seed: int | None = 0, capacity: int = 1 << 21, **options):
        super().__init__(**options)
        _check_options(p_easy, p_hard, target_zero_variance, step, min_p, max_p, min_keep)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.initial = dict(p_easy=float(p_easy), p_hard=float(p_hard))
        self.p_easy, self.p_hard = float(p_easy), float(p_hard)
        self.target_zero_variance, self.step = float(target_zero_variance), float(step)
        self.p_range, self.min_keep = (float(min_p), float(max_p)), float(min_keep)
        self.seed, self.capacity = None if seed is None else int(seed), as_int64(capacity, "capacity")
        self.rng = np.random.default_rng(self.seed)
        self.streaks = PromptTable({"easy": 0.0, "hard": 0.0}, capacity=self.capacity,
                                   bounds={"easy": (0.0, np.inf), "hard": (0.0, np.inf)}, whole=("easy", "hard"),
                                   name="streaks")
        self.last_skip_rate: float | None = None

    def init_options(self) -> dict:
        return dict(**self.initial, target_zero_variance=self.target_zero_variance, step=self.step,
                    min_p=self.p_range[0], max_p=self.p_range[1], min_keep=self.min_keep, seed=self.seed,
                    capacity=self.capacity)

    @property
    def targets(self) -> tuple[float, float]:
        """(easy, hard) shares of zero-variance prompts aimed at: hard prompts get more room to change."""
        return self.target_zero_variance / 3.0, self.target_zero_variance * 2.0 / 3.0

    # -- screening ---------------------------------------------------------------------------------
    def keep_probability(self, keys) -> np.ndarray:
        rows = self.streaks.rows(keys)
        return greso_keep_probability(self.streaks.read("easy", rows=rows), self.streaks.read("hard", rows=rows),
                                      self.p_easy, self.p_hard, self.min_keep)

    def screen(self, keys) -> np.ndarray:
        """bool [k]: True for prompts to roll out. Prompt i is kept when the generator's next uniform is
        below its keep probability (one draw per prompt, in order)."""
        keys = as_uint64_keys(keys)
        with self._lock:
            keep = self.rng.random(len(keys)) < self.keep_probability(keys)
            if len(keys):
                self.last_skip_rate = float(1.0 - keep.mean())
        return keep

    # -- plan and learn ----------------------------------------------------------------------------
    def weigh(self, keys, prompts, embeddings) -> Weighing:
        return Weighing(weights=np.ones(len(keys)))

    def learn_rollouts(self, plan, rewards, successes, trials) -> None:
        visited = trials > 0
        if not visited.any():
            return
        easy, hard = _zero_variance_groups(rewards, successes, trials)
        keys, inverse = np.unique(plan.keys[visited], return_inverse=True)
        groups = np.bincount(inverse, minlength=len(keys))
        # a prompt's visit is zero-variance when all its groups of this update are, on the same side
        easy = np.bincount(inverse, weights=easy[visited], minlength=len(keys)) == groups
        hard = np.bincount(inverse, weights=hard[visited], minlength=len(keys)) == groups
        if (self.streaks.rows(keys) >= 0).any():  # adapting starts once prompts come back
            target_easy, target_hard = self.targets
            self.p_easy = greso_adapt(self.p_easy, easy.mean(), target_easy, self.step, *self.p_range)
            self.p_hard = greso_adapt(self.p_hard, hard.mean(), target_hard, self.step, *self.p_range)
        rows = self.streaks.insert(keys)
        self.streaks.write("easy", rows, np.where(easy, self.streaks.column("easy")[rows] + 1, 0))
        self.streaks.write("hard", rows, np.where(hard, self.streaks.column("hard")[rows] + 1, 0))

    def rule_stats(self) -> dict:
        return dict(p_easy=self.p_easy, p_hard=self.p_hard, skip_rate=self.last_skip_rate,
                    prompts_held=len(self.streaks), memory_bytes=self.streaks.memory_bytes)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        skip_rate = np.nan if self.last_skip_rate is None else self.last_skip_rate
        return {"p": np.array([self.p_easy, self.p_hard]), "skip_rate": np.array(skip_rate),
                "rng": np.array(json.dumps(self.rng.bit_generator.state)),
                **{f"streaks/{k}": v for k, v in self.streaks.state_arrays().items()}}

    def load_state_arrays(self, arrays, version) -> None:
        p = np.asarray(arrays["p"], dtype=np.float64)
        low, high = self.p_range
        if p.shape != (2,) or not np.all((p >= low) & (p <= high)):
            raise ValueError(f"p must hold (p_easy, p_hard) in [{low}, {high}], got {p}")
        self.p_easy, self.p_hard = float(p[0]), float(p[1])
        skip_rate = float(arrays["skip_rate"])
        self.last_skip_rate = None if np.isnan(skip_rate) else skip_rate
        self.rng.bit_generator.state = json.loads(str(arrays["rng"]))
        self.streaks.load_state_arrays({k.removeprefix("streaks/"): v for k, v in arrays.items()
                                        if k.startswith("streaks/")})


def _zero_variance_groups(rewards, successes, trials) -> tuple[np.ndarray, np.ndarray]:
    """(easy, hard) bool [Q]: groups whose rewards are all equal, with success fraction >= ½ or below."""
    filled = trials > 0
    starts = np.concatenate(([0], np.cumsum(trials)[:-1]))[filled]
    equal = np.zeros(len(trials), dtype=bool)
    if filled.any():
        equal[filled] = np.maximum.reduceat(rewards, starts) == np.minimum.reduceat(rewards, starts)
    high = np.divide(successes, trials, out=np.zeros(len(trials)), where=filled) >= 0.5
    return equal & high, equal & ~high


def _check_options(p_easy, p_hard, target, step, min_p, max_p, min_keep) -> None:
    if not 0 < min_p <= max_p <= 1:
        raise ValueError(f"min_p and max_p must satisfy 0 < min_p <= max_p <= 1, got {min_p}, {max_p}")
    for name, value in (("p_easy", p_easy), ("p_hard", p_hard)):
        if not min_p <= value <= max_p:
            raise ValueError(f"{name} must lie in [min_p, max_p] = [{min_p}, {max_p}], got {value}")
    if not 0 < target < 1:
        raise ValueError(f"target_zero_variance must lie in (0, 1), got {target}")
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number, got {step}")
    if not 0 <= min_keep <= 1:
        raise ValueError(f"min_keep must lie in [0, 1], got {min_keep}")


register("greso", GresoAllocator, "GRESO: skip prompts with zero-variance streaks before rollout, uniform split")
