"""Allocators that read the simulated policy: the ceilings any predictor is measured against."""

from __future__ import annotations

import numpy as np

from ..allocators import AllocatorBase
from ..allocators.base import Weighing
from .population import Population

__all__ = ["OracleAllocator", "ClusterOracleAllocator"]


class OracleAllocator(AllocatorBase):
    """The exact solver fed the simulator's true p: the headroom any predictor could reach."""

    name = "oracle"

    def __init__(self, **options):
        super().__init__(**options)
        self.population: Population | None = None

    def bind(self, population: Population) -> None:
        self.population = population

    def _prompts(self, keys) -> np.ndarray:
        if self.population is None:
            raise ValueError("the oracle allocators only run inside vipfast.experiments.simulate")
        index = np.searchsorted(self.population.keys, keys)
        if not np.array_equal(self.population.keys[np.minimum(index, len(self.population.keys) - 1)], keys):
            raise ValueError("keys that are not prompts of the simulated pool")
        return index

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        p = self.population_p(self._prompts(keys))
        return Weighing(p=p, weights=p * (1 - p))

    def population_p(self, index) -> np.ndarray:
        return self.population.success_probability(index)


class ClusterOracleAllocator(OracleAllocator):
    """The solver fed each prompt's cluster skill a_c exactly and the part of its offset b_i that its embedding
    shows, but not the rest: p = E[σ(a_c + b)], weight E[p(1 − p)] over the hidden part. The headroom of a
    predictor that learns from embeddings alone (no prompt's own past rollouts)."""

    name = "cluster-oracle"

    def weigh(self, keys, prompts, embeddings) -> Weighing:
        index = self._prompts(keys)
        s = self.population.scenario
        hidden_sd = s.prompt_spread * np.sqrt(1 - s.visible_offset)
        visible = self.population.offset[index] - self.population.hidden_offset[index]
        nodes, weights = np.polynomial.hermite_e.hermegauss(32)  # probabilists': E over N(0, 1)
        logits = (self.population.skill[self.population.cluster[index]] + visible)[:, None] + hidden_sd * nodes[None, :]
        p = 1.0 / (1.0 + np.exp(-logits))
        weights = weights / weights.sum()
        return Weighing(p=p @ weights, weights=(p * (1 - p)) @ weights)
