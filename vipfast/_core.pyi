"""
vipfast native core: exact rollout allocation and the success-probability GP
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
__all__: list[str] = ['allocate', 'allocate_relaxed', 'allocation_objective']
def allocate(weights: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None, budget: typing.SupportsInt | typing.SupportsIndex, min_rollouts: typing.SupportsInt | typing.SupportsIndex, max_rollouts: typing.SupportsInt | typing.SupportsIndex, estimator: str = 'rloo', curve: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None) -> numpy.typing.NDArray[numpy.int64]:
    """
    Exact integer minimiser of sum_q w_q phi(n_q) under the budget and bounds (int64[Q]).
    """
def allocate_relaxed(weights: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None, budget: typing.SupportsInt | typing.SupportsIndex, min_rollouts: typing.SupportsInt | typing.SupportsIndex, max_rollouts: typing.SupportsInt | typing.SupportsIndex, estimator: str = 'rloo', curve: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None) -> numpy.typing.NDArray[numpy.float64]:
    """
    Optimum of the continuous relaxation (float64[Q]).
    """
def allocation_objective(weights: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None, counts: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], min_rollouts: typing.SupportsInt | typing.SupportsIndex, max_rollouts: typing.SupportsInt | typing.SupportsIndex, estimator: str = 'rloo', curve: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None) -> float:
    """
    sum_q w_q phi(n_q) for given counts.
    """
__version__: str = '0.1.0'
