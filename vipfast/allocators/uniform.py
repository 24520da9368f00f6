"""The same number of rollouts for every prompt: the baseline every rule is measured against."""

from __future__ import annotations

import numpy as np

from .base import AllocatorBase, Weighing
from .registry import register

__all__ = ["UniformAllocator"]


class UniformAllocator(AllocatorBase):
    """Every prompt gets ⌊B/Q⌋ rollouts, the remainder one each to the lowest indices."""

    name = "uniform"

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        return Weighing(weights=np.ones(len(keys)))


register("uniform", UniformAllocator, "the same rollouts for every prompt")
