"""Allocators: plan each batch's rollouts, learn from the rewards that come back.

    alloc = vipfast.make_allocator("vipfast", budget_per_prompt=8.0, estimator="rloo", min_rollouts=4, max_rollouts=32)
    plan = alloc.plan(prompts)              # plan.counts: int64 [Q], sums to the budget
    rewards = ...                           # flat [sum(plan.counts)], grouped prompt by prompt
    alloc.update(plan, rewards)             # learns from the outcomes
    alloc.save("allocator.npz")             # atomic; vipfast.load_allocator(path) resumes exactly

Each rule is one module that registers its name(s); `allocator_names()` lists them.
"""

from . import beta, coba, greso, knapsack, uniform, vip, vip_screen  # noqa: F401  (each registers its rules)
from .base import Allocator, AllocatorBase
from .beta import BetaAllocator
from .coba import CobaAllocator
from .greso import GresoAllocator
from .knapsack import KnapsackAllocator
from .plan import Plan, successes_per_group
from .registry import allocator_names, describe_allocators, load_allocator, make_allocator
from .uniform import UniformAllocator
from .vip import PRESETS, VIPAllocator
from .vip_screen import VIPScreenAllocator

__all__ = [
    "Allocator",
    "AllocatorBase",
    "Plan",
    "UniformAllocator",
    "VIPAllocator",
    "VIPScreenAllocator",
    "KnapsackAllocator",
    "BetaAllocator",
    "CobaAllocator",
    "GresoAllocator",
    "PRESETS",
    "allocator_names",
    "describe_allocators",
    "make_allocator",
    "load_allocator",
    "successes_per_group",
]
