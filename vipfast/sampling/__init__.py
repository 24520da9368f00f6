"""Sampling modes: how one training step turns prompts into a ragged batch of rewarded rollouts.

    sampler = vipfast.sampling.make_sampler("single")          # or a multi-round mode
    batch = sampler.sample(allocator, source, generate, num_prompts=256)
    batch.learn(allocator)                                      # the allocator learns what it has not yet

`source.draw(k)` gives prompts, `generate(prompts, counts)` returns their rewards; the StepBatch says which
rollouts train, how they group for advantages, and what the step generated (rollouts, tokens, rounds).
"""

from .base import Sampler, generate_round, make_sampler, register_sampler, sampler_names
from .batch import Generate, Observation, Outcomes, PromptSource, Prompts, StepBatch

__all__ = [
    "Sampler",
    "StepBatch",
    "Prompts",
    "Outcomes",
    "Observation",
    "PromptSource",
    "Generate",
    "make_sampler",
    "register_sampler",
    "sampler_names",
    "generate_round",
]
