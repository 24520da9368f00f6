"""
vipfast native core: exact rollout allocation and the success-probability GP
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
__all__: list[str] = ['SUCCESS_GP_STATE_VERSION', 'SuccessGP', 'allocate', 'allocate_relaxed', 'allocation_objective', 'dense_groups', 'group_offsets', 'group_order', 'indexed_advantages', 'keyed_advantages', 'segment_advantages']
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
def dense_groups(index: numpy.ndarray) -> tuple:
    """
    (group_of, G): each id's group, numbered by first appearance (int32 unless N > 2^31 - 1).
    """
def group_offsets(bounds: numpy.ndarray, bounds_are_offsets: bool, num_rollouts: typing.SupportsInt | typing.SupportsIndex, allow_empty_groups: bool) -> numpy.typing.NDArray[numpy.int64]:
    """
    Checked CSR offsets (int64[G+1]) from group sizes or offsets.
    """
def group_order(group_of: numpy.ndarray, num_groups: typing.SupportsInt | typing.SupportsIndex) -> tuple:
    """
    (order, sizes): stable counting sort of rollouts by group.
    """
def indexed_advantages(rewards: numpy.ndarray, group_of: numpy.ndarray, num_groups: typing.SupportsInt | typing.SupportsIndex, out: numpy.ndarray, estimator: str, eps: typing.SupportsFloat | typing.SupportsIndex, require_finite: bool) -> None:
    """
    Advantages of groups given by a group id per rollout (int32 or int64) into out (float32[N]).
    """
def keyed_advantages(rewards: numpy.ndarray, keys: numpy.ndarray, out: numpy.ndarray, estimator: str, eps: typing.SupportsFloat | typing.SupportsIndex, require_finite: bool) -> None:
    """
    Advantages of groups given by an integer key per rollout (equal keys, one group) into out (float32[N]).
    """
def segment_advantages(rewards: numpy.ndarray, bounds: numpy.ndarray, bounds_are_offsets: bool, out: numpy.ndarray, estimator: str, eps: typing.SupportsFloat | typing.SupportsIndex, require_finite: bool, allow_empty_groups: bool) -> None:
    """
    Advantages of contiguous groups (sizes or CSR offsets) into out (float32[N]).
    """
SUCCESS_GP_STATE_VERSION: int = 2
__version__: str = '0.1.0'
