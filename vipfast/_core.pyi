"""
vipfast native core: exact rollout allocation and the success-probability GP
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
__all__: list[str] = ['ESTIMATOR_TABLE', 'SUCCESS_GP_STATE_VERSION', 'SuccessGP', 'allocate', 'allocate_relaxed', 'allocation_objective']
class SuccessGP:
    """
    Native success-probability GP; use vipfast.SuccessGP.
    """
    @staticmethod
    def from_state(state: dict) -> SuccessGP:
        ...
    def __init__(self, dim: typing.SupportsInt | typing.SupportsIndex, lengthscale: typing.SupportsFloat | typing.SupportsIndex | None, signal_var: typing.SupportsFloat | typing.SupportsIndex, prior_mean: typing.SupportsFloat | typing.SupportsIndex | None, forgetting: typing.SupportsFloat | typing.SupportsIndex, capacity: typing.SupportsInt | typing.SupportsIndex, mode: str, noise: str, jitter: typing.SupportsFloat | typing.SupportsIndex, clip: typing.SupportsFloat | typing.SupportsIndex, proba: str, num_inducing: typing.SupportsInt | typing.SupportsIndex, auto_exact_max: typing.SupportsInt | typing.SupportsIndex, calibration_window: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def advance(self, steps: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def observe(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], embeddings: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], successes: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], trials: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]) -> None:
        ...
    def predict(self, keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], embeddings: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> tuple:
        """
        (mean, var, proba, weight), each float64[Q].
        """
    def pseudo_observations(self) -> dict:
        ...
    def state(self) -> dict:
        ...
    @property
    def active_mode(self) -> str:
        ...
    @property
    def calibration(self) -> tuple[float, float]:
        """
        (offset, scale) of the recalibration map.
        """
    @property
    def config(self) -> dict:
        ...
    @property
    def dim(self) -> int:
        ...
    @property
    def lengthscale(self) -> typing.Any:
        ...
    @property
    def num_inducing_used(self) -> int:
        ...
    @property
    def num_stored(self) -> int:
        ...
    @property
    def prior_mean(self) -> float:
        ...
    @property
    def step(self) -> int:
        ...
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
ESTIMATOR_TABLE: tuple = (('rloo', 2, '1/(n-1)'), ('drgrpo', 3, '(n-1)/n^2'), ('grpo', 3, '(n-1)/n^2'))
SUCCESS_GP_STATE_VERSION: int = 2
__version__: str = '0.1.0'
