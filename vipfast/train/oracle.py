"""The "oracle" allocator of `vipfast train`: the exact solver fed the current policy's own success rates.

Before each plan it samples `samples` rollouts of every prompt from the policy being trained, scores them,
and weighs prompt q by p̂_q(1 − p̂_q), p̂_q its fraction of successes: what VIP's predictor tries to
estimate, measured instead. These rollouts are outside the step's budget (they are not counted as rollouts
and never trained on); they cost `samples` / budget_per_prompt times the step's own generation. With 64
samples p̂ has a standard error of at most 0.0625, so the weights are near the truth but not exact: the
ceiling an allocator of the same budget could reach with a perfect predictor, up to that noise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..allocators import AllocatorBase
from ..allocators.base import Weighing
from ..allocators.checkpoint import read_checkpoint

__all__ = ["PolicyOracle"]


class PolicyOracle(AllocatorBase):
    name = "oracle"

    def __init__(self, measure: Callable[[np.ndarray, list | None], np.ndarray] | None = None, **options):
        """measure(keys uint64 [Q], texts) -> success rates float64 [Q] of the current policy."""
        super().__init__(**options)
        self.measure = measure

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        if self.measure is None:
            raise RuntimeError("the oracle allocator has no policy to measure (PolicyOracle(measure=...))")
        p = np.asarray(self.measure(keys, prompts), dtype=np.float64)
        return Weighing(p=p, weights=p * (1 - p))

    @classmethod
    def restore(cls, path, measure, **options) -> PolicyOracle:
        """An oracle with the prediction record saved at `path` (it has no other state)."""
        checkpoint = read_checkpoint(path)
        if checkpoint.allocator != cls.name:
            raise ValueError(f"{path} holds a {checkpoint.allocator!r} allocator, not the oracle")
        oracle = cls(measure, **options)
        oracle._restore(checkpoint)
        return oracle
