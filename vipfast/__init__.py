"""vipfast: fast, exact adaptive rollout allocation (VIP) for RLVR training."""

try:
    from ._core import __version__
except ImportError as _error:  # the source checkout itself, before `pip install .`
    raise ImportError(f"vipfast's native core is not built ({_error}): run `pip install .` and import the installed "
                      "package, not the source tree") from None
from .allocation import ESTIMATORS, allocate, allocate_relaxed, allocation_objective, knapsack_costs
from .allocators import (
    PRESETS,
    Allocator,
    BetaAllocator,
    KnapsackAllocator,
    Plan,
    UniformAllocator,
    VIPAllocator,
    allocator_names,
    load_allocator,
    make_allocator,
)
from .embedders import EmbeddingCache, HashingEmbedder, MiniLMEmbedder, make_embedder, prompt_keys
from .success_gp import GPPrediction, SuccessGP
from .success_model import SuccessModel, SuccessPrediction

__all__ = [
    "__version__",
    "ESTIMATORS",
    "allocate",
    "allocate_relaxed",
    "allocation_objective",
    "knapsack_costs",
    "Allocator",
    "Plan",
    "VIPAllocator",
    "UniformAllocator",
    "KnapsackAllocator",
    "BetaAllocator",
    "PRESETS",
    "allocator_names",
    "make_allocator",
    "load_allocator",
    "prompt_keys",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "EmbeddingCache",
    "make_embedder",
    "SuccessGP",
    "GPPrediction",
    "SuccessModel",
    "SuccessPrediction",
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
