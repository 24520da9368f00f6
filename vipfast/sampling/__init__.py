"""Sampling modes: how one training step turns prompts into a ragged batch of rewarded rollouts.

    sampler = vipfast.sampling.make_sampler("single")          # or a multi-round mode
    batch = sampler.sample(allocator, source, generate, num_prompts=256)
    batch.learn(allocator)                                      # the allocator learns what it has not yet

`source.draw(k)` gives prompts, `generate(prompts, counts)` returns their rewards; the StepBatch says which
rollouts train, how they group for advantages, and what the step generated (rollouts, tokens, rounds).

Modes: "single" (one round), "dynamic" (DAPO), "reinforce_ada", "pods", "vip_rounds"; docs/sampling.md.
"""

from .base import Sampler, generate_round, make_sampler, plan_for, register_sampler, sampler_names
from .batch import Generate, Observation, Outcomes, PromptSource, Prompts, StepBatch
from .dynamic import DynamicSampler, informative_groups
from .pods import PODSSampler, max_variance_selection
from .reinforce_ada import ReinforceAdaSampler, balanced_downsample, exits
from .vip_rounds import VIPRoundsSampler, extra_rollouts

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
    "plan_for",
    "DynamicSampler",
    "ReinforceAdaSampler",
    "PODSSampler",
    "VIPRoundsSampler",
    "informative_groups",
    "max_variance_selection",
    "balanced_downsample",
    "exits",
    "extra_rollouts",
]
