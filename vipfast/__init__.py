"""vipfast: fast, exact adaptive rollout allocation (VIP) for RLVR training."""

from ._core import __version__
from .allocation import ESTIMATORS, allocate, allocate_relaxed, allocation_objective, knapsack_costs
from .allocator import PRESETS, UniformAllocator, VIPAllocator, load_allocator, make_allocator
from .embedders import EmbeddingCache, HashingEmbedder, MiniLMEmbedder, make_embedder, prompt_keys
from .success_gp import GPPrediction, SuccessGP

__all__ = [
    "__version__",
    "ESTIMATORS",
    "allocate",
    "allocate_relaxed",
    "allocation_objective",
    "knapsack_costs",
    "VIPAllocator",
    "UniformAllocator",
    "PRESETS",
    "make_allocator",
    "load_allocator",
    "prompt_keys",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "EmbeddingCache",
    "make_embedder",
    "SuccessGP",
    "GPPrediction",
    "group_advantages",
    "group_ids_from_index",
    "token_advantages",
    "fused_token_advantages",
]

# The advantage functions need torch (the `torch` extra); load them on first use so that
# `import vipfast` works without it.
_ADVANTAGES = ("group_advantages", "group_ids_from_index", "token_advantages", "fused_token_advantages")


def __getattr__(name):
    if name in _ADVANTAGES:
        from . import advantages

        return getattr(advantages, name)
    raise AttributeError(f"module 'vipfast' has no attribute {name!r}")
