"""Where a training step's prompts come from: the task's training pool, in one of two orders.

- "step" (`StepOrderSource`): each step draws its prompts at random, without replacement, from the step's
  own generator `default_rng([seed, step])`; steps are independent batches. Draws within a step (a
  multi-round mode's refills, a screen's replacements) continue the same generator among the prompts the
  step has not drawn yet. Nothing to checkpoint: the step number fixes it.
- "epoch" (`EpochOrderSource`): a permutation of the pool per epoch from (seed, epoch), read in order and
  continued into the next epoch, so every prompt is seen once per epoch. Its position is checkpointed.

Both hand out `vipfast.sampling.Prompts` whose `ids` are pool indices.
"""

from __future__ import annotations

import numpy as np

from ..embedders import prompt_keys
from ..sampling import Prompts

__all__ = ["pool_prompts", "StepOrderSource", "EpochOrderSource", "make_source"]

# Tags the epoch permutations' generator, so it never coincides with a step's ([seed, step]) or an
# evaluation's ([seed, step, 1]).
EPOCH_STREAM = 2


def pool_prompts(texts) -> Prompts:
    texts = tuple(texts)
    return Prompts(ids=np.arange(len(texts), dtype=np.int64), keys=prompt_keys(texts), texts=texts)


class StepOrderSource:
    def __init__(self, pool: Prompts):
        self.pool = pool
        self._rng = None
        self._drawn: list[np.ndarray] = []

    def begin_step(self, rng: np.random.Generator) -> None:
        self._rng, self._drawn = rng, []

    def draw(self, count: int) -> Prompts:
        if self._rng is None:
            raise RuntimeError("StepOrderSource.draw before begin_step")
        size = len(self.pool)
        if not self._drawn:
            rows = self._rng.choice(size, size=min(count, size), replace=False)
        else:
            remaining = np.setdiff1d(np.arange(size), np.concatenate(self._drawn))
            rows = remaining[self._rng.choice(len(remaining), size=min(count, len(remaining)), replace=False)]
        self._drawn.append(rows)
        return self.pool.take(rows)

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        _check_state(state, ())


class EpochOrderSource:
    def __init__(self, pool: Prompts, seed: int):
        self.pool, self.seed = pool, seed
        self.epoch, self.position = 0, 0
        self._permutation = None

    def begin_step(self, rng: np.random.Generator) -> None:
        """The order does not depend on the step."""

    def _order(self) -> np.ndarray:
        if self._permutation is None or self._permutation[0] != self.epoch:
            order = np.random.default_rng([self.seed, self.epoch, EPOCH_STREAM]).permutation(len(self.pool))
            self._permutation = (self.epoch, order)
        return self._permutation[1]

    def draw(self, count: int) -> Prompts:
        parts = []
        while count > 0:
            order = self._order()
            take = order[self.position:self.position + count]
            parts.append(take)
            count -= len(take)
            self.position += len(take)
            if self.position == len(order):
                self.epoch, self.position = self.epoch + 1, 0
        rows = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return self.pool.take(rows)

    def state(self) -> dict:
        return dict(epoch=self.epoch, position=self.position)

    def load_state(self, state: dict) -> None:
        _check_state(state, ("epoch", "position"))
        if not 0 <= state["position"] < len(self.pool) or state["epoch"] < 0:
            raise ValueError(f"prompt source state {state} does not fit a pool of {len(self.pool)} prompts")
        self.epoch, self.position = state["epoch"], state["position"]


def _check_state(state, keys: tuple[str, ...]) -> None:
    if not isinstance(state, dict) or sorted(state) != sorted(keys) or not all(type(state[k]) is int for k in keys):
        raise ValueError(f"prompt source state must hold the integers {list(keys)}, got {state!r}")


def make_source(order: str, pool: Prompts, seed: int):
    return StepOrderSource(pool) if order == "step" else EpochOrderSource(pool, seed)
