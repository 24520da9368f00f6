"""vipfast: fast, exact adaptive rollout allocation (VIP) for RLVR training."""

from ._core import __version__
from .allocation import ESTIMATORS, allocate, allocate_relaxed, allocation_objective, knapsack_costs

__all__ = [
    "__version__",
    "ESTIMATORS",
    "allocate",
    "allocate_relaxed",
    "allocation_objective",
    "knapsack_costs",
]
